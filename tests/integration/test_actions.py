"""``uses:`` steps through ``trio-runner exec``: remote, local, composite, node, posts, hooks.

Action repositories are bare git repos the tests create (tests/integration/action_repos);
they are reached through ``file://`` URLs or a dumb-HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.fake_gitea.app import serve_fake_gitea
from tests.integration.action_repos import git, make_action_repos, serve_dumb_http
from tests.integration.runner_process import (
    interrupt_when,
    register_locally,
    send_sigint,
    start_runner,
    write_config,
)
from tests.integration.step_rows import Steps, exec_steps, json_events, same_paths, task_steps
from tests.integration.test_exec import STARTED, exec_env, run_exec
from trio_runner.gitea.messages import Result

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "actions"


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "srv"
    make_action_repos(root)
    return root


def run_actions(name: str, repos: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_exec(
        "-W", str(WORKFLOWS / name), "--default-actions-url", f"file://{repos}", *args,
        workdir=work,
    )  # fmt: skip


def rows(out: str) -> list[str]:
    """The content of every printed row, without the ``[workflow/job]`` prefix and bar."""
    result = []
    for line in out.splitlines():
        _, _, rest = line.partition("] ")
        result.append(rest.strip().removeprefix("| "))
    return result


def test_remote_node_action_pre_main_post_state_and_inputs(repos: Path, tmp_path: Path) -> None:
    done = run_actions("node.yml", repos, tmp_path / "work")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = rows(out)
    sha = git("rev-parse", "v1", cwd=repos / "acme" / "hello")
    assert f"Download action repository 'acme/hello@v1' (SHA:{sha})" in lines
    # pre runs during set-up, before the first step; post after the last one.
    order = [
        "pre who=world",
        "Complete job name: node",
        "first step",
        "main who=world my=push state=1",
        "out=hello world",
        "post state=1,2 status=world",
        "Job succeeded",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    assert "action=acme/hello@v1" in lines
    assert "ghes-patched=true" in lines  # the toolkit patch of 9.4
    assert "Warning: Input 'old' has been deprecated with message: use who instead" in lines
    assert (
        "Warning: Unexpected input(s) 'surprise', valid inputs are ['who', 'my input', 'old']"
        in lines
    )
    # The clone stays in the cache, patched; the job directory is gone.
    caches = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]
    assert len(caches) == 1 and (caches[0] / "main.js").read_text().count(".LOCALHOST") == 0


def test_composite_nested_outputs_env_and_status_functions(repos: Path, tmp_path: Path) -> None:
    done = run_actions("composite.yml", repos, tmp_path / "work", "-s", "TOKEN=s3cret")
    lines = rows(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "path-ok=yes" in lines
    assert "secret=[] outer=outer input-env=[]" in lines
    assert "result=inner(box!) composite-env=yes-box! env=yes" in lines
    assert "main who=nested my=push state=1" in lines  # nested node action, pre included
    assert "pre who=nested" in lines and "post state=1,2 status=nested" in lines
    assert "composite saw failure" in lines
    assert "composite must not run this" not in done.stdout
    assert "statuses=failure/success" in lines
    assert "Failure - Run acme/tools/statuses@v1" in done.stdout


def test_post_runs_after_a_failed_step(repos: Path, tmp_path: Path) -> None:
    done = run_actions("post-failure.yml", repos, tmp_path / "work")
    lines = rows(done.stdout)
    assert done.returncode == 1
    assert lines.index("Error: Process completed with exit code 5.") < lines.index(
        "post state=1,2 status=failing"
    )
    assert "never printed" not in lines
    assert "Job failed" in lines


async def test_post_runs_after_ctrl_c(repos: Path, tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "trio_runner", "exec", "-W", str(WORKFLOWS / "post-cancel.yml"),
        "--default-actions-url", f"file://{repos}", "--workdir-parent", str(tmp_path / "work"),
    ]  # fmt: skip
    code, text, _started = await interrupt_when(argv, STARTED, send_sigint, env=exec_env())
    assert code == 130, text
    assert "post state=1,2 status=cancelled" in rows(text)
    assert "Job cancelled" in rows(text)


def test_checkout_skip_copies_the_directory_and_local_actions_run(
    repos: Path, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(WORKFLOWS / "checkout", checkout)
    git("init", "-q", "-b", "main", cwd=checkout)
    git("add", "-A", cwd=checkout)
    (checkout / "ignored.txt").write_text("not copied\n")
    done = run_actions("checkout.yml", repos, tmp_path / "work", "-C", str(checkout))
    lines = rows(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "local action says hi" in lines
    assert 'skip=true ignored=absent tracked={"name": "demo"}' in lines
    assert any(line.startswith("hash=") and line.endswith(" none=[]") for line in lines)
    assert "Download action repository" not in done.stdout  # nothing fetched
    without = run_actions(
        "checkout.yml", repos, tmp_path / "work2", "-C", str(checkout), "--no-skip-checkout"
    )
    assert without.returncode == 1
    assert "actions/checkout" in without.stdout and "Unable to fetch action" in without.stdout


def test_url_actions_over_http_with_the_token_only_for_the_instance(
    repos: Path, tmp_path: Path
) -> None:
    token = "job-token-123"
    with serve_dumb_http(repos, private="acme/private", token=token) as server:
        done = run_exec(
            "-W", str(WORKFLOWS / "url.yml"), "--env", f"ACTION_HOST={server.url}",
            "--gitea-instance", server.url, "-s", f"GITHUB_TOKEN={token}",
            workdir=tmp_path / "work",
        )  # fmt: skip
        lines = rows(done.stdout)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "private action ran" in lines
        assert "inner=inner(over-http) composite-env=" in lines
        assert any(
            path.startswith("/acme/private/") and auth for path, auth in server.authorizations
        )
        assert token not in done.stdout
        server.authorizations.clear()
        # Another host (here: another instance address) never gets the token.
        refused = run_exec(
            "-W", str(WORKFLOWS / "url.yml"), "--env", f"ACTION_HOST={server.url}",
            "--gitea-instance", "http://127.0.0.1:1", "-s", f"GITHUB_TOKEN={token}",
            workdir=tmp_path / "work2",
        )  # fmt: skip
        assert refused.returncode == 1
        assert all(not auth for _, auth in server.authorizations)
        assert "Unable to fetch action 'acme/private@v1'" in refused.stdout


def test_job_hooks_run_around_the_steps(tmp_path: Path) -> None:
    started, completed = tmp_path / "started.sh", tmp_path / "completed.sh"
    started.write_text('echo "hook started"\necho "HOOKED=yes" >> "$GITHUB_ENV"\n')
    completed.write_text('echo "hook completed HOOKED=$HOOKED"\n')
    config = tmp_path / "config.yaml"
    config.write_text(
        f"runner:\n  hooks:\n    job_started: {started}\n    job_completed: {completed}\n"
    )
    done = run_exec(
        "-c", str(config), "-W", str(WORKFLOWS / "hooks.yml"), workdir=tmp_path / "work"
    )
    lines = rows(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    order = [
        "A job started hook has been configured by the runner administrator",
        "hook started",
        "step sees HOOKED=yes",
        "A job completed hook has been configured by the runner administrator",
        "hook completed HOOKED=yes",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 7\n")
    config.write_text(f"runner:\n  hooks:\n    job_started: {failing}\n")
    failed = run_exec(
        "-c", str(config), "-W", str(WORKFLOWS / "hooks.yml"), workdir=tmp_path / "work"
    )
    assert failed.returncode == 1
    # success() is false after a failed hook, so the step is skipped.
    assert 'Skipped - Run echo "step sees HOOKED=$HOOKED"' in failed.stdout


# --- the same workflows through the daemon ---------------------------------------------


def actions_steps(name: str, repos: Path, work: Path) -> Steps:
    """Step results and each step's rows of an ``exec --json`` run of one workflow."""
    return exec_steps(json_events(run_actions(name, repos, work, "--json").stdout))


