"""``trio-runner exec`` running reusable workflows (``jobs.<id>.uses``) on the host.

Each test copies a small repository from tests/workflows/reusable/<case> and runs the
real command on it; remote calls are cloned from bare repositories on disk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.action_repos import git, make_repo
from tests.integration.test_exec import exec_env, leftovers

CASES = Path(__file__).resolve().parent.parent / "workflows" / "reusable"
TIMEOUT = 120
SECRET = "s3cr3t-deploy-value"


def repository(tmp_path: Path, case: str) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(CASES / case, repo)
    return repo


def run_exec(repo: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = exec_env()
    env["DEPLOY_TOKEN"] = SECRET
    argv = ["exec", "-C", str(repo), "-i", "-self-hosted", "--workdir-parent", str(work)]
    return subprocess.run(
        [sys.executable, "-m", "trio_runner", *argv, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


def summary_rows(out: str) -> dict[str, str]:
    """Summary table: job label -> result word."""
    lines = out[out.index("Summary") :].splitlines()[2:-1]
    return {line.rsplit(None, 2)[0]: line.rsplit(None, 2)[1] for line in lines}


def test_local_call_passes_inputs_secrets_and_outputs(tmp_path: Path) -> None:
    repo, work = repository(tmp_path, "local"), tmp_path / "work"
    caller = str(repo / ".github" / "workflows" / "caller.yml")
    done = run_exec(repo, work, "-W", caller, "-s", "DEPLOY_TOKEN")
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert (
        "[caller/Build it / compile]   | compile greeting=hello count=3 loud=true suffix=!" in out
    )
    # Only the mapped secret reaches the called workflow, masked.
    assert "[caller/Build it / compile]   | token=*** has_token=true other=." in out
    assert "[caller/Build it / compile]   | event=push workflow=caller job=compile" in out
    assert "[caller/Build it / check]   | check saw hello!" in out
    assert "[caller/after]   | after got hello!-success call=success flavours=success" in out
    assert out.index("[caller/Build it / check] Job Success") < out.index("[caller/after] Start")
    assert SECRET not in out
    assert summary_rows(out) == {
        "caller/prepare": "Success",
        "caller/inherit / show": "Success",
        "caller/flavours (sweet) / compile": "Success",
        "caller/flavours (sweet) / check": "Success",
        "caller/flavours (sour) / compile": "Success",
        "caller/flavours (sour) / check": "Success",
        "caller/Build it / compile": "Success",
        "caller/Build it / check": "Success",
        "caller/after": "Success",
    }
    assert leftovers(work) == []


def test_secrets_inherit_passes_every_secret(tmp_path: Path) -> None:
    repo = repository(tmp_path, "local")
    caller = str(repo / ".github" / "workflows" / "caller.yml")
    done = run_exec(repo, tmp_path / "work", "-W", caller, "-j", "inherit", "-s", "DEPLOY_TOKEN")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "[caller/inherit / show]   | inherited=*** has=true" in done.stdout
    assert "compile" not in done.stdout
    assert SECRET not in done.stdout


def test_matrix_caller_runs_one_call_per_leg_and_filters(tmp_path: Path) -> None:
    repo = repository(tmp_path, "local")
    caller = str(repo / ".github" / "workflows" / "caller.yml")
    done = run_exec(repo, tmp_path / "work", "-W", caller, "-j", "flavours")
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert "[caller/flavours (sweet) / check]   | check saw sweet!" in out
    assert "[caller/flavours (sour) / check]   | check saw sour!" in out
    assert "count=1 loud=false suffix=!" in out  # defaults of inputs not passed
    only = run_exec(
        repo, tmp_path / "work", "-W", caller, "-j", "flavours", "--matrix", "flavour:sour"
    )
    assert only.returncode == 0, only.stderr + only.stdout
    assert set(summary_rows(only.stdout)) == {
        "caller/flavours (sour) / compile",
        "caller/flavours (sour) / check",
    }


def test_nested_calls_pass_outputs_up(tmp_path: Path) -> None:
    repo = repository(tmp_path, "nested")
    done = run_exec(repo, tmp_path / "work", "--json")
    events: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stderr + done.stdout
    rows = {(e["job"], e["content"]) for e in events if e["type"] == "row"}
    assert ("top/outer / inner / say", "leaf says deep-middle") in rows
    assert ("top/report", "report got deep-middle-leaf") in rows
    summary = events[-1]
    assert [(job["job"], job["job_id"], job["workflow"]) for job in summary["jobs"]] == [
        ("top/outer / inner / say", "outer/inner/say", "top"),
        ("top/report", "report", "top"),
    ]


def test_failing_called_job_fails_the_caller_and_skips_dependants(tmp_path: Path) -> None:
    repo = repository(tmp_path, "failing")
    done = run_exec(repo, tmp_path / "work")
    out = done.stdout
    assert done.returncode == 1
    assert "[failing/call / later] Skipping job: the job condition is false" in out
    assert "[failing/dependant] Skipping job: the job condition is false" in out
    assert "must not run\n" not in out.replace('echo "', "")
    assert "[failing/report]   | report saw failure" in out
    assert summary_rows(out) == {
        "failing/call / broken": "Failure",
        "failing/call / later": "Skipped",
        "failing/dependant": "Skipped",
        "failing/report": "Success",
    }
    assert "Result: Failure" in out


def test_missing_required_input_is_rejected_before_running(tmp_path: Path) -> None:
    repo, work = repository(tmp_path, "invalid"), tmp_path / "work"
    caller = str(repo / ".github" / "workflows" / "missing-input.yml")
    done = run_exec(repo, work, "-W", caller)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: .github/workflows/missing-input.yml:4:5: jobs.call.with: input 'needed' is "
        "required by the reusable workflow .github/workflows/called.yml"
    )
    assert done.stdout == ""
    assert not work.exists()


def test_cycle_is_rejected(tmp_path: Path) -> None:
    repo = repository(tmp_path, "invalid")
    caller = str(repo / ".github" / "workflows" / "cycle-a.yml")
    done = run_exec(repo, tmp_path / "work", "-W", caller, "-l")
    assert done.returncode == 2
    assert "cycle-b.yml:4:5: jobs.to-a.uses: reusable workflows call each other in a cycle: " in (
        done.stderr
    )
    assert (
        ".github/workflows/cycle-a.yml -> .github/workflows/cycle-b.yml -> "
        ".github/workflows/cycle-a.yml" in done.stderr
    )


def test_list_and_dryrun_show_called_jobs(tmp_path: Path) -> None:
    repo, work = repository(tmp_path, "local"), tmp_path / "work"
    caller = str(repo / ".github" / "workflows" / "caller.yml")
    listed = run_exec(repo, work, "-W", caller, "-l", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)["jobs"]
    assert [(j["stage"], j["job_id"], j["name"]) for j in jobs if j["stage"] == 1] == [
        (1, "call", "Build it"),
        (1, "call/compile", "Build it / compile"),
        (1, "call/check", "Build it / check"),
    ]
    assert jobs[3]["uses"] == "./.github/workflows/build.yml"
    table = run_exec(repo, work, "-W", caller, "-l").stdout.splitlines()
    assert any(line.split()[:2] == ["1", "call/check"] for line in table)
    dry = run_exec(repo, work, "-W", caller, "--dryrun")
    assert dry.returncode == 0, dry.stderr
    assert (
        "  caller/flavours\n"
        "    - flavours (sweet)\n"
        "    - flavours (sour)\n"
        "    uses ./.github/workflows/build.yml\n"
        "    Stage 0:\n"
        "      caller/flavours / compile\n"
        "    Stage 1:\n"
        "      caller/flavours / check (needs compile)\n"
    ) in dry.stdout
    assert "Start job" not in dry.stdout
    stages = json.loads(run_exec(repo, work, "-W", caller, "-n", "--json").stdout)["stages"]
    inherit = stages[0][1]
    assert inherit["uses"] == "./.gitea/workflows/secrets.yml"
    assert inherit["calls"] == [
        [
            {
                "job": "caller/inherit / show",
                "job_id": "show",
                "workflow": "secrets.yml",
                "needs": [],
                "legs": ["show"],
            }
        ]
    ]
    assert not work.exists()


def test_remote_call_is_cloned_from_the_default_actions_host(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    make_repo(tmp_path / "shared-work", CASES / "remote-repo")
    (repos / "acme").mkdir(parents=True)
    git(
        "clone",
        "-q",
        "--bare",
        str(tmp_path / "shared-work"),
        str(repos / "acme" / "shared"),
        cwd=tmp_path,
    )
    repo = repository(tmp_path, "remote")
    done = run_exec(repo, tmp_path / "work", "--default-actions-url", f"file://{repos}")
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert "[remote/shared / relay / greet]   | inner greets remote caller" in out
    assert "[remote/show]   | show got hi remote caller" in out
    missing = run_exec(
        repo, tmp_path / "fresh", "--default-actions-url", f"file://{tmp_path / 'nowhere'}"
    )
    assert missing.returncode == 2
    assert "jobs.shared.uses: cannot fetch 'acme/shared/.github/workflows/shared.yml@v1'" in (
        missing.stderr
    )
