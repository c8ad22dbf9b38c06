"""Jobs in containers through the real daemon and ``trio-runner exec``, against a real
engine. Every "nothing left" check asks the engine for objects carrying the runner's
labels (or, for exec, the job's deterministic names)."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import trio

from tests.fake_gitea.state import FakeGitea, Row
from tests.integration.engine import BOOKWORM, BUSYBOX, CONTAINER_MODULE
from tests.integration.runner_process import (
    interrupt_when,
    register_locally,
    start_runner,
    write_config,
)
from trio_runner.backends.docker import (
    LABEL_JOB_CONTAINER,
    LABEL_RUNNER,
    job_container_name,
    remove_leftovers,
)
from trio_runner.backends.docker_api import DockerClient
from trio_runner.gitea.messages import Result

pytestmark = CONTAINER_MODULE

#: A long-running service stand-in, built from the busybox image.
SERVICE_IMAGE = "trio-runner-test/pgstub:latest"
SERVICE_DOCKERFILE = f"""FROM {BUSYBOX}
RUN mkdir -p /www && echo accepting-connections > /www/index.html
CMD ["httpd", "-f", "-p", "5432", "-h", "/www"]
"""
LABELS = [f"ubuntu-latest:docker://{BOOKWORM}", f"busybox:docker://{BUSYBOX}"]
WAIT = 120.0


async def owned(engine: DockerClient, runner_uuid: str) -> list[str]:
    """Containers, volumes and networks carrying the runner's label."""
    labels = {LABEL_RUNNER: runner_uuid}
    return (
        [f"container {c.id}" for c in await engine.containers_list(labels)]
        + [f"volume {v.name}" for v in await engine.volumes_list(labels)]
        + [f"network {n.name}" for n in await engine.networks_list(labels)]
    )


def job(*steps: str, runs_on: str = "ubuntu-latest", extra: str = "", name: str = "ci") -> str:
    body = "".join(f"      - {step}\n" for step in steps)
    return (
        f"name: {name}\non: push\njobs:\n  build:\n    runs-on: {runs_on}\n{extra}"
        f"    steps:\n{body}"
    )


def run(script: str) -> str:
    return "run: " + json.dumps(script)


def started(rows: list[Row]) -> bool:
    return any(content == "started" for _, content in rows)


async def run_task(
    gitea: FakeGitea, tmp_path: Path, workflow: str, **config: dict[str, object]
) -> int:
    """Run one task with a ``--once`` runner; returns its id once the runner exited."""
    path = write_config(tmp_path, **config)
    task_id = gitea.queue_task(workflow)
    async with start_runner(tmp_path, path, "--once") as runner:
        await gitea.wait_task_final(task_id, within=WAIT)
        assert await runner.wait(WAIT) == 0, runner.log
    return task_id


