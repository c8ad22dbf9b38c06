"""Per-step plumbing through ``trio-runner exec``: every phase starts with empty, existing
file-command files, and commands are looked up on the PATH the step really gets."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_exec import run_exec, workflow


def test_file_commands_are_fresh_for_each_step_and_path_changes_are_seen(
    tmp_path: Path,
) -> None:
    done = run_exec("-W", workflow("filecommands.yml"), workdir=tmp_path / "work")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # Files a step wrote to or removed are back, empty, for the next one.
    assert "[filecommands/files]   | not fresh" not in out
    assert "[filecommands/files]   | fresh files, FIRST=one" in out
    # A shell added through GITHUB_PATH is found by the next step.
    assert "[filecommands/files]   | mytool ran" in out
    assert "[filecommands/files]   | still found mytool" in out
