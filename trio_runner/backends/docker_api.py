"""A thin async client of the Docker Engine API (also served by Podman), over httpx.

It owns the wire: socket selection, API version negotiation, the request and response
shapes (msgspec Structs named after the engine's JSON), the multiplexed stream format of
exec and logs, and turning engine failures into :class:`EngineError` with the engine's
own message. Policy (what to create, when to clean up) lives in ``docker.py``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import struct
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import trio

from trio_runner.backends.base import OutputHandler
from trio_runner.errors import RunnerError

#: The API version spoken unless the engine no longer accepts it (Podman 4 serves 1.41).
PREFERRED_API_VERSION: Final = (1, 41)
#: The libpod API version of Podman-only calls (Podman 4 and later serve it).
LIBPOD_API_VERSION: Final = "4.0.0"
#: Receives one progress line of a pull or build.
ProgressHandler = Callable[[str], Awaitable[None]]

_T = TypeVar("_T")

_REQUEST_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
# Long-running calls (wait, exec output, pull, build) may stay silent for a long time; the
# job's own timeout bounds them.
_STREAM_TIMEOUT = httpx.Timeout(None, connect=10.0)
_EXEC_EXIT_POLL = 0.05
_EXEC_EXIT_WAIT = 10.0

# Every call at DEBUG: method, path, status and milliseconds, for tracing a job's cost.
log = logging.getLogger(__name__)


class EngineError(RunnerError):
    """The container engine refused a request or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(EngineError):
    """The engine answered 404: no such container, image, network, volume or path."""


# --- socket selection ---------------------------------------------------------------------


def default_sockets() -> list[str]:
    """The sockets probed, in order, when neither config nor DOCKER_HOST names one."""
    sockets = ["/var/run/docker.sock"]
    if runtime_dir := os.environ.get("XDG_RUNTIME_DIR"):
        sockets.append(f"{runtime_dir}/podman/podman.sock")
    sockets.append("/run/podman/podman.sock")
    return sockets


def resolve_docker_host(configured: str = "") -> str:
    """The engine address: ``container.docker_host``, else DOCKER_HOST, else a found socket.

    ``-`` (do not mount the socket into jobs) selects the engine like an empty value.
    """
    if configured and configured != "-":
        return configured
    if from_env := os.environ.get("DOCKER_HOST"):
        return from_env
    for path in default_sockets():
        if os.path.exists(path):
            return f"unix://{path}"
    raise EngineError(
        "no container engine found: set container.docker_host or DOCKER_HOST, or start "
        f"one listening on {' or '.join(default_sockets())}"
    )


def socket_path(host: str) -> str | None:
    """The unix socket path of an engine address, or None for a TCP address."""
    return host.removeprefix("unix://") if host.startswith("unix://") else None


# --- wire types ---------------------------------------------------------------------------


class _Wire(msgspec.Struct, rename="pascal", omit_defaults=True, kw_only=True):
    """Engine JSON: PascalCase names, unset fields left out of requests."""


class PortBinding(_Wire):
    host_ip: str = msgspec.field(default="", name="HostIp")
    host_port: str = ""


class Mount(_Wire):
    type: str
    target: str
    source: str = ""
    read_only: bool = False


class Ulimit(_Wire):
    name: str
    soft: int
    hard: int


class DeviceMapping(_Wire):
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"


class DeviceRequest(_Wire):
    driver: str = ""
    count: int = 0
    device_i_ds: list[str] = msgspec.field(default_factory=list, name="DeviceIDs")
    capabilities: list[list[str]] = msgspec.field(default_factory=list)


class HealthConfig(_Wire):
    """Durations in nanoseconds; ``test == ["NONE"]`` disables the image's check."""

    test: list[str] = msgspec.field(default_factory=list)
    interval: int = 0
    timeout: int = 0
    retries: int = 0
    start_period: int = 0


