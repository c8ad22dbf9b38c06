"""Docker backend: a job's network, volumes, service containers and job container.

:meth:`DockerEnvironment.start` sets a job environment up (spec 2.5, 2.6) and removes
everything it created when the block exits for any reason: a shielded, time-bounded
teardown force-removes the containers, then the volumes and the network (2.11). Every
object carries the runner's uuid, the task id and the job container's name as labels, so
set-up and :func:`remove_leftovers` can clear what a killed runner left behind.
:meth:`DockerEnvironment.start_for_host` does the same for a job that runs on the host:
its services (2.6, host mode) and its docker actions (3.10), whose containers bind the
host's job directories at the same paths.

Engine round trips are the cost of a container job, so independent calls run side by
side, ``which`` in a root container is answered from file stats rather than an exec, the
container's PATH and user come from the image rather than an inspect, and a step ends on
its exit line (``step_exit``) rather than on the engine's end of stream and exit code.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import logging
import os
import re
import secrets
import shlex
import shutil
import tarfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import IO, Any, Final, Protocol

import msgspec
import trio

from trio_runner.backends.base import ContainerStep, OutputHandler
from trio_runner.backends.container_options import (
    ContainerOptions,
    VolumePolicy,
    apply_ports,
    merge_options,
    parse_options,
)
from trio_runner.backends.docker_api import (
    MODE_SYMLINK,
    MODE_TYPE,
    ContainerSpec,
    ContainerSummary,
    DockerClient,
    EndpointSettings,
    EngineError,
    Health,
    ImageConfig,
    NetworkingConfig,
    NotFoundError,
    PathStat,
    PortBinding,
    RegistryAuth,
    socket_path,
    tar_single_file,
    untar_single_file,
)
from trio_runner.backends.step_exit import STEP_WRAPPER, StepExit
from trio_runner.backends.volume_files import NotLocal, VolumeFiles
from trio_runner.workflow.expressions.hashfiles import ArchiveTree, Kind, PathInfo, hash_files

LABEL_RUNNER: Final = "com.gitea.runner.uuid"
LABEL_TASK: Final = "com.gitea.runner.task-id"
#: The job container's name, on every object of the job: it finds the docker-action
#: containers of an earlier run of the same job (exec runs get a new runner uuid each).
LABEL_JOB_CONTAINER: Final = "com.gitea.runner.job-container"

RUNNER_DIR: Final = "/var/run/act"
TEMP_DIR: Final = "/tmp"
TOOL_CACHE_DIR: Final = "/opt/hostedtoolcache"
SHARED_TOOL_CACHE_VOLUME: Final = "act-toolcache"
DOCKER_SOCKET_TARGET: Final = "/var/run/docker.sock"
#: PATH of a step when the image defines none.
STANDARD_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# GitHub's runner escalation when a step is cancelled: SIGINT, SIGTERM, SIGKILL.
SIGINT_GRACE = 7.5
SIGTERM_GRACE = 2.5
TEARDOWN_BUDGET = 60.0
#: How long hashFiles may take to read the workspace from the job container (5.8).
HASH_FILES_LIMIT: Final = 60.0
#: Go ``os.ModeDir`` in a path stat.
_MODE_DIRECTORY: Final = 1 << 31
#: Where a host-mode job's services publish their ports.
LOOPBACK: Final = "127.0.0.1"
HEALTH_POLL_FIRST = 2.0
HEALTH_POLL_MAX = 32.0

_SIGNAL_GROUP = 'pid=$(cat "$1" 2>/dev/null) && kill -"$2" -"$pid" 2>/dev/null'
# Absolute path of executable $1 on the PATH value $2, as a script: `command -v` returns
# bare names for shell builtins. The value is an argument, not the script's own PATH, so
# that `sh` is found even when the searched PATH lacks it.
_WHICH = """case $1 in
*/*) [ -f "$1" ] && [ -x "$1" ] && echo "$1" && exit 0; exit 1 ;;
esac
IFS=:
for dir in $2; do
  [ -f "${dir:-.}/$1" ] && [ -x "${dir:-.}/$1" ] && echo "${dir:-.}/$1" && exit 0
done
exit 1"""

log = logging.getLogger(__name__)


class SetupLog(Protocol):
    """Where the environment reports setup and teardown progress for the job's log."""

    async def info(self, message: str) -> None: ...

    async def warning(self, message: str) -> None: ...


class Credentials(msgspec.Struct, frozen=True):
    username: str
    password: str


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One ``jobs.<id>.services.<id>`` entry, already evaluated."""

    id: str
    image: str
    env: dict[str, str] = {}
    cmd: list[str] = []
    ports: list[str] = []
    volumes: list[str] = []
    options: str = ""
    credentials: Credentials | None = None


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The job's side of its container environment, already evaluated."""

    runner_uuid: str
    task_id: int
    #: The job container name (:func:`job_container_name`); other names derive from it.
    name: str
    #: ``jobs.<id>`` key, part of the network name.
    job_id: str
    #: The job's display name: its alias on the job network.
    alias: str
    image: str
    workspace: str
    #: Container environment: ``RUNNER_*`` variables, ``LANG`` and ``container.env``.
    env: dict[str, str] = {}
    volumes: list[str] = []
    ports: list[str] = []
    options: str = ""
    credentials: Credentials | None = None
    services: list[ServiceSpec] = []
    #: Seconds the job container keeps running (the remaining task lifetime).
    lifetime: float = 3 * 3600.0


class DockerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The runner's ``container`` configuration as the backend needs it."""

    #: ``container.network``; empty: a network per job.
    network: str = ""
    enable_ipv6: bool | None = None
    privileged: bool = False
    options: str = ""
    valid_volumes: list[str] = []
    #: Host path of the engine socket mounted into jobs; None when ``docker_host`` is ``-``.
    socket_mount: str | None = None
    force_pull: bool = False
    #: Rebuild docker actions' images even when their tag exists.
    force_rebuild: bool = False
    #: Negative: do not wait for service health checks.
    service_ready_timeout: float = 300.0
    shared_tool_cache: bool = False
    #: With ``bind_workdir``: the host directory ``/<workdir_parent>/<task id>`` holding the
    #: workspace, bind-mounted at the same path and deleted at teardown. Empty: a volume.
    bind_workdir_root: str = ""


class HostDirs(msgspec.Struct, frozen=True, kw_only=True):
    """A host job's directories, bound into its step containers at the same paths so that
    ``GITHUB_WORKSPACE`` and the file-command paths are the same inside and outside."""

    workspace: str
    runner_dir: str
    tool_cache: str


class ServiceInfo(msgspec.Struct, frozen=True):
    """``job.services.<id>``: the container id, its network, and container port (no
    ``/tcp``) → published host port."""

    id: str
    network: str
    ports: dict[str, str]


def sanitize(*parts: str) -> str:
    """Object names of spec 2.5: readable prefix plus a sha256 of the whole."""
    joined = re.sub(r"[^A-Za-z0-9]", "-", "-".join(parts)).replace("--", "-")
    return f"{joined[:63].strip('-')}-{hashlib.sha256(joined.encode()).hexdigest()}"


def job_container_name(task: str, workflow: str, job: str) -> str:
    """``task`` is the task id (daemon) or the event name (exec mode)."""
    return sanitize(f"GITEA-ACTIONS-TASK-{task}", f"WORKFLOW-{workflow}", f"JOB-{job}")


class DockerEnvironment:
    """A started container job environment (see the Environment protocol)."""

    workspace: str
    runner_dir = RUNNER_DIR
    temp_dir = TEMP_DIR
    tool_cache = TOOL_CACHE_DIR

    def __init__(
        self,
        api: DockerClient,
        job: JobSpec,
        settings: DockerSettings,
        setup_log: SetupLog,
        *,
        host: HostDirs | None = None,
    ) -> None:
        self.api = api
        self.job = job
        self.settings = settings
        #: The directories of a job that runs on the host; then this environment holds only
        #: the job's services and their network (no job container or volumes; ports
        #: published on the loopback address, 2.6 host mode) and its step containers.
        self.host = host
        self.services_only = host is not None
        self.workspace = host.workspace if host else job.workspace
        self.default_path = STANDARD_PATH
        self.container_id = ""
        self.network = settings.network or f"{job.name}-{job.job_id}-network"
        self.services: dict[str, ServiceInfo] = {}
        self._log = setup_log
        self._labels = {
            LABEL_RUNNER: job.runner_uuid,
            LABEL_TASK: str(job.task_id),
            LABEL_JOB_CONTAINER: job.name,
        }
        self._policy = VolumePolicy(list(settings.valid_volumes), own=self._own_volumes())
        # What teardown removes, recorded before each create call so that a create
        # interrupted by cancellation is still cleaned up.
        self._containers: list[str] = []
        self._volumes: list[str] = []
        self._created_network = False
        self._mountpoints: dict[str, str] = {}
        #: The configuration of each image this job pulled or found (``_ensure_image``).
        self._images: dict[str, ImageConfig] = {}
        self._files = VolumeFiles()
        # `which` answers for this job; a miss is forgotten once a process ran (a step may
        # have installed the command).
        self._which: dict[tuple[str, str], str | None] = {}
        # Whether steps run as root, so file stats from the engine answer `which` (2.5 9).
        self._root_user = False
        #: ``~`` of hashFiles patterns: the job container's home directory.
        self._home = "/root"

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, api: DockerClient, job: JobSpec, settings: DockerSettings, setup_log: SetupLog
    ) -> AsyncIterator[DockerEnvironment]:
        """Set the environment up; on exit remove all of it (shielded, bounded)."""
        async with cls(api, job, settings, setup_log)._running() as env:
            yield env

    @classmethod
    @contextlib.asynccontextmanager
    async def start_for_host(
        cls,
        api: DockerClient,
        job: JobSpec,
        settings: DockerSettings,
        setup_log: SetupLog,
        host: HostDirs,
    ) -> AsyncIterator[DockerEnvironment]:
        """The containers of a job that runs on the host. Its services (2.6) are started,
        waited for and removed like a container job's, on the job network (so that they
        reach each other by their ids, as on GitHub), their ports published on 127.0.0.1
        only; without services nothing is created up front. Step containers
        (:meth:`run_container_step`) join the job network when there is one, else the
        engine's default. ``job.image`` and ``job.workspace`` are unused."""
        # The workspace of a host job is the host's own directory, bound as it is.
        settings = msgspec.structs.replace(settings, bind_workdir_root="")
        async with cls(api, job, settings, setup_log, host=host)._running() as env:
            yield env

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[DockerEnvironment]:
        try:
            await self._setup()
            yield self
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_BUDGET) as budget:
                await self._teardown()
            if budget.cancelled_caught:
                log.warning("teardown of %s ran out of time", self.job.name)

    # --- Environment protocol ---

    def job_context(self) -> dict[str, Any]:
        return {
            "container": {"id": self.container_id, "network": self.network},
            "services": {
                service_id: {"id": info.id, "network": info.network, "ports": dict(info.ports)}
                for service_id, info in self.services.items()
            },
        }

    async def kill(self) -> None:
        """Kill the job's containers at once; their processes (and exec streams) end."""
        for name in self._containers:
            with contextlib.suppress(EngineError):
                await self.api.container_kill(name)

    async def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        output: OutputHandler,
    ) -> int:
        self._which = {key: found for key, found in self._which.items() if found}
        pidfile = f"{TEMP_DIR}/.trio-runner-{secrets.token_hex(8)}.pid"
        reading = trio.CancelScope()
        step = StepExit(output, reading.cancel)
        wrapped = ["sh", "-c", STEP_WRAPPER, "sh", pidfile, step.marker, *argv]
        exec_id = await self.api.exec_create(self.container_id, wrapped, env=env, cwd=cwd)

        async def read() -> None:
            with reading:
                await self.api.exec_start(exec_id, step.feed)
            await step.flush()

        await _stream_until_ended(read, lambda ended: self._stop_group(pidfile, ended))
        if step.code is not None:
            return step.code
        return await self.api.exec_exit_code(exec_id)

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        try:
            await trio.to_thread.run_sync(self._files.write, path, data, mode)
            return
        except (NotLocal, PermissionError):
            pass
        directory, _, name = path.rpartition("/")
        archive = tar_single_file(name, data, mode)
        try:
            await self.api.archive_put(self.container_id, directory or "/", archive)
        except NotFoundError:
            await self._run_quiet(["mkdir", "-p", directory])
            await self.api.archive_put(self.container_id, directory, archive)

    async def read_file(self, path: str) -> bytes:
        try:
            return await trio.to_thread.run_sync(self._files.read, path)
        except (NotLocal, PermissionError):
            pass
        try:
            archive = await self.api.archive_get(self.container_id, path)
        except NotFoundError:
            raise FileNotFoundError(f"{path} does not exist in the job container") from None
        return untar_single_file(archive, path)

    async def hash_files(self, arguments: Sequence[str]) -> str:
        """With ``bind_workdir`` the workspace is read in place; otherwise through the
        engine's archive API (the workspace is a volume of the job container)."""
        if self.settings.bind_workdir_root:
            return await trio.to_thread.run_sync(
                functools.partial(hash_files, self.workspace, arguments, home=self._home)
            )
        try:
            with trio.fail_after(HASH_FILES_LIMIT):
                return await self._hash_files_by_archive(arguments)
        except trio.TooSlowError:
            raise TimeoutError(
                f"reading the workspace from the job container took more than "
                f"{HASH_FILES_LIMIT:.0f} s"
            ) from None

    async def _hash_files_by_archive(self, arguments: Sequence[str]) -> str:
        result: str | Exception
        async with trio.open_nursery() as nursery:
            source = _EngineArchive(self.api, self.container_id, nursery)

            def run() -> str:
                tree = ArchiveTree(self.workspace, source)
                return hash_files(self.workspace, arguments, home=self._home, tree=tree)

            try:
                result = await trio.to_thread.run_sync(run)
            except (OSError, ValueError) as error:
                # Raised out of the nursery it would come wrapped in an exception group.
                result = error
            nursery.cancel_scope.cancel()
        if isinstance(result, Exception):
            raise result
        return result

    async def which(self, command: str, path: str) -> str | None:
        if (command, path) not in self._which:
            self._which[command, path] = await self._search(command, path)
        return self._which[command, path]

    async def _search(self, command: str, path: str) -> str | None:
        if self._root_user:
            try:
                return await self._search_by_stat(command, path)
            except _Undecided:
                pass
        return await self._search_in_shell(command, path)

    async def _search_by_stat(self, command: str, path: str) -> str | None:
        """``_WHICH`` for root, answered from the engine's file stats instead of an exec
        (a stat takes a few milliseconds, an exec a hundred). Raises :class:`_Undecided`
        when only a shell can tell: relative candidates, or stats the engine refuses."""
        if "/" in command:
            candidates = [command]
        else:
            directories = path.split(":")
            # The shell's field splitting drops one trailing empty field.
            if directories[-1] == "":
                directories.pop()
            candidates = [f"{directory or '.'}/{command}" for directory in directories]
        if not all(candidate.startswith("/") for candidate in candidates):
            raise _Undecided
        # One after the other: Podman serves a container's stats one at a time, and
        # the search stops at the first hit.
        for candidate in candidates:
            verdict = await self._is_executable(candidate)
            if verdict is None:
                raise _Undecided
            if verdict:
                return candidate
        return None

    async def _is_executable(self, path: str) -> bool | None:
        """``[ -f path ] && [ -x path ]`` as root: a regular file (through symlinks) with
        an execute bit. None when the engine cannot tell."""
        stat: PathStat | None
        try:
            stat = await self.api.archive_stat(self.container_id, path)
            if stat is not None and stat.mode & MODE_SYMLINK:
                if not stat.link_target:
                    return None
                stat = await self.api.archive_stat(self.container_id, stat.link_target)
        except EngineError:
            return None
        return stat is not None and not stat.mode & MODE_TYPE and bool(stat.mode & 0o111)

    async def _search_in_shell(self, command: str, path: str) -> str | None:
        found = bytearray()

        async def collect(chunk: bytes) -> None:
            found.extend(chunk)

        code = await self.api.exec_run(
            self.container_id,
            ["sh", "-c", _WHICH, "sh", command, path],
            output=collect,
        )
        return found.decode().strip() or None if code == 0 else None

    # --- ContainerSteps: docker actions (3.10) ---

    async def run_container_step(self, step: ContainerStep, *, output: OutputHandler) -> int:
        image = step.image or step.tag
        if step.image:
            await self._ensure_image(step.image, None, "")
        else:
            await self._build_action_image(step)
        options = parse_options(self.settings.options, privileged=self.settings.privileged)
        spec = ContainerSpec(
            image=image,
            entrypoint=step.entrypoint,
            cmd=list(step.args) or None,
            env=[f"{key}={value}" for key, value in step.env.items()],
            working_dir=self.workspace,
            labels=dict(self._labels),
        )
        await self._finish_spec(spec, options, self._step_binds() + options.volumes, [])
        spec.host_config.network_mode = self._step_network()
        spec.host_config.port_bindings = {}
        spec.exposed_ports = {}
        name = sanitize(self.job.name, f"STEP-{step.key}")
        await self.api.container_remove(name, force=True)
        try:
            await self._create_and_start(name, spec)
            return await self._follow_step(name, output)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_BUDGET):
                await _attempt(
                    "container", name, functools.partial(self.api.container_remove, name)
                )
                self._containers.remove(name)

    def _step_binds(self) -> list[str]:
        if self.host is None:
            return self._own_binds()
        dirs = (self.host.workspace, self.host.runner_dir, self.host.tool_cache)
        return [f"{path}:{path}" for path in dirs] + self._socket_binds()

    def _step_network(self) -> str:
        """A container job's steps share its network namespace (and so its aliases); a host
        job's join the job network when it has one, else the engine's default."""
        if self.host is None:
            return f"container:{self.container_id}"
        return self.network if self._created_network or self.settings.network else ""

    async def _follow_step(self, name: str, output: OutputHandler) -> int:
        """Stream the step container's output until it stops; cancellation escalates
        SIGINT, SIGTERM, SIGKILL like a step process and lets the output drain."""
        await _stream_until_ended(
            lambda: self.api.container_follow(name, output),
            lambda ended: self._stop_container(name, ended),
        )
        return await self.api.container_wait(name)

    async def _build_action_image(self, step: ContainerStep) -> None:
        if not self.settings.force_rebuild and await self.api.image_inspect(step.tag):
            return
        # A host job's environment is this machine: its local actions are here too.
        if step.context_is_local or self.host is not None:
            context = await trio.to_thread.run_sync(_tar_directory, step.build_context)
        else:
            try:
                packed = await self.api.archive_get(self.container_id, step.build_context)
            except NotFoundError:
                raise EngineError(
                    f"the build context {step.build_context} does not exist in the job container"
                ) from None
            context = await trio.to_thread.run_sync(_strip_top_directory, packed)
        dockerfile = step.dockerfile.removeprefix(step.build_context.rstrip("/") + "/")
        proxies = {key: value for key, value in step.env.items() if key.lower() in _PROXY_VARS}
        await self._log.info(f"Building image {step.tag}")
        await self.api.image_build(context, step.tag, dockerfile=dockerfile, build_args=proxies)

    # --- setup ---

    async def _setup(self) -> None:
        job, settings = self.job, self.settings
        if self.services_only and not job.services:
            return
        job_options = parse_options(settings.options, privileged=settings.privileged)
        job_options_from_job = parse_options(
            job.options, privileged=settings.privileged, where="container.options"
        )
        service_options = {
            service.id: parse_options(
                service.options,
                privileged=settings.privileged,
                where=f"services.{service.id}.options",
            )
            for service in job.services
        }
        # Independent engine calls run side by side: each one is a round trip, and Podman
        # answers a few at a time.
        async with _together() as nursery:
            nursery.start_soon(
                self._pull_images, service_options, job_options_from_job.pull or job_options.pull
            )
            nursery.start_soon(self._remove_same_names)
        async with _together() as nursery:
            if not settings.network:
                self._created_network = True
                nursery.start_soon(self._create_network)
            for name in self._volume_names():
                self._volumes.append(name)
                nursery.start_soon(self._create_volume, name)
            if settings.bind_workdir_root:
                # Docker would create a missing bind source, Podman refuses it.
                nursery.start_soon(
                    trio.to_thread.run_sync,
                    functools.partial(os.makedirs, self.workspace, exist_ok=True),
                )
        await self._start_services(service_options)
        if not self.services_only:
            await self._start_job_container([job_options, job_options_from_job])

    async def _pull_images(
        self, service_options: Mapping[str, ContainerOptions], job_pull: str
    ) -> None:
        """Service images concurrently, then the job image (2.5 step 1)."""
        async with _together() as nursery:
            for service in self.job.services:
                if service.image:
                    nursery.start_soon(
                        self._ensure_image,
                        service.image,
                        service.credentials,
                        service_options[service.id].pull,
                    )
        if not self.services_only:
            await self._ensure_image(self.job.image, self.job.credentials, job_pull)

    async def _create_network(self) -> None:
        await self.api.network_create(
            self.network, labels=self._labels, enable_ipv6=self.settings.enable_ipv6
        )

    async def _create_volume(self, name: str) -> None:
        volume = await self.api.volume_create(name, labels=self._labels)
        self._mountpoints[name] = volume.mountpoint

    async def _ensure_image(
        self, ref: str, credentials: Credentials | None, pull_policy: str
    ) -> None:
        info = await self.api.image_inspect(ref)
        present = info is not None
        if info is not None and info.config is not None:
            self._images[ref] = info.config
        pinned = "@" in ref
        wanted = (
            pull_policy == "always"
            or (not present and pull_policy != "never")
            or (self.settings.force_pull and not pinned and pull_policy != "never")
        )
        if not wanted:
            return
        auth = (
            RegistryAuth(credentials.username, credentials.password, registry_of(ref))
            if credentials
            else None
        )
        await self._log.info(f"Pulling image {ref}")
        try:
            await self.api.image_pull(ref, auth=auth)
        except EngineError as exc:
            if not present:
                raise
            await self._log.warning(f"pulling {ref} failed, using the local image: {exc}")
            return
        pulled = await self.api.image_inspect(ref)
        if pulled is not None and pulled.config is not None:
            self._images[ref] = pulled.config

    async def _remove_same_names(self) -> None:
        """Leftovers of an earlier run of the same job (or task): containers first, as
        they hold the volumes and the network, and the job container last, as Podman
        refuses to remove a container whose network namespace a docker-action step
        container of a killed runner still uses."""
        api = self.api
        dependents: set[str] = set()
        job = self.job
        earlier_runs = (
            {LABEL_RUNNER: job.runner_uuid, LABEL_TASK: str(job.task_id)},
            {LABEL_JOB_CONTAINER: job.name},
        )
        async with _together() as nursery:
            for labels in earlier_runs:
                nursery.start_soon(self._find_leftovers, labels, dependents)
            for name in self._service_names().values():
                nursery.start_soon(_remove_container, api, name)
        async with _together() as nursery:
            for container in dependents:
                nursery.start_soon(_remove_container, api, container)
        if not self.services_only:
            await _remove_container(api, self.job.name)
        async with _together() as nursery:
            for name in self._volume_names():
                nursery.start_soon(api.volume_remove, name)
            if not self.settings.network:
                nursery.start_soon(api.network_remove, self.network)

    async def _find_leftovers(self, labels: Mapping[str, str], found: set[str]) -> None:
        """Add the ids of the containers carrying ``labels``, other than the job
        container, to ``found``."""
        for container in await self.api.containers_list(labels):
            if f"/{self.job.name}" not in (container.names or ()):
                found.add(container.id)

    async def _start_services(self, service_options: Mapping[str, ContainerOptions]) -> None:
        names = self._service_names()
        for service in self.job.services:
            if not service.image:
                await self._log.info(
                    f"The service '{service.id}' will not be started because the container "
                    "definition has an empty image."
                )
                continue
            spec = ContainerSpec(
                image=service.image,
                cmd=list(service.cmd) or None,
                env=[f"{key}={value}" for key, value in service.env.items()],
                # A host job's workspace is a path on the host, not in the container.
                working_dir="" if self.services_only else self.workspace,
                labels=dict(self._labels),
                networking_config=self._endpoint(service.id),
            )
            spec.host_config.network_mode = self.network
            options = service_options[service.id]
            binds = self._socket_binds() + list(service.volumes) + options.volumes
            await self._finish_spec(spec, options, binds, [*service.ports, *options.ports])
            if self.services_only:
                # Reachable from the job's processes on this machine, and from no other.
                for bindings in spec.host_config.port_bindings.values():
                    for binding in bindings:
                        binding.host_ip = LOOPBACK
            await self._create_and_start(names[service.id], spec)
        await self._report_stopped_services()
        await self._wait_for_health()

    async def _start_job_container(self, option_sets: Sequence[ContainerOptions]) -> None:
        job = self.job
        spec = ContainerSpec(
            image=job.image,
            entrypoint=["/bin/sleep", str(max(1, int(job.lifetime)))],
            cmd=[],
            env=[f"{key}={value}" for key, value in job.env.items()],
            working_dir=self.workspace,
            labels=dict(self._labels),
            networking_config=self._endpoint(job.alias),
        )
        spec.host_config.network_mode = self.network
        option_binds = [bind for options in option_sets for bind in options.volumes]
        binds = _replace_targets(self._own_binds(), [*job.volumes, *option_binds])
        ports = [*job.ports, *(port for options in option_sets for port in options.ports)]
        merged = ContainerOptions(mounts=[m for o in option_sets for m in o.mounts])
        for options in option_sets:
            merged.warnings.extend(options.warnings)
            merge_options(merged.spec, options)
        await self._finish_spec(spec, merged, binds, ports)
        # The job container's command is the runner's, whatever the options say.
        spec.entrypoint = ["/bin/sleep", str(max(1, int(job.lifetime)))]
        spec.cmd = []
        await self._log.info(
            f"::group::Starting job container\nimage: {job.image}\nname: {job.name}\n"
            f"network: {self.network}\n::endgroup::"
        )
        self.container_id = await self._create_and_start(job.name, spec)
        # The container's PATH and user follow from the image and the spec as the engine
        # merges them, which saves an inspect round trip after the start.
        image = self._images.get(job.image, ImageConfig())
        self.default_path = (
            _env_value(spec.env, "PATH") or _env_value(image.env, "PATH") or STANDARD_PATH
        )
        self._home = _env_value(spec.env, "HOME") or _env_value(image.env, "HOME") or "/root"
        user = spec.user or image.user
        self._serve_files_locally(spec)
        self._root_user = _is_root(user)
        if not self._root_user:
            await self._fix_workspace_owner(user)

    def _serve_files_locally(self, spec: ContainerSpec) -> None:
        """Map the job's own volumes to their host directories when the engine is local."""
        if socket_path(self.api.host) is None:
            return
        sources = dict(self._mountpoints)
        if self.settings.bind_workdir_root:
            sources[self.workspace] = self.workspace
        targets = [_bind_target(bind) for bind in spec.host_config.binds]
        targets += [mount.target for mount in spec.host_config.mounts]
        for bind in spec.host_config.binds:
            source, target = bind.split(":")[0], _bind_target(bind)
            nested = any(other.startswith(target + "/") for other in targets)
            if source in sources and not nested:
                self._files.add(target, sources[source])

    async def _finish_spec(
        self,
        spec: ContainerSpec,
        options: ContainerOptions,
        binds: Sequence[str],
        ports: Sequence[str],
    ) -> None:
        warnings = list(options.warnings)
        merge_options(spec, options)
        spec.host_config.binds = self._policy.filter_binds(binds, warnings)
        spec.host_config.mounts = self._policy.filter_mounts(options.mounts, warnings)
        spec.host_config.privileged = self.settings.privileged
        spec.labels.update(self._labels)
        apply_ports(spec, ports)
        for warning in warnings:
            await self._log.warning(warning)

    async def _create_and_start(self, name: str, spec: ContainerSpec) -> str:
        self._containers.append(name)
        container_id = await self.api.container_create(name, spec)
        await self.api.container_start(container_id)
        return container_id

    async def _report_stopped_services(self) -> None:
        for service_id, name in self._service_names().items():
            if name not in self._containers:
                continue
            info = await self.api.container_inspect(name)
            if not info.state.running:
                logs = await self.api.container_logs(name)
                await self._log.warning(
                    f"service '{service_id}' is not running ({info.state.status}); its log:\n"
                    + logs.decode(errors="replace")
                )
            self.services[service_id] = ServiceInfo(
                info.id, self.network, _published_ports(info.network_settings.ports)
            )

    async def _wait_for_health(self) -> None:
        timeout = self.settings.service_ready_timeout
        if timeout < 0:
            return
        names = self._service_names()
        async with _together() as nursery:
            for service_id in self.services:
                nursery.start_soon(self._wait_healthy, service_id, names[service_id], timeout)

    async def _wait_healthy(self, service_id: str, name: str, limit: float) -> None:
        interval = HEALTH_POLL_FIRST
        last_output = ""
        with trio.move_on_after(limit):
            while True:
                health = await self._health(name)
                if health is None or not health.status or health.status == "none":
                    return
                if health.log:
                    last_output = health.log[-1].output.strip()
                if health.status == "healthy":
                    await self._log.info(f"{service_id} service is healthy.")
                    return
                if health.status == "unhealthy":
                    logs = await self.api.container_logs(name)
                    await self._log.info(logs.decode(errors="replace"))
                    raise EngineError(f"the service '{service_id}' is unhealthy: {last_output}")
                await self._log.info(
                    f"{service_id} service is starting, waiting {interval:g} seconds before "
                    "checking again."
                )
                await trio.sleep(interval)
                interval = min(interval * 2, HEALTH_POLL_MAX)
        raise EngineError(
            f"the service '{service_id}' did not become healthy within {limit:g}s: {last_output}"
        )

    async def _health(self, name: str) -> Health | None:
        """The service's health status; on Podman, after running its check once.

        Podman runs health checks from systemd timers, so on a host without systemd a
        status would stay ``starting`` forever; running the check here gives the same
        verdicts (retries, start period) at the poll's pace. Docker runs them itself.
        """
        health = (await self.api.container_inspect(name)).state.health
        if self.api.podman and health is not None and health.status == "starting":
            await self.api.container_healthcheck(name)
            health = (await self.api.container_inspect(name)).state.health
        return health

    async def _fix_workspace_owner(self, user: str) -> None:
        """Give the workspace to the container's user; names are resolved by ``id``
        inside the container, numeric ``uid:gid`` needs no lookup."""
        uid, _, gid = user.partition(":")
        if not (uid.isdigit() and gid.isdigit()):
            ids = bytearray()

            async def collect(chunk: bytes) -> None:
                ids.extend(chunk)

            await self.api.exec_run(self.container_id, ["sh", "-c", "id -u; id -g"], output=collect)
            uid, _, gid = ids.decode().strip().partition("\n")
        if (uid, gid.strip()) != ("0", "0") and uid.isdigit():
            await self._run_quiet(["chown", "-R", f"{uid}:{gid.strip()}", self.workspace])

    async def _run_quiet(self, argv: Sequence[str]) -> None:
        """Run a setup command as root; failure is an EngineError with its output."""
        captured = bytearray()

        async def collect(chunk: bytes) -> None:
            captured.extend(chunk)

        code = await self.api.exec_run(self.container_id, argv, user="0", output=collect)
        if code != 0:
            raise EngineError(
                f"{shlex.join(argv)} failed with exit code {code}: "
                + captured.decode(errors="replace").strip()
            )

    async def _stop_container(self, name: str, ended: trio.Event) -> None:
        """Signal a step container until its output ends."""
        await _escalate(ended, lambda signal: self.api.container_kill(name, f"SIG{signal}"))

    async def _stop_group(self, pidfile: str, ended: trio.Event) -> None:
        """Signal the step's process group inside the job container until its output ends."""

        async def send(signal: str) -> None:
            await self.api.exec_run(
                self.container_id,
                ["sh", "-c", _SIGNAL_GROUP, "sh", pidfile, signal],
                user="0",
                output=_discard,
            )

        await _escalate(ended, send)

    # --- names and mounts ---

    def _service_names(self) -> dict[str, str]:
        return {service.id: sanitize(self.job.name, service.id) for service in self.job.services}

    def _volume_names(self) -> list[str]:
        if self.services_only:
            return []
        env_volume = f"{self.job.name}-env"
        return [env_volume] if self.settings.bind_workdir_root else [self.job.name, env_volume]

    def _own_volumes(self) -> set[str]:
        own = {self.job.name, f"{self.job.name}-env", SHARED_TOOL_CACHE_VOLUME}
        if self.settings.socket_mount:
            own.add(self.settings.socket_mount)
        if self.settings.bind_workdir_root:
            own.add(self.workspace)
        if self.host is not None:
            own.update((self.host.workspace, self.host.runner_dir, self.host.tool_cache))
        return own

    def _socket_binds(self) -> list[str]:
        socket = self.settings.socket_mount
        return [f"{socket}:{DOCKER_SOCKET_TARGET}"] if socket else []

    def _own_binds(self) -> list[str]:
        workspace_source = self.workspace if self.settings.bind_workdir_root else self.job.name
        binds = [f"{workspace_source}:{self.workspace}", f"{self.job.name}-env:{RUNNER_DIR}"]
        binds += self._socket_binds()
        if self.settings.shared_tool_cache:
            binds.append(f"{SHARED_TOOL_CACHE_VOLUME}:{TOOL_CACHE_DIR}")
        return binds

    def _endpoint(self, alias: str) -> NetworkingConfig:
        return NetworkingConfig(endpoints_config={self.network: EndpointSettings(aliases=[alias])})

    # --- teardown ---

    async def _teardown(self) -> None:
        """Containers together, then the volumes and the network together (2.11).

        Step containers are gone by now: each step removes its own (shielded).
        """
        api = self.api
        async with trio.open_nursery() as nursery:
            for name in self._containers:
                removal = functools.partial(api.container_remove, name)
                nursery.start_soon(_attempt, "container", name, removal)
        async with trio.open_nursery() as nursery:
            for name in self._volumes:
                nursery.start_soon(
                    _attempt, "volume", name, functools.partial(api.volume_remove, name)
                )
            if self._created_network:
                removal = functools.partial(api.network_remove, self.network)
                nursery.start_soon(_attempt, "network", self.network, removal)
        if root := self.settings.bind_workdir_root:
            await trio.to_thread.run_sync(shutil.rmtree, root, True)


class _EngineArchive:
    """The job container's files through the archive API, for a worker thread
    (:class:`ArchiveSource`): each archive streams from a task of ``nursery``."""

    def __init__(self, api: DockerClient, container: str, nursery: trio.Nursery) -> None:
        self._api = api
        self._container = container
        self._nursery = nursery

    def stat(self, path: str) -> PathInfo | None:
        try:
            found = trio.from_thread.run(self._api.archive_stat, self._container, path)
        except EngineError as error:
            raise OSError(f"cannot stat {path} in the job container: {error}") from None
        if found is None:
            return None
        if found.mode & MODE_SYMLINK:
            return PathInfo(Kind.SYMLINK, found.link_target)
        if found.mode & _MODE_DIRECTORY:
            return PathInfo(Kind.DIRECTORY)
        return PathInfo(Kind.OTHER if found.mode & MODE_TYPE else Kind.FILE)

    @contextlib.contextmanager
    def archive(self, path: str) -> Iterator[IO[bytes]]:
        chunks = trio.from_thread.run(self._open, path)
        with io.BufferedReader(_ChunkReader(chunks)) as reader:
            yield reader

    async def _open(self, path: str) -> trio.MemoryReceiveChannel[bytes | OSError]:
        send, receive = trio.open_memory_channel[bytes | OSError](1)
        try:
            await self._nursery.start(self._produce, path, send)
        except NotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, "no such file in the job container", path
            ) from None
        except EngineError as error:
            raise OSError(f"cannot read {path} in the job container: {error}") from None
        return receive

    async def _produce(
        self,
        path: str,
        send: trio.MemorySendChannel[bytes | OSError],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        async with send:
            try:
                async with self._api.archive_stream(self._container, path) as chunks:
                    task_status.started()
                    started = True
                    async for chunk in chunks:
                        await send.send(chunk)
            except trio.BrokenResourceError:
                pass  # the reader stopped early
            except EngineError as error:
                if not started:
                    raise  # to the opener, through the nursery's start
                with contextlib.suppress(trio.BrokenResourceError):
                    await send.send(OSError(f"reading {path} from the job container: {error}"))


class _ChunkReader(io.RawIOBase):
    """A blocking reader (for a worker thread) of chunks sent by a Trio task."""

    def __init__(self, chunks: trio.MemoryReceiveChannel[bytes | OSError]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                item = trio.from_thread.run(self._chunks.receive)
            except trio.EndOfChannel:
                return 0
            if isinstance(item, OSError):
                raise item
            self._pending = memoryview(item)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            trio.from_thread.run_sync(self._chunks.close)
        super().close()


@contextlib.asynccontextmanager
async def _together() -> AsyncIterator[trio.Nursery]:
    """A nursery for concurrent set-up calls. A failure surfaces as itself (an
    EngineError the job log reports), as it would from sequential calls, rather than
    inside an ExceptionGroup; when several failed, the first, the group as its cause."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        failures = list(_leaves(group))
        if not all(isinstance(failure, Exception) for failure in failures):
            raise
        if len(failures) == 1:
            raise failures[0] from None
        raise failures[0] from group


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


class _Undecided(Exception):
    """Only a shell inside the container can answer this ``which``."""


async def _attempt(kind: str, name: str, removal: Callable[[], Awaitable[object]]) -> None:
    """One teardown removal: a failure is logged and the rest of the teardown goes on."""
    try:
        await removal()
    except EngineError as exc:
        log.warning("removing %s %s failed: %s", kind, name, exc)


async def _remove_container(api: DockerClient, container: str) -> None:
    """Force-remove a container with its anonymous volumes; a missing one is fine."""
    await api.container_remove(container, force=True, volumes=True)


async def _discard(chunk: bytes) -> None:
    """Output of runner-internal commands nobody reads."""


def _replace_targets(own: Sequence[str], extra: Sequence[str]) -> list[str]:
    """A job volume whose target is one of the runner's replaces it, except the runner dir."""
    targets = {_bind_target(bind) for bind in extra} - {RUNNER_DIR}
    return [bind for bind in own if _bind_target(bind) not in targets] + list(extra)


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "no_proxy"})


def _tar_directory(path: str) -> bytes:
    """A build context: the directory's content at the root of a tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(path, arcname=".")
    return buffer.getvalue()


def _strip_top_directory(packed: bytes) -> bytes:
    """Re-root an engine archive of a directory (entries ``<dir>/...``) at ``<dir>``."""
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(packed), mode="r") as source,
        tarfile.open(fileobj=buffer, mode="w") as target,
    ):
        for member in source:
            _, sep, rest = member.name.partition("/")
            if not sep or not rest:
                continue
            member.name = rest
            data = source.extractfile(member) if member.isfile() else None
            target.addfile(member, data)
    return buffer.getvalue()


def _is_root(user: str) -> bool:
    """Whether a container ``User`` (``user[:group]``, names or ids) is root:root."""
    name, _, group = user.partition(":")
    return name in ("", "0", "root") and group in ("", "0", "root")


def _env_value(env: Sequence[str] | None, name: str) -> str:
    prefix = f"{name}="
    return next((item[len(prefix) :] for item in env or () if item.startswith(prefix)), "")


def _published_ports(ports: Mapping[str, Sequence[PortBinding] | None] | None) -> dict[str, str]:
    published: dict[str, str] = {}
    for key, bindings in (ports or {}).items():
        for binding in bindings or ():
            if binding.host_port:
                published[key.removesuffix("/tcp")] = binding.host_port
                break
    return published


def registry_of(ref: str) -> str:
    """The registry host of an image reference (Docker Hub for bare names)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "https://index.docker.io/v1/"


# --- leftovers ----------------------------------------------------------------------------


async def remove_leftovers(
    api: DockerClient,
    runner_uuid: str,
    *,
    active_tasks: Collection[int] = (),
    min_age: float = 0.0,
    now: datetime | None = None,
) -> list[str]:
    """Remove this runner's containers, volumes and networks of tasks no longer running.

    ``active_tasks`` is read at each decision, so a live view (the daemon's running task
    ids) protects a task that starts during the pass. Objects younger than ``min_age``
    seconds are kept. Returns what was removed, as ``<kind> <name>`` strings.
    """
    now = now or datetime.now(UTC)
    owner = {LABEL_RUNNER: runner_uuid}
    removed: list[str] = []

    def stale(labels: Mapping[str, str] | None, created: datetime | None) -> bool:
        task = (labels or {}).get(LABEL_TASK, "")
        old = created is None or (now - created).total_seconds() >= min_age
        return old and task not in {str(active) for active in active_tasks}

    # Job containers last: Podman refuses to remove one while a docker-action step
    # container still uses its network namespace. A failure is left to the next pass.
    for container in sorted(await api.containers_list(owner), key=_is_job_container):
        created = datetime.fromtimestamp(container.created, UTC) if container.created else None
        if stale(container.labels, created):
            name = (container.names or [container.id])[0].lstrip("/")
            try:
                if await api.container_remove(container.id, force=True, volumes=True):
                    removed.append(f"container {name}")
            except EngineError as exc:
                log.warning("removing container %s failed: %s", name, exc)
    for volume in await api.volumes_list(owner):
        if stale(volume.labels, _parse_time(volume.created_at)):
            with contextlib.suppress(EngineError):
                if await api.volume_remove(volume.name):
                    removed.append(f"volume {volume.name}")
    for network in await api.networks_list(owner):
        if stale(network.labels, _parse_time(network.created)):
            with contextlib.suppress(EngineError):
                if await api.network_remove(network.id):
                    removed.append(f"network {network.name}")
    return removed


def _is_job_container(container: ContainerSummary) -> bool:
    job_name = (container.labels or {}).get(LABEL_JOB_CONTAINER)
    return job_name is not None and f"/{job_name}" in (container.names or ())


def _parse_time(text: str) -> datetime | None:
    """Engine timestamps: RFC 3339 with up to nanoseconds, which Python reads to micro."""
    match = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if not match:
        return None
    fraction = (match[2] or "")[:7]
    zone = "+00:00" if match[3] in (None, "Z") else match[3]
    try:
        return datetime.fromisoformat(f"{match[1]}{fraction}{zone}")
    except ValueError:
        return None


async def _stream_until_ended(
    read: Callable[[], Awaitable[None]], stop: Callable[[trio.Event], Awaitable[None]]
) -> None:
    """Run ``read`` (a process's output stream) to its end.

    The reader runs in its own shielded scope: when the caller is cancelled, output keeps
    flowing while ``stop`` signals the process, then the cancellation propagates.
    """
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        reader = trio.CancelScope(shield=True)

        async def read_output() -> None:
            with reader:
                await read()
                ended.set()

        nursery.start_soon(read_output)
        try:
            await ended.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                await stop(ended)
            reader.cancel()
            raise


async def _escalate(ended: trio.Event, send: Callable[[str], Awaitable[object]]) -> None:
    """GitHub's escalation: INT, TERM after 7.5 s, KILL 2.5 s later, until ``ended``."""
    for signal, grace in (("INT", SIGINT_GRACE), ("TERM", SIGTERM_GRACE), ("KILL", 0.0)):
        if ended.is_set():
            return
        with contextlib.suppress(EngineError):
            await send(signal)
        with trio.move_on_after(grace):
            await ended.wait()