@pytest.mark.parametrize("name", ["node.yml", "composite.yml"])
async def test_daemon_gives_the_same_steps_as_exec(name: str, repos: Path, tmp_path: Path) -> None:
    expected_results, expected_rows = await trio.to_thread.run_sync(
        actions_steps, name, repos, tmp_path / "exec-work"
    )
    async with serve_fake_gitea() as gitea:
        register_locally(gitea, tmp_path, ["ubuntu-latest:host"])
        config = write_config(tmp_path)
        task_id = gitea.queue_task(
            (WORKFLOWS / name).read_text(),
            context={"gitea_default_actions_url": f"file://{repos}"},
            secrets={"TOKEN": "s3cret"},
        )
        async with start_runner(tmp_path, config, "--once") as runner:
            assert await gitea.wait_task_final(task_id) is Result.SUCCESS
            assert await runner.wait() == 0
        record = gitea.task(task_id)
        assert gitea.violations == [] and record.violations == []
    results, step_rows = task_steps(record)
    assert results == expected_results
    for got, rows_of_step in zip(step_rows, expected_rows, strict=True):
        assert same_paths(got) == same_paths(rows_of_step)
    setup = record.contents[: record.steps[0].log_index]
    assert any(row.startswith("Download action repository 'acme/") for row in setup)
    assert any(row.startswith("pre who=") for row in setup)
    complete = record.contents[record.steps[-1].log_index + record.steps[-1].log_length :]
    assert any(row.startswith("post state=1,2") for row in complete)