class HostConfig(_Wire):
    binds: list[str] = msgspec.field(default_factory=list)
    mounts: list[Mount] = msgspec.field(default_factory=list)
    network_mode: str = ""
    port_bindings: dict[str, list[PortBinding]] = msgspec.field(default_factory=dict)
    privileged: bool = False
    cap_add: list[str] = msgspec.field(default_factory=list)
    cap_drop: list[str] = msgspec.field(default_factory=list)
    security_opt: list[str] = msgspec.field(default_factory=list)
    devices: list[DeviceMapping] = msgspec.field(default_factory=list)
    device_cgroup_rules: list[str] = msgspec.field(default_factory=list)
    device_requests: list[DeviceRequest] = msgspec.field(default_factory=list)
    extra_hosts: list[str] = msgspec.field(default_factory=list)
    dns: list[str] = msgspec.field(default_factory=list)
    dns_search: list[str] = msgspec.field(default_factory=list)
    dns_options: list[str] = msgspec.field(default_factory=list)
    tmpfs: dict[str, str] = msgspec.field(default_factory=dict)
    shm_size: int = 0
    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    ulimits: list[Ulimit] = msgspec.field(default_factory=list)
    init: bool | None = None
    group_add: list[str] = msgspec.field(default_factory=list)
    ipc_mode: str = ""
    pid_mode: str = ""
    uts_mode: str = msgspec.field(default="", name="UTSMode")
    userns_mode: str = ""
    cgroupns_mode: str = ""
    cgroup_parent: str = ""
    runtime: str = ""
    sysctls: dict[str, str] = msgspec.field(default_factory=dict)
    volumes_from: list[str] = msgspec.field(default_factory=list)
    restart_policy: dict[str, Any] = msgspec.field(default_factory=dict)
    auto_remove: bool = False
    readonly_rootfs: bool = False
    oom_kill_disable: bool | None = None


class EndpointSettings(_Wire):
    aliases: list[str] = msgspec.field(default_factory=list)


class NetworkingConfig(_Wire):
    endpoints_config: dict[str, EndpointSettings] = msgspec.field(default_factory=dict)


class ContainerSpec(_Wire):
    """The body of ``POST /containers/create``."""

    image: str
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = msgspec.field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    exposed_ports: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    healthcheck: HealthConfig | None = None
    stop_signal: str = ""
    tty: bool = False
    open_stdin: bool = False
    mac_address: str = ""
    host_config: HostConfig = msgspec.field(default_factory=HostConfig)
    networking_config: NetworkingConfig | None = None


class HealthLogEntry(_Wire):
    exit_code: int = 0
    output: str = ""


class Health(_Wire):
    status: str = ""
    log: list[HealthLogEntry] | None = None


class ContainerState(_Wire):
    status: str = ""
    running: bool = False
    exit_code: int = 0
    error: str = ""
    health: Health | None = None


class NetworkEndpoint(_Wire):
    network_i_d: str = msgspec.field(default="", name="NetworkID")
    aliases: list[str] | None = None
    i_p_address: str = msgspec.field(default="", name="IPAddress")


class NetworkSettings(_Wire):
    ports: dict[str, list[PortBinding] | None] | None = None
    networks: dict[str, NetworkEndpoint] | None = None


class ImageConfig(_Wire):
    user: str = ""
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    working_dir: str = ""


class ContainerInfo(_Wire):
    """``GET /containers/{id}/json``, the parts the runner reads."""

    id: str
    name: str = ""
    image: str = ""
    state: ContainerState = msgspec.field(default_factory=ContainerState)
    config: ImageConfig = msgspec.field(default_factory=ImageConfig)
    network_settings: NetworkSettings = msgspec.field(default_factory=NetworkSettings)


class ImageInfo(_Wire):
    id: str
    repo_tags: list[str] | None = None
    repo_digests: list[str] | None = None
    os: str = ""
    architecture: str = ""
    config: ImageConfig | None = None


class ContainerSummary(_Wire):
    id: str
    names: list[str] | None = None
    image: str = ""
    state: str = ""
    created: int = 0
    labels: dict[str, str] | None = None


class NetworkInfo(_Wire):
    id: str
    name: str = ""
    created: str = ""
    driver: str = ""
    labels: dict[str, str] | None = None
    containers: dict[str, Any] | None = None


class VolumeInfo(_Wire):
    name: str
    created_at: str = ""
    mountpoint: str = ""
    labels: dict[str, str] | None = None


class _VolumeList(_Wire):
    volumes: list[VolumeInfo] | None = None


