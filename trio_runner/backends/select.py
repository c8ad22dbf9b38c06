"""Choosing and opening a job's environment, host or container (spec 2.3), for the
daemon and ``exec`` alike.

:func:`environment_opener` gives the executor its ``open_environment`` callable: it
evaluates ``runs-on``, ``jobs.<id>.container`` and ``services`` with the job's contexts,
picks the platform (a job container image wins over the labels), and opens either a
:class:`HostEnvironment` or a :class:`DockerEnvironment` built from the runner config.
A host job's services run in the engine when one answers, else a warning says they were
not started (2.6); its container steps connect to the engine on first use (3.10, see
``host_engine``). A set-up failure is written to the job log and fails the job (2.1).

The container modules (``docker``, ``docker_api`` and httpx under them) are imported only
where a container job or an engine probe needs them: loading them costs about 50 ms,
which every ``trio-runner exec`` of host jobs would otherwise pay.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trio_runner.backends.base import Environment
from trio_runner.backends.host import HostEnvironment
from trio_runner.backends.host_engine import ENGINE_PROBE_TIMEOUT, HostEngine, NoEngine
from trio_runner.config import Config
from trio_runner.errors import ConfigError, RunnerError
from trio_runner.executor.commands import error_row, warning_row
from trio_runner.executor.job import JobRun, SetupFailed
from trio_runner.labels import Label, Platform, pick_platform, requires_docker
from trio_runner.workflow.contexts import runner_arch, strategy_context
from trio_runner.workflow.expressions import ExpressionError, interpolate, to_string
from trio_runner.workflow.model import Container, RunsOn

if TYPE_CHECKING:
    from trio_runner.backends.docker import (
        Credentials,
        DockerEnvironment,
        DockerSettings,
        JobSpec,
    )
    from trio_runner.backends.docker_api import DockerClient

#: Names an engine accepts as a network alias.
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class RunnerSide:
    """What the runner contributes to every job environment it opens."""

    config: Config
    labels: Sequence[Label] = ()
    runner_uuid: str = ""
    #: exec ``-i``: every job runs on this platform, labels are not consulted.
    platform: Platform | None = None
    #: Host mode scratch directory (``host.workdir_parent`` or exec's ``--workdir-parent``).
    host_workdir: str = ""


@dataclass(frozen=True)
class TaskIdentity:
    """Names the job's objects: the task id (exec: 0) and the name prefix (exec: event)."""

    task_id: int
    name_prefix: str


def docker_settings(config: Config, task_id: int) -> DockerSettings:
    """The runner's ``container`` section as the Docker backend needs it."""
    from trio_runner.backends import docker_api
    from trio_runner.backends.docker import DockerSettings

    container = config.container
    socket = None
    if container.docker_host != "-":
        socket = docker_api.socket_path(docker_api.resolve_docker_host(container.docker_host))
    return DockerSettings(
        network=container.network,
        enable_ipv6=container.network_create_options.enable_ipv6,
        privileged=container.privileged,
        options=container.options,
        valid_volumes=list(container.valid_volumes),
        socket_mount=socket,
        force_pull=container.force_pull,
        force_rebuild=container.force_rebuild,
        service_ready_timeout=container.service_ready_timeout,
        shared_tool_cache=config.runner.tool_cache_mode == "shared",
        bind_workdir_root=f"/{container.workdir_parent}/{task_id}"
        if container.bind_workdir
        else "",
    )


async def engine_answers(config: Config) -> bool:
    """Whether the configured (or found) engine answers within ENGINE_PROBE_TIMEOUT."""
    from trio_runner.backends import docker_api

    try:
        host = docker_api.resolve_docker_host(config.container.docker_host)
    except docker_api.EngineError:
        return False
    with trio.move_on_after(ENGINE_PROBE_TIMEOUT):
        try:
            async with docker_api.connect(host):
                return True
        except docker_api.EngineError:
            return False
    return False


def engine_in_use(config: Config, labels: Sequence[Label]) -> bool:
    """The runner needs an engine whatever the jobs ask for (2.3 step 4)."""
    return requires_docker(labels) or config.container.require_docker


def job_contexts(run: JobRun) -> dict[str, Any]:
    """The contexts ``runs-on``, ``container`` and ``services`` are evaluated with (4.6)."""
    request, job = run.request, run.job
    return {
        "github": request.task_context,
        "gitea": request.task_context,
        "needs": {
            job_id: {"result": need.result, "outputs": dict(need.outputs)}
            for job_id, need in request.needs.items()
        },
        "strategy": strategy_context(job.strategy_context),
        "matrix": job.matrix_values,
        "vars": request.vars,
        "inputs": request.inputs,
        "secrets": request.secrets,
    }


