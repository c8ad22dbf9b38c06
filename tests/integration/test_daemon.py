"""The real daemon against the fake Gitea: registration, jobs, cancels, faults, shutdown."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import trio

from tests.fake_gitea.state import FakeGitea
from tests.integration.runner_process import (
    register_locally,
    runner_command,
    start_runner,
    write_config,
)
from trio_runner.gitea.messages import Result
from trio_runner.registration import load_registration

LABELS = ["ubuntu-latest:host"]


def workflow(*steps: str, job: str = "build", extra: str = "") -> str:
    body = "\n".join(f"      - run: {json.dumps(step)}" for step in steps)
    return (
        f"name: ci\non: push\n{extra}jobs:\n  {job}:\n    runs-on: ubuntu-latest\n"
        f"    steps:\n{body}\n"
    )


def has_row(text: str) -> Callable[[list[tuple[datetime, str]]], bool]:
    return lambda rows: any(content == text for _, content in rows)


def assert_clean(gitea: FakeGitea, *task_ids: int) -> None:
    assert gitea.violations == []
    for task_id in task_ids:
        assert gitea.task(task_id).violations == []


async def test_register_non_interactive_then_start(gitea: FakeGitea, tmp_path: Path) -> None:
    token = gitea.add_registration_token()
    config = write_config(tmp_path)
    register = await trio.run_process(
        runner_command(
            "-c", str(config), "register", "--no-interactive",
            "--instance", gitea.url, "--token", token, "--name", "alpha",
            "--labels", "ubuntu-latest:host,extra",
        ),
        cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert register.returncode == 0, register.stderr.decode()
    registration = load_registration(tmp_path / ".runner")
    assert registration.name == "alpha"
    assert registration.labels == ["ubuntu-latest:host", "extra:host"]
    assert token not in register.stderr.decode() + register.stdout.decode()
    task_id = gitea.queue_task(workflow("echo hello-from-job"))
    async with start_runner(tmp_path, config, "--once") as runner:
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        assert await runner.wait() == 0
    record = gitea.task(task_id)
    assert "hello-from-job" in record.contents
    assert gitea.runners[registration.uuid].labels == ["ubuntu-latest", "extra"]
    assert_clean(gitea, task_id)


async def test_register_interactive(gitea: FakeGitea, tmp_path: Path) -> None:
    token = gitea.add_registration_token()
    answers = f"{gitea.url}\n{token}\nbeta\nubuntu-latest:host\n".encode()
    register = await trio.run_process(
        runner_command("register"),
        cwd=tmp_path,
        stdin=answers,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert register.returncode == 0, register.stderr.decode()
    registration = load_registration(tmp_path / ".runner")
    assert (registration.name, registration.labels) == ("beta", ["ubuntu-latest:host"])
    assert registration.address == gitea.url


async def test_passing_and_failing_jobs(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    ok = gitea.queue_task(workflow("echo one", "echo two"))
    bad = gitea.queue_task(workflow("echo before", "exit 3", "echo never"))
    async with start_runner(tmp_path, config) as runner:
        assert await gitea.wait_task_final(ok) is Result.SUCCESS
        assert await gitea.wait_task_final(bad) is Result.FAILURE
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    good, failed = gitea.task(ok), gitea.task(bad)
    assert [s.status for s in good.steps] == ["success", "success"]
    assert [s.status for s in failed.steps] == ["success", "failure", "skipped"]
    assert "##[error]Process completed with exit code 3." in failed.contents
    assert "never" not in failed.contents
    # Each step's rows are where its log_index/log_length say.
    step = good.steps[1]
    assert "two" in good.contents[step.log_index : step.log_index + step.log_length]
    assert good.sealed and failed.sealed
    assert_clean(gitea, ok, bad)


async def test_cancel_from_server_runs_always_steps(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    wf = (
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo started; sleep 300\n"
        "      - run: echo skipped-after-cancel\n"
        "      - if: always()\n        run: echo cleanup-ran\n"
    )
    task_id = gitea.queue_task(wf)
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(task_id, has_row("started"))
        gitea.cancel_task(task_id)
        assert await gitea.wait_task_final(task_id) is Result.CANCELLED
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    record = gitea.task(task_id)
    assert "cleanup-ran" in record.contents
    assert "skipped-after-cancel" not in record.contents
    assert [s.status for s in record.steps] == ["cancelled", "skipped", "success"]
    assert_clean(gitea, task_id)


async def test_runner_timeout_fails_the_job(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path, runner={"timeout": "2s"})
    task_id = gitea.queue_task(workflow("echo going; sleep 300", "echo next"))
    async with start_runner(tmp_path, config, "--once") as runner:
        assert await gitea.wait_task_final(task_id) is Result.FAILURE
        assert await runner.wait() == 0
    record = gitea.task(task_id)
    assert any("exceeded the maximum execution time" in row for row in record.contents)
    assert record.steps[0].status == "failure"
    assert_clean(gitea, task_id)


async def test_capacity_three_runs_six_jobs(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path, runner={"capacity": 3})
    started, running = tmp_path / "started", tmp_path / "running"
    started.mkdir()
    running.mkdir()
    # Each job counts the jobs running beside it, then waits (bounded) until three jobs
    # have started, so that the first three overlap.
    script = "; ".join(
        [
            f'touch "{started}/$GITHUB_RUN_ID" "{running}/$GITHUB_RUN_ID"',
            f'echo "concurrent=$(ls {running} | wc -l)"',
            f'for i in $(seq 100); do [ "$(ls {started} | wc -l)" -ge 3 ] && break; '
            "sleep 0.1; done",
            f'echo "overlap=$(ls {running} | wc -l)"',
            f'rm "{running}/$GITHUB_RUN_ID"',
        ]
    )
    ids = [gitea.queue_task(workflow(script), context={"run_id": str(i)}) for i in range(6)]
    async with start_runner(tmp_path, config) as runner:
        for task_id in ids:
            assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0

    def counts(prefix: str) -> list[int]:
        rows = [row for task_id in ids for row in gitea.task(task_id).contents]
        return [int(row.removeprefix(prefix)) for row in rows if row.startswith(prefix)]

    assert len(counts("concurrent=")) == 6
    assert max(counts("concurrent=") + counts("overlap=")) <= 3  # never more than capacity
    assert max(counts("overlap=")) == 3  # and three did run at once
    assert_clean(gitea, *ids)


async def test_update_log_outage_loses_and_duplicates_nothing(
    gitea: FakeGitea, tmp_path: Path
) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    task_id = gitea.queue_task(workflow("for i in $(seq 1 3000); do echo row-$i; done"))
    gitea.fail_next("UpdateLog", count=4)
    gitea.lose_next("UpdateLog", count=2)
    async with start_runner(tmp_path, config, "--once") as runner:
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        assert await runner.wait() == 0
    rows = [r for r in gitea.task(task_id).contents if r.startswith("row-")]
    assert rows == [f"row-{i}" for i in range(1, 3001)]
    assert_clean(gitea, task_id)


async def test_sigterm_lets_the_running_job_finish(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path, runner={"shutdown_timeout": "30s"})
    flag = tmp_path / "go"
    script = (
        f'echo waiting; for i in $(seq 300); do [ -e "{flag}" ] && break; sleep 0.1; done; '
        "echo finished"
    )
    task_id = gitea.queue_task(workflow(script))
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(task_id, has_row("waiting"))
        runner.signal(signal.SIGTERM)
        # The daemon keeps the job running; let it end now.
        flag.touch()
        assert await runner.wait() == 0
    assert gitea.task(task_id).result is Result.SUCCESS
    assert "finished" in gitea.task(task_id).contents
    assert_clean(gitea, task_id)


async def test_shutdown_timeout_cancels_and_reports(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path, runner={"shutdown_timeout": "0s"})
    task_id = gitea.queue_task(workflow("echo long; sleep 300"))
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(task_id, has_row("long"))
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    assert gitea.task(task_id).result is Result.CANCELLED
    assert_clean(gitea, task_id)


async def test_secrets_never_reach_a_row(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    secret = "s3cr3t-Value/with&chars"
    multi = "first-line-secret\nsecond-line-secret"
    encoded = base64.b64encode(secret.encode()).decode()
    quoted = urllib.parse.quote_plus(secret)
    steps = [
        'echo "plain ${{ secrets.API_KEY }}"',
        'echo "env $API_KEY"',
        'printf "%s" "$API_KEY" | base64',
        "python3 -c \"import urllib.parse as p,os;print(p.quote_plus(os.environ['API_KEY']))\"",
        'echo "$MULTI"',
        'v="dynamic-value-$((100 + 23))"; echo "::add-mask::$v"; echo "later $v"',
        'echo "token $ACTIONS_RUNTIME_TOKEN $GITHUB_TOKEN"',
    ]
    wf = workflow(
        *steps, extra="env:\n  API_KEY: ${{ secrets.API_KEY }}\n  MULTI: ${{ secrets.MULTI }}\n"
    )
    task_id = gitea.queue_task(wf, secrets={"API_KEY": secret, "MULTI": multi})
    async with start_runner(tmp_path, config, "--once") as runner:
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        assert await runner.wait() == 0
    record = gitea.task(task_id)
    text = "\n".join(record.contents)
    forbidden = [secret, encoded, quoted, "first-line-secret", "second-line-secret"]
    forbidden += ["dynamic-value-123", record.runtime_token, record.token]
    for value in forbidden:
        assert value not in text
    assert "plain ***" in record.contents
    assert secret not in runner.log
    assert_clean(gitea, task_id)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_cancel_leaves_no_background_child(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    marker = f"trio-runner-bg-{os.getpid()}"
    script = (
        f"(exec -a {marker} sleep 600) & "
        f"setsid bash -c 'exec -a {marker}-escaped sleep 600' & "
        "echo spawned; sleep 600"
    )
    task_id = gitea.queue_task(workflow(script))
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(task_id, has_row("spawned"))
        assert _processes_with(marker)
        gitea.cancel_task(task_id)
        assert await gitea.wait_task_final(task_id) is Result.CANCELLED
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    assert _processes_with(marker) == []
    assert_clean(gitea, task_id)


async def test_deleted_runner_stops_the_daemon(gitea: FakeGitea, tmp_path: Path) -> None:
    runner_record = register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_fetch_count(1)
        gitea.delete_runner(runner_record.uuid)
        assert await runner.wait() == 1
    assert "register" in runner.log


async def test_proxy_401_does_not_stop_the_daemon(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    gitea.fail_next("FetchTask", count=2, status=401, connect_body=False)
    task_id = gitea.queue_task(workflow("echo after-proxy-trouble"))
    async with start_runner(tmp_path, config, "--once") as runner:
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        assert await runner.wait() == 0
    assert "proxy" in runner.log


async def test_missing_registration_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = await trio.run_process(
        runner_command("-c", str(config), "start"),
        cwd=tmp_path,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "register" in result.stderr.decode()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_job_environment_and_metrics(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    env_file = tmp_path / "runner.env"
    env_file.write_text("FROM_FILE=file-value\n")
    port = free_port()
    config = write_config(
        tmp_path,
        runner={"envs": {"FROM_CONFIG": "config-value"}, "env_file": str(env_file)},
        metrics={"enabled": True, "addr": f"127.0.0.1:{port}"},
    )
    names = [
        "ACTIONS_RUNTIME_URL", "ACTIONS_RESULTS_URL", "GITEA_ACTIONS",
        "GITEA_ACTIONS_RUNNER_VERSION", "GITEA_ACTIONS_CAPABILITIES", "GITEA_RUN_ID",
        "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "RUNNER_OS", "FROM_CONFIG", "FROM_FILE",
        "ACT",
    ]  # fmt: skip
    script = "; ".join(f'echo "{name}=${name}"' for name in names)
    script += '; [ -n "$ACTIONS_RUNTIME_TOKEN" ] && echo "runtime-token-set"'
    task_id = gitea.queue_task(workflow(script), context={"run_id": "77"})
    async with start_runner(tmp_path, config) as runner:
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            metrics = (await client.get("/metrics")).text
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    assert 'gitea_runner_job_total{status="success"} 1.0' in metrics
    rows = gitea.task(task_id).contents
    instance = gitea.url.rstrip("/")
    expected = {
        "ACTIONS_RUNTIME_URL": f"{instance}/api/actions_pipeline/",
        "ACTIONS_RESULTS_URL": instance,
        "GITEA_ACTIONS": "true",
        "GITEA_ACTIONS_CAPABILITIES": "job-summary",
        "GITEA_RUN_ID": "77",
        "GITHUB_SERVER_URL": instance,
        "RUNNER_OS": "Linux",
        "FROM_CONFIG": "config-value",
        "FROM_FILE": "file-value",
        "ACT": "true",
    }
    for name, value in expected.items():
        assert f"{name}={value}" in rows
    assert "runtime-token-set" in rows
    assert_clean(gitea, task_id)


async def test_invalid_workflow_fails_the_task_with_its_error(
    gitea: FakeGitea, tmp_path: Path
) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path)
    bad = (
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo hi\n        uses: actions/checkout@v4\n"
    )
    good = gitea.queue_task(workflow("echo still-alive"))
    task_id = gitea.queue_task(bad)
    async with start_runner(tmp_path, config) as runner:
        assert await gitea.wait_task_final(task_id) is Result.FAILURE
        assert await gitea.wait_task_final(good) is Result.SUCCESS
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    text = "\n".join(gitea.task(task_id).contents)
    assert "run" in text and "uses" in text
    assert_clean(gitea, task_id)


async def test_ephemeral_runner_exits_after_its_task(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS, ephemeral=True)
    config = write_config(tmp_path)
    first = gitea.queue_task(workflow("echo only-one"))
    second = gitea.queue_task(workflow("echo never-here"))
    async with start_runner(tmp_path, config) as runner:
        assert await gitea.wait_task_final(first) is Result.SUCCESS
        assert await runner.wait() == 0
    assert not gitea.task(second).final
    assert_clean(gitea, first)


async def test_second_signal_cancels_at_once(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    # Without the second signal the daemon would wait ten minutes for the job.
    config = write_config(tmp_path, runner={"shutdown_timeout": "10m"})
    task_id = gitea.queue_task(workflow("trap '' INT TERM; echo stubborn; sleep 600"))
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(task_id, has_row("stubborn"))
        runner.signal(signal.SIGTERM)
        await runner.wait_for_log("received SIGTERM")
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    assert gitea.task(task_id).result is Result.CANCELLED
    assert_clean(gitea, task_id)


async def test_failing_health_check_stops_fetching(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    flag = tmp_path / "healthy"
    script = tmp_path / "check.sh"
    script.write_text(f'#!/bin/sh\ntest -e "{flag}"\n')
    script.chmod(0o755)
    config = write_config(
        tmp_path, health_check={"enabled": True, "script": str(script), "interval": "100ms"}
    )
    task_id = gitea.queue_task(workflow("echo healthy-again"))
    async with start_runner(tmp_path, config, "--once") as runner:
        await runner.wait_for_log("not taking tasks")
        assert gitea.calls["FetchTask"] == 0
        flag.touch()
        assert await gitea.wait_task_final(task_id) is Result.SUCCESS
        assert await runner.wait() == 0
    assert "health check passes again" in runner.log


async def test_low_disk_space_stops_fetching(gitea: FakeGitea, tmp_path: Path) -> None:
    register_locally(gitea, tmp_path, LABELS)
    config = write_config(tmp_path, health_check={"enabled": True, "min_free_disk_space_mb": 2**40})
    async with start_runner(tmp_path, config) as runner:
        await runner.wait_for_log("min_free_disk_space_mb")
        assert gitea.calls["FetchTask"] == 0
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
