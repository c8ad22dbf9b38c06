"""hashFiles: @actions/glob matching, walk order, workspace confinement and the combined hash."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import pytest
import trio

from trio_runner.workflow.expressions import (
    ExpressionError,
    calls_hash_files,
    evaluate,
    hash_files,
)


def reference(*files: Path) -> str:
    outer = hashlib.sha256()
    for path in files:
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    files = {
        "a.txt": "alpha",
        "b.lock": "lock",
        "Z.txt": "zed",
        "sub/c.txt": "charlie",
        "sub/deep/d.txt": "delta",
        ".hidden/e.txt": "echo",
        "node_modules/x.txt": "x-ray",
    }
    for name, content in files.items():
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (ws / "linked.txt").symlink_to(ws / "a.txt")
    (ws / "linkdir").symlink_to(ws / "sub", target_is_directory=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    return ws


def run(ws: Path, *arguments: str) -> str:
    return hash_files(ws, list(arguments))


def test_globstar_walks_depth_first_in_byte_order(workspace: Path) -> None:
    ws = workspace
    expected = reference(
        ws / ".hidden/e.txt",
        ws / "Z.txt",
        ws / "a.txt",
        ws / "linked.txt",
        ws / "node_modules/x.txt",
        ws / "sub/c.txt",
        ws / "sub/deep/d.txt",
    )
    assert run(ws, "**/*.txt") == expected


def test_negation_and_last_match_wins(workspace: Path) -> None:
    ws = workspace
    assert run(ws, "**/*.txt\n!node_modules/**\n!.hidden\n!**/linked.txt") == reference(
        ws / "Z.txt", ws / "a.txt", ws / "sub/c.txt", ws / "sub/deep/d.txt"
    )
    assert run(ws, "**/*.txt\n!sub/**\nsub/deep/d.txt") == reference(
        ws / ".hidden/e.txt",
        ws / "Z.txt",
        ws / "a.txt",
        ws / "linked.txt",
        ws / "node_modules/x.txt",
        ws / "sub/deep/d.txt",
    )
    assert run(ws, "!!a.txt") == reference(ws / "a.txt")


def test_arguments_are_searched_in_order(workspace: Path) -> None:
    ws = workspace
    assert run(ws, "sub/**", "a.txt") == reference(
        ws / "sub/c.txt", ws / "sub/deep/d.txt", ws / "a.txt"
    )


def test_directory_pattern_matches_everything_below(workspace: Path) -> None:
    ws = workspace
    below = reference(ws / "sub/c.txt", ws / "sub/deep/d.txt")
    assert run(ws, "sub") == below
    assert run(ws, "sub/") == below
    assert run(ws, "./sub") == below
    assert run(ws, str(ws / "sub")) == below


def test_single_star_question_mark_and_classes(workspace: Path) -> None:
    ws = workspace
    assert run(ws, "*.txt") == reference(ws / "Z.txt", ws / "a.txt", ws / "linked.txt")
    assert run(ws, "sub/deep/?.txt") == reference(ws / "sub/deep/d.txt")
    assert run(ws, "[ab].*") == reference(ws / "a.txt", ws / "b.lock")
    assert run(ws, "[!ab].txt") == reference(ws / "Z.txt")
    assert run(ws, "*/e.txt") == reference(ws / ".hidden/e.txt")
    assert run(ws, "**/deep/*") == reference(ws / "sub/deep/d.txt")


def test_matching_is_case_sensitive(workspace: Path) -> None:
    assert run(workspace, "A.TXT") == ""
    assert run(workspace, "z.txt") == ""


def test_comments_blank_lines_and_whitespace(workspace: Path) -> None:
    assert run(workspace, "# a comment\n\n   a.txt   \r\n") == reference(workspace / "a.txt")


def test_no_match_is_empty(workspace: Path) -> None:
    assert run(workspace, "**/*.nothing") == ""
    assert run(workspace, "missing-dir/**") == ""
    assert run(workspace, "#only a comment") == ""


def test_directories_alone_hash_to_empty(workspace: Path) -> None:
    (workspace / "empty").mkdir()
    assert run(workspace, "empty") == ""


def test_never_leaves_the_workspace(workspace: Path) -> None:
    outside = workspace.parent / "outside"
    assert run(workspace, str(outside / "secret.txt")) == ""
    assert run(workspace, str(outside) + "/*") == ""
    assert run(workspace, "/**/secret.txt") == ""
    assert run(workspace, "~/secret.txt") == ""
    with pytest.raises(ValueError, match=r"Relative pathing '\.' and '\.\.' is not allowed"):
        run(workspace, "../outside/secret.txt")
    with pytest.raises(ValueError, match="Relative pathing"):
        run(workspace, "sub/./c.txt")


def test_absolute_pattern_over_the_workspace_is_confined(workspace: Path) -> None:
    ws = workspace
    assert run(ws, str(ws.parent) + "/**/c.txt") == reference(ws / "sub/c.txt")


def test_follow_symbolic_links_option(workspace: Path) -> None:
    ws = workspace
    assert run(ws, "--follow-symbolic-links", "linkdir/**") == reference(
        ws / "linkdir/c.txt", ws / "linkdir/deep/d.txt"
    )
    assert run(ws, "--FOLLOW-SYMBOLIC-LINKS", "linkdir/**") != ""
    # Without the option a directory symlink is a leaf that is not hashed.
    assert run(ws, "linkdir/**") == ""
    with pytest.raises(ValueError, match="Invalid glob option --nope"):
        run(ws, "--nope", "**")


def test_symlink_cycles_are_skipped_when_following(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f.txt").write_text("f")
    (ws / "loop").symlink_to(ws, target_is_directory=True)
    assert run(ws, "--follow-symbolic-links", "**") == reference(ws / "f.txt")


def test_broken_symlinks(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f.txt").write_text("f")
    (ws / "broken").symlink_to(ws / "missing")
    assert run(ws, "--follow-symbolic-links", "**") == reference(ws / "f.txt")
    with pytest.raises(OSError):
        run(ws, "**")


def test_home_expansion(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "cfg").mkdir(parents=True)
    (ws / "cfg/x.txt").write_text("x")
    assert hash_files(ws, ["~/cfg/*"], home=str(ws)) == reference(ws / "cfg/x.txt")


def test_glob_characters_in_workspace_path_are_literal(tmp_path: Path) -> None:
    ws = tmp_path / "w[s]*"
    ws.mkdir()
    (ws / "a.txt").write_text("a")
    assert run(ws, "*.txt") == reference(ws / "a.txt")


def test_through_an_expression(workspace: Path) -> None:
    hook = functools.partial(hash_files, workspace)
    expected = reference(workspace / "a.txt", workspace / "b.lock")
    assert evaluate("hashFiles('a.txt', 'b.lock')", {}, hash_files=hook) == expected
    assert evaluate("format('k-{0}', hashFiles('none'))", {}, hash_files=hook) == "k-"
    with pytest.raises(ExpressionError, match=r"hashFiles\('../x'\) failed: Invalid pattern"):
        evaluate("hashFiles('../x')", {}, hash_files=hook)
    with pytest.raises(ExpressionError, match="Invalid glob option --bad"):
        evaluate("hashFiles('--bad', '**')", {}, hash_files=hook)


async def test_callers_hash_in_a_worker_thread(workspace: Path) -> None:
    template = "${{ hashFiles('**/*.lock') }}"
    assert calls_hash_files(template)
    hook = functools.partial(hash_files, workspace)
    with trio.fail_after(30):
        result = await trio.to_thread.run_sync(
            functools.partial(evaluate, "hashFiles('**/*.lock')", {}, hash_files=hook)
        )
    assert result == reference(workspace / "b.lock")


def test_large_file_is_hashed_in_chunks(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    big = ws / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 7))
    assert run(ws, "big.bin") == reference(big)