def evaluate_runs_on(runs_on: RunsOn | str | None, contexts: Mapping[str, Any]) -> list[str]:
    """``runs-on`` as a list of label names (2.3 step 1)."""
    if runs_on is None:
        return []
    value = interpolate(runs_on if isinstance(runs_on, str) else runs_on.labels, contexts)
    if isinstance(value, Mapping):
        value = value.get("labels", [])
    items = value if isinstance(value, list) else [value]
    return [to_string(item) for item in items if item is not None]


@dataclass(frozen=True)
class EvaluatedContainer:
    """``jobs.<id>.container`` or one service, after evaluation."""

    image: str
    options: str = ""
    env: Mapping[str, str] = ()  # type: ignore[assignment]
    ports: Sequence[str] = ()
    volumes: Sequence[str] = ()
    credentials: Credentials | None = None
    cmd: Sequence[str] = ()


def evaluate_container(
    container: Container, contexts: Mapping[str, Any], where: str
) -> EvaluatedContainer:
    """Evaluate every template of a container definition; errors name ``where``."""

    def text(value: str | None, key: str) -> str:
        try:
            return to_string(interpolate(value or "", contexts)).strip()
        except ExpressionError as exc:
            raise ConfigError(f"{where}.{key}: {exc}") from None

    credentials = None
    if container.credentials is not None:
        from trio_runner.backends.docker import Credentials

        username = text(container.credentials.username, "credentials.username")
        password = text(container.credentials.password, "credentials.password")
        if not username or not password:
            raise ConfigError(f"{where}.credentials: both username and password are required")
        credentials = Credentials(username, password)
    command = text(container.command, "command")
    return EvaluatedContainer(
        image=text(container.image, "image"),
        options=text(container.options, "options"),
        env={key: text(value, f"env.{key}") for key, value in container.env.items()},
        ports=[text(port, "ports") for port in container.ports],
        volumes=[text(volume, "volumes") for volume in container.volumes],
        credentials=credentials,
        cmd=command.split() if command else (),
    )


def environment_opener(
    run: JobRun, runner: RunnerSide, task: TaskIdentity
) -> Callable[[], contextlib.AbstractAsyncContextManager[Environment]]:
    """The ``open_environment`` callable of one job run."""

    @contextlib.asynccontextmanager
    async def open_environment() -> AsyncIterator[Environment]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                env = await _enter(stack, run, runner, task)
            except (RunnerError, ExpressionError) as exc:
                await run.log.write(error_row(str(exc)))
                raise SetupFailed(str(exc)) from exc
            yield env

    return open_environment


async def _enter(
    stack: contextlib.AsyncExitStack, run: JobRun, runner: RunnerSide, task: TaskIdentity
) -> Environment:
    contexts = job_contexts(run)
    job_id = run.request.job_id
    container = (
        evaluate_container(run.job.container, contexts, f"jobs.{job_id}.container")
        if run.job.container is not None
        else None
    )
    if container is not None and container.image:
        image: str | None = container.image
    else:
        image = (await _platform(run, runner, contexts)).image
    if image is None:
        host = await stack.enter_async_context(
            HostEnvironment.start(
                runner.host_workdir,
                shared_tool_cache=runner.config.runner.tool_cache_mode == "shared",
            )
        )
        engine = _host_engine(run, runner, task, contexts, host)
        # Registered after the host directories: the containers go before the directories.
        stack.push_async_callback(engine.aclose)
        host.containers = engine
        host.services = await _host_services(run, engine)
        return host
    from trio_runner.backends import docker_api
    from trio_runner.backends.docker import DockerEnvironment

    config = runner.config
    spec = _job_spec(run, runner, task, image, container, contexts)
    run.request.runner_env["JOB_CONTAINER_NAME"] = spec.name
    api = await stack.enter_async_context(
        docker_api.connect(docker_api.resolve_docker_host(config.container.docker_host))
    )
    docker: Environment = await stack.enter_async_context(
        DockerEnvironment.start(api, spec, docker_settings(config, task.task_id), JobLogSetup(run))
    )
    return docker