class PathStat(msgspec.Struct):
    """A path in a container, as ``HEAD /containers/{id}/archive`` describes it.

    ``mode`` is a Go ``os.FileMode``: permission bits plus type bits of its own
    (:data:`MODE_TYPE`); ``link_target`` is the fully resolved path of a symlink.
    """

    name: str = ""
    size: int = 0
    mode: int = 0
    link_target: str = msgspec.field(default="", name="linkTarget")


#: Go ``os.ModeSymlink`` and ``os.ModeType`` (every type bit: directory, symlink, device...).
MODE_SYMLINK: Final = 1 << 27
MODE_TYPE: Final = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)


class ExecInfo(_Wire):
    id: str = msgspec.field(default="", name="ID")
    running: bool = False
    exit_code: int | None = None
    pid: int = 0


class VersionComponent(_Wire):
    name: str = ""
    version: str = ""


class VersionInfo(_Wire):
    version: str = ""
    api_version: str = ""
    min_api_version: str = msgspec.field(default="", name="MinAPIVersion")
    os: str = ""
    arch: str = ""
    components: list[VersionComponent] | None = None

    @property
    def podman(self) -> bool:
        return any(part.name == "Podman Engine" for part in self.components or ())


class RegistryAuth(msgspec.Struct, frozen=True):
    """Credentials for one pull; never logged."""

    username: str
    password: str
    server: str = ""

    def header(self) -> str:
        body = msgspec.json.encode(
            {"username": self.username, "password": self.password, "serveraddress": self.server}
        )
        return base64.urlsafe_b64encode(body).decode()


class _Created(_Wire):
    id: str = ""
    warnings: list[str] | None = None


class _Progress(msgspec.Struct):
    status: str = ""
    progress: str = ""
    id: str = ""
    stream: str = ""
    error: str = ""


class _HealthcheckRun(_Wire):
    status: str = ""


class _Wait(_Wire):
    status_code: int = 0


class _Error(msgspec.Struct):
    message: str = ""


# --- the client ---------------------------------------------------------------------------


