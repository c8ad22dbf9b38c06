"""The Docker job environment against a real engine: setup, exec, services, cleanup."""

from __future__ import annotations

import secrets

import pytest
import trio

from tests.integration.engine import BOOKWORM, BUSYBOX, CONTAINER_MODULE
from trio_runner.backends import docker_api
from trio_runner.backends.container_options import parse_options
from trio_runner.backends.docker import (
    LABEL_RUNNER,
    LABEL_TASK,
    DockerEnvironment,
    DockerSettings,
    JobSpec,
    ServiceSpec,
    job_container_name,
    remove_leftovers,
    sanitize,
)
from trio_runner.backends.docker_api import ContainerSpec, DockerClient
from trio_runner.errors import ConfigError

pytestmark = CONTAINER_MODULE


class RecordingLog:
    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    async def info(self, message: str) -> None:
        self.infos.append(message)

    async def warning(self, message: str) -> None:
        self.warnings.append(message)


class Output:
    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = trio.Event()

    async def __call__(self, chunk: bytes) -> None:
        self.data.extend(chunk)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, text: bytes) -> None:
        while text not in self.data:
            await self.changed.wait()


def job_spec(image: str = BUSYBOX, **overrides: object) -> JobSpec:
    task_id = secrets.randbelow(10**9)
    fields: dict[str, object] = {
        "runner_uuid": f"test-{secrets.token_hex(8)}",
        "task_id": task_id,
        "name": job_container_name(str(task_id), "ci", "build"),
        "job_id": "build",
        "alias": "build",
        "image": image,
        "workspace": "/workspace/owner/repo",
        "env": {"LANG": "C.UTF-8", "RUNNER_TEMP": "/tmp"},
        "lifetime": 600.0,
    }
    fields.update(overrides)
    return JobSpec(**fields)  # type: ignore[arg-type]


async def owned_objects(engine: DockerClient, job: JobSpec) -> list[str]:
    labels = {LABEL_RUNNER: job.runner_uuid, LABEL_TASK: str(job.task_id)}
    return (
        [c.id for c in await engine.containers_list(labels)]
        + [v.name for v in await engine.volumes_list(labels)]
        + [n.name for n in await engine.networks_list(labels)]
    )


async def test_exec_output_exit_code_env_and_cwd(engine: DockerClient) -> None:
    job = job_spec()
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()) as env:
            out = Output()
            code = await env.exec(
                ["sh", "-c", 'echo "$STEP_VAR $LANG"; pwd; echo oops >&2; exit 3'],
                env={"STEP_VAR": "from-step"},
                cwd=env.workspace,
                output=out,
            )
            assert code == 3
            assert out.data.decode().splitlines() == ["from-step C.UTF-8", env.workspace, "oops"]
            assert await owned_objects(engine, job)
    assert await owned_objects(engine, job) == []


async def test_files_and_which(engine: DockerClient) -> None:
    job = job_spec()
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()) as env:
            path = f"{env.runner_dir}/workflow/event.json"
            await env.write_file(path, b'{"a": 1}', 0o600)
            assert await env.read_file(path) == b'{"a": 1}'
            out = Output()
            assert await env.exec(["stat", "-c", "%a", path], env={}, cwd="/", output=out) == 0
            assert out.data.strip() == b"600"
            with pytest.raises(FileNotFoundError):
                await env.read_file("/no/such/file")
            assert await env.which("sh", "/usr/bin:/bin") == "/bin/sh"
            assert await env.which("no-such-tool", "/usr/bin:/bin") is None


async def test_service_reached_by_alias(engine: DockerClient) -> None:
    server = "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"
    job = job_spec(
        services=[ServiceSpec(id="web", image=BUSYBOX, cmd=["sh", "-c", server], ports=["8080"])]
    )
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()) as env:
            assert env.services["web"].ports["8080"].isdigit()
            out = Output()
            fetch = "for i in $(seq 50); do wget -qO- http://web:8080/ && exit 0; sleep 0.2; done"
            code = await env.exec(["sh", "-c", fetch], env={}, cwd="/", output=out)
            assert (code, out.data) == (0, b"pong\n")
    assert await owned_objects(engine, job) == []


async def test_cancellation_mid_command_signals_and_cleans_up(engine: DockerClient) -> None:
    job = job_spec()
    out = Output()
    script = 'trap "echo interrupted; exit 130" INT; echo started; sleep 300 & wait'
    with trio.fail_after(120):
        with trio.CancelScope() as scope:
            async with (
                DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()) as env,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(
                    lambda: env.exec(["sh", "-c", script], env={}, cwd="/", output=out)
                )
                await out.wait_for(b"started\n")
                scope.cancel()
        assert scope.cancelled_caught
        assert b"interrupted" in out.data
        assert await owned_objects(engine, job) == []