def _host_engine(
    run: JobRun,
    runner: RunnerSide,
    task: TaskIdentity,
    contexts: Mapping[str, Any],
    host: HostEnvironment,
) -> HostEngine:
    """The engine of a host job (services, container steps), connected on first use."""
    # Evaluated now, with the job's contexts, so that a bad service definition fails the
    # set-up whether or not an engine answers.
    spec_args = (run, runner, task, "", None, contexts)
    if run.job.services:
        _job_spec(*spec_args)

    def start(api: DockerClient) -> contextlib.AbstractAsyncContextManager[DockerEnvironment]:
        from trio_runner.backends.docker import DockerEnvironment, HostDirs

        dirs = HostDirs(
            workspace=host.workspace, runner_dir=host.runner_dir, tool_cache=host.tool_cache
        )
        settings = docker_settings(runner.config, task.task_id)
        spec = _job_spec(*spec_args)
        return DockerEnvironment.start_for_host(api, spec, settings, JobLogSetup(run), dirs)

    return HostEngine(runner.config.container.docker_host, start)


async def _host_services(run: JobRun, engine: HostEngine) -> dict[str, dict[str, Any]]:
    """Start a host job's services when an engine answers (2.6, host mode); they are
    removed when the engine closes. ``job.services`` of the job context."""
    if not run.job.services:
        return {}
    try:
        docker = await engine.open()
    except NoEngine as exc:
        await run.log.write(warning_row(f"the job's services were not started: {exc.reason}"))
        return {}
    services: dict[str, dict[str, Any]] = docker.job_context()["services"]
    return services


async def _platform(run: JobRun, runner: RunnerSide, contexts: Mapping[str, Any]) -> Platform:
    if runner.platform is not None:
        return runner.platform
    runs_on = evaluate_runs_on(run.job.runs_on, contexts)
    names = {label.name for label in runner.labels}
    matched = any(wanted in names for wanted in runs_on)
    available = matched or engine_in_use(runner.config, runner.labels)
    if not available:
        available = await engine_answers(runner.config)
    return pick_platform(
        runner.labels,
        runs_on,
        default_image=runner.config.runner.default_image,
        docker_available=available,
    )


def _job_spec(
    run: JobRun,
    runner: RunnerSide,
    task: TaskIdentity,
    image: str,
    container: EvaluatedContainer | None,
    contexts: Mapping[str, Any],
) -> JobSpec:
    from trio_runner.backends.docker import (
        DockerEnvironment,
        JobSpec,
        ServiceSpec,
        job_container_name,
    )

    config, request, job = runner.config, run.request, run.job
    display = job.display_name()
    workflow = request.workflow.name or request.workflow.file
    repository = str(request.task_context.get("repository") or "") or "local/workspace"
    parent = f"/{config.container.workdir_parent}"
    if config.container.bind_workdir:
        parent = f"{parent}/{task.task_id}"
    services = []
    for service_id, definition in job.services.items():
        evaluated = evaluate_container(
            definition, contexts, f"jobs.{request.job_id}.services.{service_id}"
        )
        services.append(
            ServiceSpec(
                id=service_id,
                image=evaluated.image,
                env=dict(evaluated.env),
                cmd=list(evaluated.cmd),
                ports=list(evaluated.ports),
                volumes=list(evaluated.volumes),
                options=evaluated.options,
                credentials=evaluated.credentials,
            )
        )
    env = {
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": runner_arch(),
        "RUNNER_TEMP": DockerEnvironment.temp_dir,
        "RUNNER_TOOL_CACHE": DockerEnvironment.tool_cache,
        "LANG": "C.UTF-8",
    }
    if container is not None:
        env.update(container.env)
    return JobSpec(
        runner_uuid=runner.runner_uuid,
        task_id=task.task_id,
        name=job_container_name(task.name_prefix, workflow, display),
        job_id=request.job_id,
        alias=display if _ALIAS.fullmatch(display) else request.job_id,
        image=image,
        workspace=f"{parent}/{repository}",
        env=env,
        volumes=list(container.volumes) if container else [],
        ports=list(container.ports) if container else [],
        options=container.options if container else "",
        credentials=container.credentials if container else None,
        services=services,
        lifetime=request.timeout,
    )


class JobLogSetup:
    """The Docker backend's set-up messages, as rows of the job log (masked)."""

    def __init__(self, run: JobRun) -> None:
        self._log = run.log

    async def info(self, message: str) -> None:
        await self._log.write(message)

    async def warning(self, message: str) -> None:
        await self._log.write(warning_row(message))