async def test_job_runs_in_the_label_image(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    workflow = job(
        run('cat /etc/debian_version; echo "name=$JOB_CONTAINER_NAME"; echo "ws=$PWD"'),
        run('echo "id=${{ job.container.id }} net=${{ job.container.network }}"'),
        run("echo written > out.txt && cat out.txt && echo from-env=$TEST_VALUE"),
        extra="    env:\n      TEST_VALUE: job-env\n",
    )
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    text = "\n".join(record.contents)
    assert "::group::Starting job container" in record.contents
    assert f"image: {BOOKWORM}" in record.contents
    expected = job_container_name(str(task_id), "ci", "build")
    assert f"name={expected}" in record.contents
    assert "ws=/workspace/alice/app" in record.contents
    assert any(row.startswith("id=") and len(row.split()[0]) > 10 for row in record.contents)
    assert f"net={expected}-build-network" in text
    assert "written" in record.contents and "from-env=job-env" in record.contents
    assert await owned(engine, runner.uuid) == []


async def ensure_service_image(engine: DockerClient) -> None:
    if await engine.image_inspect(SERVICE_IMAGE) is not None:
        return
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = SERVICE_DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with trio.fail_after(WAIT):
        await engine.image_build(buffer.getvalue(), SERVICE_IMAGE)


async def test_service_reached_by_alias_and_job_context(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    await ensure_service_image(engine)
    runner = register_locally(gitea, tmp_path, LABELS)
    services = (
        "    services:\n      db:\n"
        f"        image: {SERVICE_IMAGE}\n        ports: ['5432']\n"
        "        env:\n          POSTGRES_PASSWORD: ${{ secrets.DB_PASSWORD }}\n"
    )
    workflow = job(
        run("for i in $(seq 50); do wget -qO- http://db:5432/ && exit 0; sleep 0.2; done; exit 1"),
        run("echo \"port=${{ job.services.db.ports['5432'] }}\""),
        runs_on="busybox",
        extra=services,
    )
    path = write_config(tmp_path)
    task_id = gitea.queue_task(workflow, secrets={"DB_PASSWORD": "s3cret-value"})
    async with start_runner(tmp_path, path, "--once") as process:
        await gitea.wait_task_final(task_id, within=WAIT)
        assert await process.wait(WAIT) == 0
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert "accepting-connections" in record.contents
    port = next(row for row in record.contents if row.startswith("port="))
    assert port.removeprefix("port=").isdigit()
    assert await owned(engine, runner.uuid) == []


async def test_cache_url_reachable_from_job_container(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    workflow = job(
        run('echo "url=$ACTIONS_CACHE_URL"; wget -S -O /dev/null "$ACTIONS_CACHE_URL" 2>&1 || :'),
        runs_on="busybox",
    )
    task_id = await run_task(
        gitea, tmp_path, workflow, cache={"enabled": True, "dir": str(tmp_path / "cache")}
    )
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert any(row.startswith("url=http://") for row in record.contents), record.contents
    # Any HTTP answer proves the job container reached the cache server.
    assert any("HTTP/1.1" in row for row in record.contents), record.contents
    assert await owned(engine, runner.uuid) == []


async def test_job_container_image_wins_and_invalid_volume_is_dropped(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    container = (
        f"    container:\n      image: {BUSYBOX}\n"
        f"      volumes: ['{tmp_path}:/host-dir']\n      env:\n        FROM_CONTAINER: yes-it-is\n"
    )
    workflow = job(
        run("test -e /etc/debian_version && echo debian || echo busybox; echo $FROM_CONTAINER"),
        run("test -d /host-dir && echo mounted || echo not-mounted"),
        extra=container,
    )
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert "busybox" in record.contents and "yes-it-is" in record.contents
    assert "shell: sh -e {0}" in record.contents  # `container:` jobs default to sh
    assert f"##[warning][{tmp_path}] is not a valid volume, will be ignored" in record.contents
    assert "not-mounted" in record.contents
    assert await owned(engine, runner.uuid) == []


async def test_cancel_mid_step_leaves_nothing(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    path = write_config(tmp_path)
    task_id = gitea.queue_task(job(run("echo started; sleep 300"), runs_on="busybox"))
    async with start_runner(tmp_path, path, "--once") as process:
        await gitea.wait_rows(task_id, started, within=WAIT)
        assert len(await owned(engine, runner.uuid)) >= 4  # container, 2 volumes, network
        gitea.cancel_task(task_id)
        assert await gitea.wait_task_final(task_id, within=WAIT) is Result.CANCELLED
        assert await process.wait(WAIT) == 0
    assert await owned(engine, runner.uuid) == []


async def test_runner_timeout_leaves_nothing(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    workflow = job(run("echo going; sleep 300"), runs_on="busybox")
    task_id = await run_task(gitea, tmp_path, workflow, runner={"timeout": "3s"})
    record = gitea.task(task_id)
    assert record.result is Result.FAILURE
    assert any("exceeded the maximum execution time" in row for row in record.contents)
    assert await owned(engine, runner.uuid) == []


async def test_killed_runner_leftovers_removed_by_idle_pass(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    path = write_config(
        tmp_path, runner={"workdir_cleanup_age": "0s", "idle_cleanup_interval": "1s"}
    )
    task_id = gitea.queue_task(job(run("echo started; sleep 300"), runs_on="busybox"))
    try:
        async with start_runner(tmp_path, path) as process:
            await gitea.wait_rows(task_id, started, within=WAIT)
            process.signal(signal.SIGKILL)
            await process.wait()
        assert len(await owned(engine, runner.uuid)) >= 4
        async with start_runner(tmp_path, path) as process:
            with trio.fail_after(WAIT):
                # The idle pass has no event to wait on; poll the engine.
                while await owned(engine, runner.uuid):  # noqa: ASYNC110
                    await trio.sleep(0.5)
            process.signal(signal.SIGTERM)
            assert await process.wait() == 0
        assert "idle cleanup removed container" in process.log
    finally:
        with trio.move_on_after(WAIT):
            await remove_leftovers(engine, runner.uuid)


def sleeping_docker_action(seconds: int) -> str:
    """A ``docker://`` step that prints ``started`` and sleeps."""
    return (
        f"uses: docker://{BUSYBOX}\n        with:\n"
        "          entrypoint: /bin/sh\n"
        f'          args: -c "echo started; sleep {seconds}"'
    )


async def test_killed_docker_action_step_removed_by_idle_pass(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    """The step container shares the job container's network namespace, so it has to
    go first: Podman refuses to remove a container another one depends on."""
    runner = register_locally(gitea, tmp_path, LABELS)
    path = write_config(
        tmp_path, runner={"workdir_cleanup_age": "0s", "idle_cleanup_interval": "1s"}
    )
    task_id = gitea.queue_task(job(sleeping_docker_action(300), runs_on="busybox"))
    try:
        async with start_runner(tmp_path, path) as process:
            await gitea.wait_rows(task_id, started, within=WAIT)
            process.signal(signal.SIGKILL)
            await process.wait()
        assert len(await engine.containers_list({LABEL_RUNNER: runner.uuid})) == 2
        async with start_runner(tmp_path, path) as process:
            with trio.fail_after(WAIT):
                # The idle pass has no event to wait on; poll the engine.
                while await owned(engine, runner.uuid):  # noqa: ASYNC110
                    await trio.sleep(0.5)
            process.signal(signal.SIGTERM)
            assert await process.wait() == 0
        assert process.log.count("idle cleanup removed container") == 2, process.log
        assert "removing container" not in process.log, process.log
    finally:
        with trio.move_on_after(WAIT):
            await remove_leftovers(engine, runner.uuid)


# --- service health (spec 2.6) ------------------------------------------------------------


def probed_service(health_options: str) -> str:
    """A ``db`` service (busybox sleeping) with the given health check options."""
    return (
        f"    services:\n      db:\n        image: {BUSYBOX}\n        command: sleep 600\n"
        f"        options: {json.dumps(health_options)}\n"
    )


async def test_job_waits_for_a_service_to_become_healthy(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    # Healthy from the third probe on: the first two leave the service starting.
    check = (
        "n=$(cat /tmp/probes 2>/dev/null || echo 0); echo $((n + 1)) > /tmp/probes; "
        "echo probe $n; test $n -ge 2"
    )
    options = f"--health-cmd '{check}' --health-interval 1s --health-retries 5"
    workflow = job(run("echo job-ran"), runs_on="busybox", extra=probed_service(options))
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert "db service is starting, waiting 2 seconds before checking again." in record.contents
    healthy = record.contents.index("db service is healthy.")
    assert healthy < record.contents.index("job-ran")
    assert await owned(engine, runner.uuid) == []


async def test_unhealthy_service_fails_the_job(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    options = "--health-cmd 'echo probe-says-no; exit 1' --health-interval 1s --health-retries 1"
    workflow = job(run("echo job-ran"), runs_on="busybox", extra=probed_service(options))
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.FAILURE, record.contents
    assert "##[error]the service 'db' is unhealthy: probe-says-no" in record.contents
    assert "job-ran" not in record.contents
    assert await owned(engine, runner.uuid) == []


async def test_service_not_healthy_in_time_fails_the_job(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    options = (
        "--health-cmd 'echo still-warming-up; exit 1' --health-interval 1s --health-retries 1000"
    )
    workflow = job(run("echo job-ran"), runs_on="busybox", extra=probed_service(options))
    task_id = await run_task(gitea, tmp_path, workflow, container={"service_ready_timeout": "3s"})
    record = gitea.task(task_id)
    assert record.result is Result.FAILURE, record.contents
    expected = "##[error]the service 'db' did not become healthy within 3s: still-warming-up"
    assert expected in record.contents, record.contents
    assert "job-ran" not in record.contents
    assert await owned(engine, runner.uuid) == []


async def test_docker_action_step(gitea: FakeGitea, engine: DockerClient, tmp_path: Path) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    action = (
        f"uses: docker://{BUSYBOX}\n        with:\n"
        "          entrypoint: /bin/sh\n"
        '          args: -c "echo docker-action in $PWD; echo out=1 >> $GITHUB_OUTPUT"\n'
        "        id: act"
    )
    workflow = job(
        run("echo shared > shared.txt"),
        action,
        run('echo "output=${{ steps.act.outputs.out }}"'),
        runs_on="busybox",
    )
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert any(row.startswith("docker-action in /workspace/") for row in record.contents)
    assert "output=1" in record.contents
    assert await owned(engine, runner.uuid) == []


async def test_node_action_in_container(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    runner = register_locally(gitea, tmp_path, LABELS)
    write_action = (
        "mkdir -p act && printf 'name: n\\nruns:\\n  using: node20\\n  main: index.js\\n' "
        "> act/action.yml && echo 'console.log(\"node says \" + process.cwd())' > act/index.js"
    )
    workflow = job(run(write_action), "uses: ./act")
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, record.contents
    assert any(row.startswith("node says /workspace/") for row in record.contents)
    assert await owned(engine, runner.uuid) == []


# --- trio-runner exec -i ------------------------------------------------------------------


#: The step output both exec tests wait for before interrupting the run.
STARTED = re.compile(rb"\| started\n")


def exec_command(directory: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "trio_runner", "exec", "-C", str(directory), *args]


def exec_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITEA_"))}
    env["NO_COLOR"] = "1"
    return env


async def exec_done(
    directory: Path, *args: str, env: dict[str, str] | None = None, within: float = WAIT
) -> subprocess.CompletedProcess[bytes]:
    """``trio-runner exec -C directory args`` run to its end (bounded), output captured."""
    with trio.fail_after(within):
        return await trio.run_process(
            exec_command(directory, *args),
            capture_stdout=True,
            capture_stderr=True,
            env=exec_env() if env is None else env,
            check=False,
        )


def checkout(tmp_path: Path, workflow: str) -> Path:
    directory = tmp_path / "repo"
    (directory / ".gitea" / "workflows").mkdir(parents=True)
    (directory / ".gitea" / "workflows" / "ci.yml").write_text(workflow)
    return directory


async def exec_objects_left(engine: DockerClient, workflow_name: str) -> list[str]:
    name = job_container_name("push", workflow_name, "build")
    left = [c.id for c in await engine.containers_list() if f"/{name}" in (c.names or [])]
    left += [v.name for v in await engine.volumes_list() if v.name.startswith(name)]
    left += [n.name for n in await engine.networks_list() if n.name.startswith(name)]
    return left


async def test_exec_runs_jobs_in_the_image(engine: DockerClient, tmp_path: Path) -> None:
    name = f"exec-{secrets.token_hex(4)}"
    directory = checkout(tmp_path, job(run("echo in=$PWD"), name=name))
    done = await exec_done(directory, "-i", BUSYBOX)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "| in=/workspace/" in out
    assert f"image: {BUSYBOX}" in out
    assert await exec_objects_left(engine, name) == []


async def test_exec_removes_a_killed_runs_docker_action_step(
    engine: DockerClient, tmp_path: Path
) -> None:
    """A second run of the same job removes the step container a killed run left, which
    holds on to the job container, before it starts its own."""
    name = f"exec-{secrets.token_hex(4)}"
    directory = checkout(tmp_path, job(sleeping_docker_action(300), name=name))
    job_name = job_container_name("push", name, "build")
    step_containers = {LABEL_JOB_CONTAINER: job_name}

    async def kill(process: trio.Process, _match: re.Match[bytes]) -> None:
        process.kill()

    argv = exec_command(directory, "-i", BUSYBOX)
    await interrupt_when(argv, STARTED, kill, env=exec_env(), within=WAIT)
    try:
        assert len(await engine.containers_list(step_containers)) == 2
        workflow = directory / ".gitea" / "workflows" / "ci.yml"
        workflow.write_text(job(sleeping_docker_action(0), name=name))
        done = await exec_done(directory, "-i", BUSYBOX)
        out = done.stdout.decode()
        assert done.returncode == 0, out + done.stderr.decode()
        assert "| started" in out
        assert await engine.containers_list(step_containers) == []
        assert await exec_objects_left(engine, name) == []
    finally:
        with trio.move_on_after(WAIT):
            left = await engine.containers_list(step_containers)
            # The step container before the job container it depends on.
            for container in sorted(left, key=lambda c: f"/{job_name}" in (c.names or ())):
                await engine.container_remove(container.id)


async def test_exec_sigint_removes_everything(engine: DockerClient, tmp_path: Path) -> None:
    name = f"exec-{secrets.token_hex(4)}"
    directory = checkout(tmp_path, job(run("echo started; sleep 300"), name=name))

    async def interrupt(process: trio.Process, _match: re.Match[bytes]) -> None:
        assert await exec_objects_left(engine, name)
        process.send_signal(signal.SIGINT)

    argv = exec_command(directory, "-i", BUSYBOX)
    code, text, _match = await interrupt_when(argv, STARTED, interrupt, env=exec_env(), within=WAIT)
    assert code == 130, text
    assert await exec_objects_left(engine, name) == []