async def test_exception_inside_cleans_up(engine: DockerClient) -> None:
    job = job_spec(services=[ServiceSpec(id="idle", image=BUSYBOX, cmd=["sleep", "300"])])
    with trio.fail_after(120), pytest.raises(RuntimeError, match="step exploded"):
        async with DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()):
            assert len(await owned_objects(engine, job)) == 5
            raise RuntimeError("step exploded")
    assert await owned_objects(engine, job) == []


async def test_failed_setup_cleans_up(engine: DockerClient) -> None:
    job = job_spec(image="trio-runner-test/no-such-image:latest", services=[])
    settings = DockerSettings()
    with trio.fail_after(120), pytest.raises(docker_api.EngineError):
        async with DockerEnvironment.start(engine, job, settings, RecordingLog()):
            pytest.fail("setup of a job with a missing image succeeded")
    assert await owned_objects(engine, job) == []


async def test_invalid_volume_is_dropped_with_warning(engine: DockerClient) -> None:
    job = job_spec(volumes=["/etc:/host-etc"], options="-v /usr:/host-usr")
    log = RecordingLog()
    settings = DockerSettings(valid_volumes=["/usr"])
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, settings, log) as env:
            out = Output()
            await env.exec(
                ["sh", "-c", "test -e /host-etc || echo no-etc; test -d /host-usr/bin && echo usr"],
                env={},
                cwd="/",
                output=out,
            )
    assert "[/etc] is not a valid volume, will be ignored" in log.warnings
    assert out.data.decode().split() == ["no-etc", "usr"]


async def test_node_runs_in_debian_image(engine: DockerClient) -> None:
    job = job_spec(image=BOOKWORM)
    with trio.fail_after(180):
        async with DockerEnvironment.start(engine, job, DockerSettings(), RecordingLog()) as env:
            out = Output()
            code = await env.exec(
                ["node", "-e", "console.log(process.cwd())"], env={}, cwd=env.workspace, output=out
            )
            assert (code, out.data.decode().strip()) == (0, env.workspace)


async def test_idle_cleanup_removes_leftovers_of_finished_tasks(engine: DockerClient) -> None:
    runner = f"test-{secrets.token_hex(8)}"
    objects = {}
    for task in (1, 2):
        labels = {LABEL_RUNNER: runner, LABEL_TASK: str(task)}
        name = f"trio-runner-left-{secrets.token_hex(6)}"
        await engine.network_create(name, labels=labels)
        await engine.volume_create(name, labels=labels)
        spec = ContainerSpec(image=BUSYBOX, entrypoint=["/bin/sleep", "600"], labels=labels)
        await engine.container_create(name, spec)
        objects[task] = name
    try:
        with trio.fail_after(120):
            removed = await remove_leftovers(engine, runner, active_tasks={2})
        gone = objects[1]
        assert sorted(removed) == sorted([f"container {gone}", f"volume {gone}", f"network {gone}"])
        kept = {LABEL_RUNNER: runner, LABEL_TASK: "2"}
        assert len(await engine.containers_list(kept)) == 1
        assert await remove_leftovers(engine, runner, active_tasks={2}) == []
        assert await remove_leftovers(engine, runner, min_age=3600) == []
    finally:
        with trio.fail_after(120):
            await remove_leftovers(engine, runner)
    assert await engine.containers_list({LABEL_RUNNER: runner}) == []


def test_sanitize_matches_spec() -> None:
    name = sanitize("GITEA-ACTIONS-TASK-7", "WORKFLOW-ci", "JOB-a b")
    assert name.startswith("GITEA-ACTIONS-TASK-7-WORKFLOW-ci-JOB-a-b-")
    assert len(name.rsplit("-", 1)[1]) == 64
    assert sanitize("a---b").startswith("a--b-")


def test_options_parse_docker_run_flags() -> None:
    options = parse_options(
        "-e A=1 --env=B=2 -v /data:/data:ro --health-cmd 'pg_isready -q' --health-interval 1m30s "
        "--shm-size 64m --cpus 1.5 --ulimit nofile=10:20 --name x --cap-add NET_ADMIN -p 80:8080",
        privileged=False,
    )
    spec = options.spec
    assert spec.env == ["A=1", "B=2"]
    assert options.volumes == ["/data:/data:ro"]
    assert options.ports == ["80:8080"]
    assert spec.healthcheck is not None
    assert spec.healthcheck.test == ["CMD-SHELL", "pg_isready -q"]
    assert spec.healthcheck.interval == 90 * 10**9
    assert spec.host_config.shm_size == 64 << 20
    assert spec.host_config.nano_cpus == 1_500_000_000
    assert spec.host_config.cap_add == []
    assert any("--name" in warning for warning in options.warnings)
    assert any("--cap-add" in warning for warning in options.warnings)


def test_options_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"container\.options: --use-api-socket"):
        parse_options("--use-api-socket", privileged=True, where="container.options")
    with pytest.raises(ConfigError, match="--pull 'sometimes'"):
        parse_options("--pull sometimes", privileged=True)
