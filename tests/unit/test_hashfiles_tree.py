"""hashFiles over tar archives (ArchiveTree) gives what the local walk gives for the same
files: the same directory is hashed on disk and through archives of it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import pytest
import trio

from trio_runner.backends import docker
from trio_runner.backends.docker import DockerEnvironment, DockerSettings, JobSpec
from trio_runner.backends.docker_api import MODE_SYMLINK, EngineError, NotFoundError, PathStat
from trio_runner.workflow.expressions.hashfiles import ArchiveTree, Kind, PathInfo, hash_files


class DiskArchives:
    """An archive source over a directory of this machine: ``root`` is the container's
    ``/`` (``""`` for this machine's own ``/``). Paths resolve like an engine resolves
    them: symlinks in parent directories are followed, the last one is not."""

    def __init__(self, root: str = "") -> None:
        self.root = root
        self.archived: list[str] = []

    def host(self, path: str) -> str:
        return self.root + path

    def stat(self, path: str) -> PathInfo | None:
        try:
            mode = os.lstat(self.host(path)).st_mode
        except FileNotFoundError:
            return None
        if os.path.islink(self.host(path)):
            return PathInfo(Kind.SYMLINK, os.readlink(self.host(path)))
        if os.path.isdir(self.host(path)):
            return PathInfo(Kind.DIRECTORY)
        return PathInfo(Kind.FILE if mode & 0o100000 else Kind.OTHER)

    @contextlib.contextmanager
    def archive(self, path: str) -> Iterator[IO[bytes]]:
        if not os.path.lexists(self.host(path)):
            raise FileNotFoundError(path)
        self.archived.append(path)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(self.host(path), arcname=os.path.basename(path) or ".")
        buffer.seek(0)
        yield buffer


def build(ws: Path, outside: Path) -> None:
    files = {
        "a.txt": "alpha",
        "Z.txt": "zed",
        "package-lock.json": "{}",
        "sub/package-lock.json": '{"sub": 1}',
        "sub/deep/d.txt": "delta",
        ".hidden/e.txt": "echo",
        "node_modules/x/package-lock.json": "x",
        "empty/.keep": "",
    }
    for name, content in files.items():
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    (outside / "inner").mkdir()
    (outside / "inner" / "o.txt").write_text("o")
    (ws / "linked.txt").symlink_to("a.txt")
    (ws / "abs-linked.txt").symlink_to(ws / "sub" / "deep" / "d.txt")
    (ws / "linkdir").symlink_to("sub", target_is_directory=True)
    (ws / "chain").symlink_to("linkdir/deep")
    (ws / "out.txt").symlink_to(outside / "secret.txt")
    (ws / "outdir").symlink_to(outside, target_is_directory=True)
    (ws / "sub" / "up").symlink_to("..", target_is_directory=True)
    os.link(ws / "a.txt", ws / "hard.txt")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    build(ws, tmp_path / "outside")
    return ws


def both(ws: Path, *arguments: str) -> tuple[str, str]:
    local = hash_files(ws, list(arguments), home="/nonexistent")
    tree = ArchiveTree(str(ws), DiskArchives())
    archived = hash_files(ws, list(arguments), home="/nonexistent", tree=tree)
    return local, archived


PATTERNS = [
    ["**/package-lock.json"],
    ["**"],
    ["**/*.txt"],
    ["*"],
    ["**/*.txt\n!node_modules/**\n!.hidden"],
    ["**/*.txt", "!sub/**", "sub/deep/d.txt"],
    ["sub/"],
    [".hidden/*"],
    ["[aZ].txt", "?ard.txt"],
    ["linkdir/**"],
    ["chain/*"],
    ["out*", "outdir/**"],
    ["sub/up/sub/deep/*"],
    ["no-such/**"],
    ["empty/**"],
    [str(Path("/"))],
]


@pytest.mark.parametrize("follow", [False, True], ids=["links", "follow"])
@pytest.mark.parametrize("patterns", PATTERNS, ids=lambda p: "|".join(p))
def test_archive_walk_equals_local_walk(workspace: Path, patterns: list[str], follow: bool) -> None:
    arguments = ["--follow-symbolic-links", *patterns] if follow else patterns
    local, archived = both(workspace, *arguments)
    assert archived == local


def test_results_are_the_expected_hashes(workspace: Path) -> None:
    def reference(*names: str) -> str:
        outer = hashlib.sha256()
        for name in names:
            outer.update(hashlib.sha256((workspace / name).read_bytes()).digest())
        return outer.hexdigest()

    local, archived = both(workspace, "**/package-lock.json")
    expected = reference(
        "node_modules/x/package-lock.json", "package-lock.json", "sub/package-lock.json"
    )
    assert local == archived == expected
    assert both(workspace, "*.md") == ("", "")
    assert both(workspace, "out.txt") == (reference("out.txt"),) * 2


def test_cycles_are_skipped_when_following(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f.txt").write_text("f")
    (ws / "loop").symlink_to(ws, target_is_directory=True)
    local, archived = both(ws, "--follow-symbolic-links", "**/f.txt")
    assert archived == local != ""
    (ws / "self").symlink_to("self")
    with pytest.raises(OSError) as on_disk:
        both(ws, "--follow-symbolic-links", "**")
    tree = ArchiveTree(str(ws), DiskArchives())
    with pytest.raises(OSError) as archived_error:
        hash_files(ws, ["--follow-symbolic-links", "**"], tree=tree)
    assert archived_error.value.errno == on_disk.value.errno


def test_broken_links_behave_alike(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f.txt").write_text("f")
    (ws / "broken").symlink_to(ws / "missing")
    (ws / "gone").symlink_to("/no/such/place")
    local, archived = both(ws, "--follow-symbolic-links", "**")
    assert archived == local != ""
    for tree in (None, ArchiveTree(str(ws), DiskArchives())):
        with pytest.raises(FileNotFoundError):
            hash_files(ws, ["**"], tree=tree)


def test_workspace_is_read_once_and_outside_only_on_demand(workspace: Path) -> None:
    source = DiskArchives()
    tree = ArchiveTree(str(workspace), source)
    hash_files(workspace, ["**/*.json"], tree=tree)
    assert source.archived == [str(workspace)]
    hash_files(workspace, ["out.txt"], tree=tree)
    assert source.archived == [str(workspace), str(workspace.parent / "outside/secret.txt")]


def test_absolute_targets_are_paths_of_the_archived_system(tmp_path: Path) -> None:
    """A link to ``/etc/app.conf`` means the container's file, not this machine's."""
    root = tmp_path / "container"
    ws = root / "workspace" / "repo"
    ws.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("container config")
    (ws / "app.conf").symlink_to("/etc/app.conf")
    (ws / "etc").symlink_to("/etc", target_is_directory=True)
    tree = ArchiveTree("/workspace/repo", DiskArchives(str(root)))
    digest = hashlib.sha256(b"container config").digest()
    expected = hashlib.sha256(digest).hexdigest()
    assert hash_files("/workspace/repo", ["app.conf"], tree=tree) == expected
    both_files = hashlib.sha256(digest + digest).hexdigest()
    assert hash_files("/workspace/repo", ["--follow-symbolic-links", "**"], tree=tree) == (
        both_files
    )


def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ArchiveTree(str(tmp_path / "absent"), DiskArchives())


# --- the job container's side: DockerEnvironment.hash_files over a stand-in engine --------


class FakeEngine:
    """Answers the archive calls from this machine's files, in small chunks."""

    def __init__(self, *, hang: bool = False, fail: bool = False) -> None:
        self.disk = DiskArchives()
        self.hang = hang
        self.fail = fail

    async def archive_stat(self, container: str, path: str) -> PathStat | None:
        info = self.disk.stat(path)
        if info is None:
            return None
        if info.kind is Kind.SYMLINK:
            return PathStat(mode=MODE_SYMLINK, link_target=str(await trio.Path(path).resolve()))
        return PathStat(mode=(1 << 31) if info.kind is Kind.DIRECTORY else 0o644)

    @contextlib.asynccontextmanager
    async def archive_stream(
        self, container: str, path: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        if self.fail:
            raise EngineError("container engine: the container is gone")
        if not await trio.Path(path).is_symlink() and not await trio.Path(path).exists():
            raise NotFoundError("container engine: no such file or directory", 404)
        with self.disk.archive(path) as stream:
            data = stream.read()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 1000):
                if self.hang:
                    await trio.sleep_forever()
                yield data[start : start + 1000]

        yield chunks()


def container_env(engine: FakeEngine, workspace: Path) -> DockerEnvironment:
    job = JobSpec(
        runner_uuid="u", task_id=1, name="job", job_id="build", alias="build",
        image="image", workspace=str(workspace),
    )  # fmt: skip
    env = DockerEnvironment(engine, job, DockerSettings(), None)  # type: ignore[arg-type]
    env.container_id = "container"
    return env


async def in_thread(env: DockerEnvironment, *arguments: str) -> str:
    """As the executor calls it: from the worker thread evaluating the expression."""
    return await trio.to_thread.run_sync(
        lambda: trio.from_thread.run(env.hash_files, list(arguments))
    )


async def test_container_hash_equals_local_hash(workspace: Path) -> None:
    env = container_env(FakeEngine(), workspace)
    for arguments in (["**/package-lock.json"], ["--follow-symbolic-links", "**"], ["*.md"]):
        with trio.fail_after(30):
            assert await in_thread(env, *arguments) == hash_files(workspace, arguments)


async def test_engine_failure_is_an_os_error(workspace: Path) -> None:
    env = container_env(FakeEngine(fail=True), workspace)
    with trio.fail_after(30), pytest.raises(OSError, match="the container is gone"):
        await in_thread(env, "**")


async def test_timeout_fails_the_call(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "HASH_FILES_LIMIT", 0.2)
    env = container_env(FakeEngine(hang=True), workspace)
    with trio.fail_after(30), pytest.raises(TimeoutError, match="more than 0 s"):
        await in_thread(env, "**")
