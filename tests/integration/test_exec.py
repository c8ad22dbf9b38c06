"""``trio-runner exec`` as a real process on the workflows in tests/workflows/exec."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

from tests.integration.runner_process import interrupt_when, send_sigint
from trio_runner.exec_output import JobSummary, TerminalOutput
from trio_runner.executor.sink import Conclusion

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "exec"
TIMEOUT = 120
STARTED = re.compile(rb"\| started pid=(\d+)\n")


def exec_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITEA_"))}
    env["NO_COLOR"] = "1"
    return env


def run_exec(
    *args: str, workdir: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_runner", "exec", "--workdir-parent", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=exec_env(),
        check=False,
    )


def workflow(name: str) -> str:
    return str(WORKFLOWS / name)


def leftovers(workdir: Path) -> list[Path]:
    return list(workdir.iterdir()) if workdir.exists() else []


def test_needs_run_in_order_and_pass_outputs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = run_exec("-W", workflow("needs.yml"), workdir=work)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "[needs/second]   | second got from-first (success)" in out
    assert "[needs/third]   | third got from-first-again exec=true" in out
    assert out.index("[needs/first] Job Success") < out.index("[needs/second] Start job")
    assert out.index("[needs/second] Job Success") < out.index("[needs/third] Start job")
    summary = out[out.index("Summary") :]
    for job in ("needs/first", "needs/second", "needs/third"):
        assert any(line.startswith(job) and "Success" in line for line in summary.splitlines())
    assert leftovers(work) == []


def test_failed_job_fails_the_run_and_skips_dependants(tmp_path: Path) -> None:
    done = run_exec("-W", workflow("failure.yml"), workdir=tmp_path / "work")
    out = done.stdout
    assert done.returncode == 1
    assert "[failure/broken]   | Error: app.py:3: something broke" in out
    assert "Failure - Run echo" in out
    assert "[failure/dependant] Skipping job: the job condition is false" in out
    # Its step is listed as skipped, and never printed anything.
    assert 'Skipped - Run echo "dependant must not run"' in out
    assert "| dependant must not run" not in out
    assert "[failure/cleanup]   | cleanup saw failure" in out
    assert "Result: Failure" in out


def test_matrix_legs_include_exclude_and_needs_matrix(tmp_path: Path) -> None:
    done = run_exec("-W", workflow("matrix.yml"), workdir=tmp_path / "work")
    out = done.stdout
    assert done.returncode == 0, done.stderr
    legs = sorted(line.split("| ", 1)[1] for line in out.splitlines() if "| leg os=" in line)
    assert legs == [
        "leg os=linux version=1 extra=plus index=0/4",
        "leg os=linux version=2 extra=plus index=1/4",
        "leg os=mac version=2 extra= index=2/4",
        "leg os=windows version= extra= index=3/4",
    ]
    assert "[matrix/build (mac, 2)] Job Success" in out
    assert "[matrix/shard (a)]   | shard a" in out
    assert "[matrix/shard (b)]   | shard b" in out


def test_matrix_filter_runs_only_matching_legs(tmp_path: Path) -> None:
    done = run_exec(
        "-W", workflow("matrix.yml"), "-j", "build", "--matrix", "os:mac", workdir=tmp_path
    )
    legs = [line for line in done.stdout.splitlines() if "| leg os=" in line]
    assert done.returncode == 0, done.stderr
    assert legs == ["[matrix/build (mac, 2)]   | leg os=mac version=2 extra= index=2/4"]
    assert "dynamic" not in done.stdout


def test_fail_fast_cancels_the_other_legs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = run_exec("-W", workflow("failfast.yml"), workdir=work)
    summary = done.stdout[done.stdout.index("Summary") :].splitlines()
    assert done.returncode == 1
    assert any(line.startswith("failfast/legs (1)") and "Failure" in line for line in summary)
    assert any(line.startswith("failfast/legs (2)") and "Cancelled" in line for line in summary)
    assert leftovers(work) == []


def test_inputs_secrets_vars_and_env(tmp_path: Path) -> None:
    done = run_exec(
        "-W",
        workflow("inputs.yml"),
        "--input",
        "who=me",
        "--input",
        "loud=true",
        "--input",
        "count=3",
        "-s",
        "token=s3cr3t-value",
        "--var",
        "COLOUR=blue",
        "--env",
        "FROM_CLI=yes",
        workdir=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "| who=me loud=true count=3 level=low" in out
    assert "| typed=true sum=true" in out
    assert "| event=workflow_dispatch secret=*** var=blue env=yes" in out
    assert "s3cr3t-value" not in out


def test_missing_required_input_is_rejected(tmp_path: Path) -> None:
    done = run_exec("-W", workflow("inputs.yml"), workdir=tmp_path / "work")
    assert done.returncode == 2
    assert "inputs.yml" in done.stderr and "required input 'who' is missing" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "work").exists()


def test_invalid_workflow_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    done = run_exec("-W", str(WORKFLOWS), "-l", workdir=tmp_path)
    assert done.returncode == 2
    assert "invalid/bad-key.yml:8:9" in done.stderr
    assert "unexpected key 'wiht'" in done.stderr
    cycle = run_exec("-W", workflow("invalid/cycle.yml"), workdir=tmp_path)
    assert cycle.returncode == 2
    assert "cycle.yml:5:5: unable to build dependency graph" in cycle.stderr


def test_list_shows_stages(tmp_path: Path) -> None:
    done = run_exec("-W", str(WORKFLOWS), "--no-recurse", "-l", workdir=tmp_path / "work")
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Stage  Job ID")
    stages = {(row[3], row[1]): int(row[0]) for row in rows}
    assert stages[("needs", "first")] == 0
    assert stages[("needs", "second")] == 1
    assert stages[("needs", "third")] == 2
    assert stages[("matrix", "shard")] == 1
    assert ("inputs", "show") not in stages  # on workflow_dispatch only
    listed = run_exec("-W", workflow("needs.yml"), "-j", "second", "-l", "--json", workdir=tmp_path)
    plan = json.loads(listed.stdout)
    assert [(job["stage"], job["job_id"]) for job in plan["jobs"]] == [(0, "first"), (1, "second")]
    assert not (tmp_path / "work").exists()


def test_dryrun_plans_without_running(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = run_exec("-W", workflow("matrix.yml"), "--dryrun", workdir=work)
    assert done.returncode == 0, done.stderr
    assert "    - build (mac, 2)" in done.stdout
    assert "matrix evaluated when the job starts" in done.stdout
    assert "Start job" not in done.stdout
    assert not work.exists()
    as_json = run_exec("-W", workflow("matrix.yml"), "-n", "--json", workdir=work)
    stages = json.loads(as_json.stdout)["stages"]
    assert [job["job_id"] for job in stages[0]] == ["build", "dynamic"]
    assert stages[0][0]["legs"][0] == "build (plus, linux, 1)"
    assert stages[1][0]["legs"] is None


def test_json_output(tmp_path: Path) -> None:
    done = run_exec("-W", workflow("needs.yml"), "--json", workdir=tmp_path)
    events: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stderr
    kinds = {event["type"] for event in events}
    assert {"job_started", "row", "step_started", "step_finished", "job_finished"} <= kinds
    summary = events[-1]
    assert summary["type"] == "summary" and summary["exit_code"] == 0
    assert [job["job_id"] for job in summary["jobs"]] == ["first", "second", "third"]
    rows = [e["content"] for e in events if e["type"] == "row" and e["job"] == "needs/second"]
    assert "second got from-first (success)" in rows
    finished = [e for e in events if e["type"] == "step_finished"]
    assert all(e["result"] == "success" and e["duration"] >= 0 for e in finished)


def test_default_discovery_env_file_and_git_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "env.yml").write_text((WORKFLOWS / "env.yml").read_text())
    (repo / ".env").write_text("FROM_FILE=dotenv\n")
    for args in (
        ("init", "-q", "-b", "trunk"),
        ("config", "user.name", "Exec Tester"),
        ("remote", "add", "origin", "git@example.com:acme/rocket.git"),
    ):
        subprocess.run(["git", "-C", str(repo), *args], check=True, timeout=TIMEOUT)
    done = run_exec("-C", str(repo), "--env", "FROM_CLI=cli", workdir=tmp_path / "work")
    assert done.returncode == 0, done.stderr
    assert (
        "| file=dotenv cli=cli repo=acme/rocket actor=Exec Tester ref=refs/heads/trunk"
        in done.stdout
    )


async def test_ctrl_c_cancels_gracefully_and_leaves_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    argv = [
        sys.executable,
        "-m",
        "trio_runner",
        "exec",
        "-W",
        workflow("sleep.yml"),
        "--workdir-parent",
        str(work),
    ]
    code, text, started = await interrupt_when(argv, STARTED, send_sigint, env=exec_env())
    pid = int(started.group(1))
    assert code == 130, text
    assert "Cancelled - Run echo" in text
    assert "| always step ran" in text
    assert "Result: Cancelled" in text
    assert not await trio.Path(f"/proc/{pid}").exists()
    assert await trio.to_thread.run_sync(leftovers, work) == []


async def render_job(*, color: bool) -> str:
    stream = io.StringIO()
    output = TerminalOutput(stream, color=color)
    sink = output.job_sink("wf/job", ["Build"])
    now = datetime.now(UTC)
    sink.step_started(0, now)
    await sink.rows(
        ["::group::Run make", "make all", "::endgroup::", "compiling", "::error::bad%0Athing"],
        now,
    )
    sink.step_finished(0, Conclusion.FAILURE, now + timedelta(seconds=1.5))
    output.summary([JobSummary("wf/job", "wf", "job", "failure", 1.5)], "failure", exit_code=1)
    return stream.getvalue()


async def test_terminal_rendering_plain_and_coloured() -> None:
    plain = await render_job(color=False)
    assert plain.splitlines()[:8] == [
        "[wf/job] Step: Build",
        "[wf/job]   | > Run make",
        "[wf/job]   |   make all",
        "[wf/job]   | compiling",
        "[wf/job]   | Error: bad",
        "[wf/job]   | thing",
        "[wf/job]   Failure - Build [1.50s]",
        "",
    ]
    assert "\x1b[" not in plain
    assert "wf/job  Failure" in plain
    coloured = await render_job(color=True)
    assert "\x1b[31mError: bad\x1b[0m" in coloured
    assert "⭐ Build" in coloured and "❌ Failure" in coloured