class DockerClient:
    """One connection pool to one engine; open with :func:`connect`."""

    def __init__(
        self, host: str, http: httpx.AsyncClient, api_version: str, *, podman: bool = False
    ) -> None:
        self.host = host
        self.api_version = api_version
        #: The engine is Podman, whose own (libpod) API is served on the same socket.
        self.podman = podman
        self._http = http

    def _url(self, path: str) -> str:
        if path.startswith("/libpod/"):
            return f"/v{LIBPOD_API_VERSION}{path}"
        return f"/v{self.api_version}{path}"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Iterable[int] = (),
    ) -> httpx.Response:
        """One call; a status >= 400 that is not in ``ok`` becomes an EngineError."""
        request_headers = dict(headers or {})
        if body is not None:
            content = msgspec.json.encode(body)
            request_headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method,
                self._url(path),
                params=_query(params),
                content=content,
                headers=request_headers,
                timeout=_REQUEST_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise _unreachable(self.host, exc) from exc
        _trace(method, path, response.status_code, started)
        if response.status_code >= 400 and response.status_code not in ok:
            raise _engine_error(method, path, response.status_code, response.content)
        return response

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        request_headers = dict(headers or {})
        if body is not None:
            content = msgspec.json.encode(body)
            request_headers["Content-Type"] = "application/json"
        request = self._http.build_request(
            method,
            self._url(path),
            params=_query(params),
            content=content,
            headers=request_headers,
            timeout=_STREAM_TIMEOUT,
        )
        started = time.perf_counter()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _unreachable(self.host, exc) from exc
        try:
            if response.status_code >= 400:
                raise _engine_error(method, path, response.status_code, await response.aread())
            yield response
        except httpx.HTTPError as exc:
            raise _unreachable(self.host, exc) from exc
        finally:
            await response.aclose()
            _trace(method, path, response.status_code, started)

    # --- system ---

    async def ping(self) -> bool:
        """Whether the engine answers ``/_ping``."""
        try:
            response = await self._http.get("/_ping", timeout=_REQUEST_TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def version(self) -> VersionInfo:
        return await self._get_json("/version", VersionInfo)

    # --- images ---

    async def image_inspect(self, ref: str) -> ImageInfo | None:
        """The image, or None when the engine does not have it."""
        response = await self._request("GET", f"/images/{_path(ref)}/json", ok=(404,))
        if response.status_code == 404:
            return None
        return msgspec.json.decode(response.content, type=ImageInfo)

    async def image_pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None = None,
        platform: str = "",
        progress: ProgressHandler | None = None,
    ) -> None:
        """Pull ``ref`` (a tag defaults to ``latest``); an error in the stream raises."""
        name, tag = split_reference(ref)
        params = {"fromImage": name, "tag": tag, "platform": platform or None}
        headers = {"X-Registry-Auth": auth.header()} if auth else {}
        async with self._stream(
            "POST", "/images/create", params=params, headers=headers
        ) as response:
            await _read_progress(response, f"pulling {ref}", progress)

    async def image_build(
        self,
        context: bytes,
        tag: str,
        *,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        platform: str = "",
        progress: ProgressHandler | None = None,
    ) -> None:
        """Build ``tag`` from a tar ``context`` holding ``dockerfile``."""
        params = {
            "t": tag,
            "dockerfile": dockerfile,
            "buildargs": msgspec.json.encode(dict(build_args or {})).decode(),
            "rm": "1",
            "forcerm": "1",
            "platform": platform or None,
        }
        async with self._stream(
            "POST",
            "/build",
            params=params,
            content=context,
            headers={"Content-Type": "application/x-tar"},
        ) as response:
            await _read_progress(response, f"building {tag}", progress)

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        await self._request("DELETE", f"/images/{_path(ref)}", params={"force": force})

    # --- containers ---

    async def container_create(self, name: str, spec: ContainerSpec) -> str:
        response = await self._request(
            "POST", "/containers/create", params={"name": name}, body=spec
        )
        return msgspec.json.decode(response.content, type=_Created).id

    async def container_start(self, container: str) -> None:
        await self._request("POST", f"/containers/{_path(container)}/start")

    async def container_wait(self, container: str) -> int:
        """Wait until the container stops; its exit code."""
        async with self._stream("POST", f"/containers/{_path(container)}/wait") as response:
            body = await response.aread()
        return msgspec.json.decode(body, type=_Wait).status_code

    async def container_inspect(self, container: str) -> ContainerInfo:
        return await self._get_json(f"/containers/{_path(container)}/json", ContainerInfo)

    async def container_healthcheck(self, container: str) -> str | None:
        """Run a Podman container's health check once; the probe's verdict (``healthy`` or
        ``unhealthy``), None when the container has no health check or is not running.

        Podman runs health checks from systemd timers, so without systemd only this call
        runs them; the container's health status (``inspect``) is updated by it.
        """
        response = await self._request(
            "GET", f"/libpod/containers/{_path(container)}/healthcheck", ok=(409,)
        )
        if response.status_code == 409:
            return None
        return msgspec.json.decode(response.content, type=_HealthcheckRun).status

    async def container_logs(self, container: str, *, tail: str = "all") -> bytes:
        """Stdout and stderr of a container without a TTY, merged in arrival order."""
        chunks: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            chunks.append(chunk)

        params = {"stdout": True, "stderr": True, "tail": tail}
        async with self._stream(
            "GET", f"/containers/{_path(container)}/logs", params=params
        ) as response:
            await demultiplex(response.aiter_raw(), collect)
        return b"".join(chunks)

    async def container_follow(self, container: str, output: OutputHandler) -> None:
        """Deliver a container's stdout and stderr from its start until it stops."""
        params = {"stdout": True, "stderr": True, "follow": True}
        async with self._stream(
            "GET", f"/containers/{_path(container)}/logs", params=params
        ) as response:
            await demultiplex(response.aiter_raw(), output)

    async def container_kill(self, container: str, signal: str = "SIGKILL") -> None:
        await self._request(
            "POST", f"/containers/{_path(container)}/kill", params={"signal": signal}
        )

    async def container_remove(
        self, container: str, *, force: bool = True, volumes: bool = False
    ) -> bool:
        """Remove a container; False when it was already gone."""
        response = await self._request(
            "DELETE",
            f"/containers/{_path(container)}",
            params={"force": force, "v": volumes},
            ok=(404,),
        )
        return response.status_code != 404

    async def containers_list(
        self, labels: Mapping[str, str] | Sequence[str] = (), *, all: bool = True
    ) -> list[ContainerSummary]:
        params = {"all": all, "filters": _label_filter(labels)}
        response = await self._request("GET", "/containers/json", params=params)
        return msgspec.json.decode(response.content, type=list[ContainerSummary])

    async def archive_put(self, container: str, path: str, tar: bytes) -> None:
        """Extract a tar archive into directory ``path`` of the container."""
        await self._request(
            "PUT",
            f"/containers/{_path(container)}/archive",
            params={"path": path},
            content=tar,
            headers={"Content-Type": "application/x-tar"},
        )

    async def archive_get(self, container: str, path: str) -> bytes:
        """A tar archive of ``path`` (file or directory) in the container."""
        response = await self._request(
            "GET", f"/containers/{_path(container)}/archive", params={"path": path}
        )
        return response.content

    @contextlib.asynccontextmanager
    async def archive_stream(
        self, container: str, path: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Like :meth:`archive_get`, as the chunks of the tar stream arrive."""
        async with self._stream(
            "GET", f"/containers/{_path(container)}/archive", params={"path": path}
        ) as response:
            yield response.aiter_raw()

    async def archive_stat(self, container: str, path: str) -> PathStat | None:
        """What ``path`` is in the container (symlinks not followed); None when absent."""
        response = await self._request(
            "HEAD", f"/containers/{_path(container)}/archive", params={"path": path}, ok=(404,)
        )
        if response.status_code == 404:
            return None
        header = response.headers.get("X-Docker-Container-Path-Stat", "")
        try:
            return msgspec.json.decode(base64.b64decode(header), type=PathStat)
        except (ValueError, msgspec.DecodeError):
            raise EngineError(f"container engine: no readable stat of {path}") from None

    # --- exec ---

    async def exec_create(
        self,
        container: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str = "",
        privileged: bool = False,
    ) -> str:
        body: dict[str, Any] = {
            "Cmd": list(argv),
            "Env": [f"{key}={value}" for key, value in (env or {}).items()],
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "Privileged": privileged,
        }
        if cwd:
            body["WorkingDir"] = cwd
        if user:
            body["User"] = user
        response = await self._request("POST", f"/containers/{_path(container)}/exec", body=body)
        return msgspec.json.decode(response.content, type=_Created).id

    async def exec_start(self, exec_id: str, output: OutputHandler) -> None:
        """Run a created exec, delivering stdout and stderr to ``output`` until it ends."""
        async with self._stream(
            "POST", f"/exec/{exec_id}/start", body={"Detach": False, "Tty": False}
        ) as response:
            await demultiplex(response.aiter_raw(), output)

    async def exec_inspect(self, exec_id: str) -> ExecInfo:
        return await self._get_json(f"/exec/{exec_id}/json", ExecInfo)

    async def exec_exit_code(self, exec_id: str) -> int:
        """The exit code of an exec whose output has ended.

        The engine may publish the code a moment after closing the stream.
        """
        with trio.move_on_after(_EXEC_EXIT_WAIT):
            while True:
                info = await self.exec_inspect(exec_id)
                if not info.running and info.exit_code is not None:
                    return info.exit_code
                await trio.sleep(_EXEC_EXIT_POLL)
        raise EngineError(f"exec {exec_id[:12]} ended without an exit code")

    async def exec_run(
        self,
        container: str,
        argv: Sequence[str],
        *,
        output: OutputHandler,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str = "",
    ) -> int:
        """Create, run and await one exec; its exit code."""
        exec_id = await self.exec_create(container, argv, env=env, cwd=cwd, user=user)
        await self.exec_start(exec_id, output)
        return await self.exec_exit_code(exec_id)

    # --- networks ---

    async def network_create(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        driver: str = "bridge",
        enable_ipv6: bool | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "Name": name,
            "Driver": driver,
            "Labels": dict(labels or {}),
            "CheckDuplicate": True,
        }
        if enable_ipv6 is not None:
            body["EnableIPv6"] = enable_ipv6
        response = await self._request("POST", "/networks/create", body=body)
        return msgspec.json.decode(response.content, type=_Created).id

    async def network_inspect(self, network: str) -> NetworkInfo | None:
        response = await self._request("GET", f"/networks/{_path(network)}", ok=(404,))
        if response.status_code == 404:
            return None
        return msgspec.json.decode(response.content, type=NetworkInfo)

    async def network_remove(self, network: str) -> bool:
        """Remove a network; False when it was already gone."""
        response = await self._request("DELETE", f"/networks/{_path(network)}", ok=(404,))
        return response.status_code != 404

    async def networks_list(
        self, labels: Mapping[str, str] | Sequence[str] = ()
    ) -> list[NetworkInfo]:
        response = await self._request(
            "GET", "/networks", params={"filters": _label_filter(labels)}
        )
        return msgspec.json.decode(response.content, type=list[NetworkInfo])

    async def network_connect(
        self, network: str, container: str, *, aliases: Sequence[str] = ()
    ) -> None:
        body = {"Container": container, "EndpointConfig": {"Aliases": list(aliases)}}
        await self._request("POST", f"/networks/{_path(network)}/connect", body=body)

    # --- volumes ---

    async def volume_create(
        self, name: str, *, labels: Mapping[str, str] | None = None
    ) -> VolumeInfo:
        response = await self._request(
            "POST", "/volumes/create", body={"Name": name, "Labels": dict(labels or {})}
        )
        return msgspec.json.decode(response.content, type=VolumeInfo)

    async def volume_remove(self, name: str, *, force: bool = True) -> bool:
        """Remove a volume; False when it was already gone."""
        response = await self._request(
            "DELETE", f"/volumes/{_path(name)}", params={"force": force}, ok=(404,)
        )
        return response.status_code != 404

    async def volumes_list(
        self, labels: Mapping[str, str] | Sequence[str] = ()
    ) -> list[VolumeInfo]:
        response = await self._request("GET", "/volumes", params={"filters": _label_filter(labels)})
        return msgspec.json.decode(response.content, type=_VolumeList).volumes or []

    async def _get_json(self, path: str, kind: type[_T]) -> _T:
        response = await self._request("GET", path)
        return msgspec.json.decode(response.content, type=kind)


@contextlib.asynccontextmanager
async def connect(host: str) -> AsyncIterator[DockerClient]:
    """Open a client to the engine at ``host`` (``unix://path`` or ``tcp://host:port``).

    The API version is the preferred one unless the engine's minimum is newer, or its
    maximum older.
    """
    # The engine is spoken to in plain HTTP (never TLS), so no certificate store is loaded:
    # reading the default one costs about 100 ms per process.
    if path := socket_path(host):
        transport = httpx.AsyncHTTPTransport(uds=path, verify=False)
        base_url = "http://docker"
    elif host.startswith(("tcp://", "http://")):
        transport = httpx.AsyncHTTPTransport(verify=False)
        base_url = "http://" + host.split("://", 1)[1]
    else:
        raise EngineError(f"unsupported docker host {host!r}: expected unix:// or tcp://")
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        api_version, podman = await _identify(host, http)
        yield DockerClient(host, http, api_version, podman=podman)


async def _identify(host: str, http: httpx.AsyncClient) -> tuple[str, bool]:
    """The API version to speak and whether the engine is Podman, from ``/_ping`` when
    that suffices, else ``/version``.

    ``/_ping`` names the engine's newest API version in a header and answers at once,
    where Podman takes about 400 ms for ``/version`` (it asks conmon and the OCI runtime
    for theirs); Podman adds a ``Libpod-Api-Version`` header. Only an engine newer than
    the preferred version may have raised its minimum past it, which ``/version`` tells.
    """
    ping = await _get(host, http, "/_ping")
    if ping.status_code == 200 and (chosen := version_from_ping(ping.headers.get("Api-Version"))):
        return chosen, "Libpod-Api-Version" in ping.headers
    response = await _get(host, http, "/version")
    if response.status_code != 200:
        raise _engine_error("GET", "/version", response.status_code, response.content)
    info = msgspec.json.decode(response.content, type=VersionInfo)
    return negotiate_version(info), info.podman


async def _get(host: str, http: httpx.AsyncClient, path: str) -> httpx.Response:
    started = time.perf_counter()
    try:
        response = await http.get(path, timeout=_REQUEST_TIMEOUT)
    except httpx.HTTPError as exc:
        raise _unreachable(host, exc) from exc
    _trace("GET", path, response.status_code, started)
    return response


def version_from_ping(maximum: str | None) -> str | None:
    """The version to speak given the ``Api-Version`` of ``/_ping``: the engine's newest
    when it is not newer than the preferred one; None when ``/version`` must decide."""
    major, dot, minor = (maximum or "").strip().partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        return None
    newest = (int(major), int(minor))
    return f"{newest[0]}.{newest[1]}" if newest <= PREFERRED_API_VERSION else None


def negotiate_version(info: VersionInfo) -> str:
    """The preferred API version, raised to the engine's minimum when that is newer."""
    chosen = PREFERRED_API_VERSION
    if info.min_api_version and (minimum := _parse_version(info.min_api_version)) > chosen:
        chosen = minimum
    return f"{chosen[0]}.{chosen[1]}"


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def split_reference(ref: str) -> tuple[str, str]:
    """``name[:tag][@digest]`` → (name, tag or digest); the tag defaults to ``latest``."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


# --- streams and archives -----------------------------------------------------------------

_FRAME_HEADER = struct.Struct(">BxxxL")


async def demultiplex(chunks: AsyncIterator[bytes], output: OutputHandler) -> None:
    """Forward the payloads of the engine's stdout/stderr frame stream in order."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= _FRAME_HEADER.size:
            _stream_type, size = _FRAME_HEADER.unpack_from(buffer)
            end = _FRAME_HEADER.size + size
            if len(buffer) < end:
                break
            payload = bytes(buffer[_FRAME_HEADER.size : end])
            del buffer[:end]
            if payload:
                await output(payload)


async def _read_progress(
    response: httpx.Response, action: str, progress: ProgressHandler | None
) -> None:
    """Forward a pull/build JSON-lines stream; an ``error`` entry raises EngineError."""
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        try:
            entry = msgspec.json.decode(line, type=_Progress)
        except msgspec.DecodeError:
            entry = _Progress(stream=line)
        if entry.error:
            raise EngineError(f"{action}: {entry.error.strip()}")
        text = entry.stream.rstrip("\n") or " ".join(
            part for part in (entry.id, entry.status, entry.progress) if part
        )
        if progress is not None and text:
            await progress(text)


def tar_single_file(name: str, data: bytes, mode: int) -> bytes:
    """A tar archive holding one regular file ``name`` owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def untar_single_file(tar: bytes, path: str) -> bytes:
    """The content of the regular file in an archive returned for ``path``."""
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r") as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                return extracted.read()
    raise IsADirectoryError(f"{path} is not a regular file")


# --- helpers ------------------------------------------------------------------------------


def _trace(method: str, path: str, status: int, started: float) -> None:
    if log.isEnabledFor(logging.DEBUG):
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("%s %s -> %d in %.0f ms", method, path, status, elapsed)


def _path(segment: str) -> str:
    return quote(segment, safe="")


def _query(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Engine query strings: booleans as 1/0, None left out."""
    query: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        query[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return query


def _label_filter(labels: Mapping[str, str] | Sequence[str]) -> str | None:
    if not labels:
        return None
    items = (
        [f"{key}={value}" for key, value in labels.items()]
        if isinstance(labels, Mapping)
        else list(labels)
    )
    return msgspec.json.encode({"label": items}).decode()


def _engine_error(method: str, path: str, status: int, body: bytes) -> EngineError:
    try:
        message = msgspec.json.decode(body, type=_Error).message
    except msgspec.DecodeError:
        message = body.decode(errors="replace").strip()
    text = f"container engine: {message or f'HTTP {status}'} ({method} {path})"
    kind = NotFoundError if status == 404 else EngineError
    return kind(text, status)


def _unreachable(host: str, exc: httpx.HTTPError) -> EngineError:
    return EngineError(f"container engine at {host} is not reachable: {exc}")
