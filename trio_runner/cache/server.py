"""Running the cache server and giving jobs access to a cache.

* :func:`run_cache_server` / :func:`serve_cache` serve the app with hypercorn inside the
  caller's nursery and hand back a :class:`CacheService`.
* :meth:`CacheService.job_token` and :meth:`RemoteCache.job_token` are the per-task
  credential: an async context manager that registers the job token on entry and revokes
  it on exit, however the task ends.
* :func:`outbound_ip` picks the address jobs reach the server at when ``cache.host`` is
  empty.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, cast

import httpx
import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve, tcp_server
from hypercorn.typing import ASGIFramework

from trio_runner.cache.app import create_app
from trio_runner.cache.auth import Credential, TokenRegistry, UrlSigner, load_signing_key
from trio_runner.cache.settings import CacheSettings
from trio_runner.cache.state import CacheState
from trio_runner.cache.store import Store
from trio_runner.errors import ConfigError, RunnerError

log = logging.getLogger(__name__)

REMOTE_TIMEOUT = 5.0
#: Bytes hypercorn asks of a socket per read (its default is 64 KiB). Upload bodies arrive
#: in pieces of up to this size, so a 32 MiB part is 128 trips through the protocol stack
#: and the body loop instead of 512. hypercorn reads the value at each call, and it only
#: caps a read: short requests still read what is there. Larger reads save little CPU
#: but each one is held three times over (socket read, h11 buffer, body piece) per upload.
SOCKET_READ_SIZE = 256 * 1024
#: Body pieces hypercorn queues per request. The store overlaps receiving and writing
#: itself, within a budget of bytes (``store.WRITE_BUFFER``), so this queue only needs to
#: hand over one piece at a time.
APP_QUEUE_SIZE = 1
Warn = Callable[[str], None]


class JobCache(Protocol):
    """What a task needs from a cache, embedded or remote."""

    @property
    def url(self) -> str:
        """``ACTIONS_CACHE_URL``: the base URL with exactly one trailing slash."""
        ...

    def job_token(
        self,
        token: str,
        repository: str,
        *,
        results: str = "",
        insecure_tls: bool = False,
        warn: Warn | None = None,
    ) -> contextlib.AbstractAsyncContextManager[str]:
        """Accept ``token`` as ``repository`` while the context is open.

        ``results`` is the Gitea origin the job's artifact calls go to (``insecure_tls``:
        without TLS verification). The context yields the job's ``ACTIONS_RESULTS_URL``
        when the server forwards those calls (spec 12.6), else an empty string.
        """
        ...


@dataclass(frozen=True, slots=True)
class CacheService:
    """A running embedded or standalone server."""

    url: str
    state: CacheState

    @contextlib.asynccontextmanager
    async def job_token(
        self,
        token: str,
        repository: str,
        *,
        results: str = "",
        insecure_tls: bool = False,
        warn: Warn | None = None,
    ) -> AsyncIterator[str]:
        """Register ``token`` (reference counted) for the body of the ``async with``; yields
        :attr:`url` when the job's artifact calls are forwarded to ``results``.

        In-process registration cannot fail, so ``warn`` is never called; it is accepted
        so callers treat embedded and remote caches alike. Revocation is synchronous, so
        cancellation cannot skip it.
        """
        if not token:
            yield ""
            return
        self.state.registry.register(token, Credential(repository, results, insecure_tls))
        try:
            yield self.url if results else ""
        finally:
            self.state.registry.revoke(token)


def outbound_ip() -> str:
    """The local address of the default route, found without sending a packet: a UDP
    socket's connect() only selects a route. Falls back to this host's first global
    unicast address."""
    for family, target in (
        (socket.AF_INET, ("8.8.8.8", 80)),
        (socket.AF_INET6, ("2001:4860:4860::8888", 80)),
    ):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(target)
                address = str(probe.getsockname()[0])
        except OSError:
            continue
        if _global_unicast(address):
            return address
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        infos = []
    for info in infos:
        address = str(info[4][0])
        if _global_unicast(address):
            return address
    raise RunnerError("unable to determine outbound IP address")


def _global_unicast(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def run_cache_server(
    settings: CacheSettings,
    *,
    task_status: trio.TaskStatus[CacheService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``await nursery.start(run_cache_server, settings)`` returns
    the :class:`CacheService` once the socket is bound and the store is open."""
    if settings.host == "0.0.0.0":
        raise ConfigError("cache.host 0.0.0.0 is not an address jobs can reach; leave it empty")
    tcp_server.MAX_RECV = max(tcp_server.MAX_RECV, SOCKET_READ_SIZE)
    host = settings.host or await trio.to_thread.run_sync(outbound_ip)
    key = await trio.to_thread.run_sync(load_signing_key, settings.dir)
    store = Store(settings.dir, settings.policy)
    await store.open()
    state = CacheState(store, TokenRegistry(), UrlSigner(key), settings.shared_secret)
    try:
        config = Config()
        config.bind = [f"{_url_host(settings.bind_host)}:{settings.port}"]
        config.accesslog = None
        config.errorlog = log
        # An upload in transit then holds about 2 x WRITE_BUFFER + 3 x SOCKET_READ_SIZE.
        config.max_app_queue_size = APP_QUEUE_SIZE
        async with trio.open_nursery() as nursery:
            # hypercorn types the ASGI callable with its own TypedDicts; ours takes mappings.
            app = cast(ASGIFramework, create_app(state))
            binds: list[str] = await nursery.start(partial(serve, app, config))
            port = binds[0].rsplit(":", 1)[1]
            state.base_url = f"http://{_url_host(host)}:{port}"
            nursery.start_soon(store.run_background)
            task_status.started(CacheService(state.base_url + "/", state))
    finally:
        with trio.CancelScope(shield=True):
            await state.forwarder.aclose()
            await store.close()


@contextlib.asynccontextmanager
async def serve_cache(settings: CacheSettings) -> AsyncIterator[CacheService]:
    """A running server for the body of the ``async with``, stopped on exit."""
    async with trio.open_nursery() as nursery:
        service: CacheService = await nursery.start(run_cache_server, settings)
        try:
            yield service
        finally:
            nursery.cancel_scope.cancel()


class RemoteCache:
    """A standalone server used by this runner (``cache.external_server``)."""

    def __init__(self, server_url: str, shared_secret: str) -> None:
        if not shared_secret:
            raise ConfigError(
                "cache.external_server is set but no shared secret is configured"
                " (cache.external_secret or cache.external_secret_file)"
            )
        self._base = server_url.rstrip("/")
        self._secret = shared_secret

    @property
    def url(self) -> str:
        return self._base + "/"

    async def _call(
        self, operation: str, body: dict[str, object], warn: Warn | None
    ) -> httpx.Response | None:
        """The server's 2xx answer, or None after warning that the call failed."""
        try:
            async with httpx.AsyncClient(timeout=REMOTE_TIMEOUT) as client:
                response = await client.post(
                    f"{self._base}/_internal/{operation}",
                    json=body,
                    headers={"Authorization": f"Bearer {self._secret}"},
                )
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}"
        else:
            if response.is_success:
                return response
            problem = f"HTTP {response.status_code}"
        message = (
            f"cache server {self._base}: {operation} of the job token failed ({problem});"
            " cache requests of this job will be refused (401)"
        )
        log.warning("%s", message)
        if warn is not None:
            warn(message)
        return None

    @contextlib.asynccontextmanager
    async def job_token(
        self,
        token: str,
        repository: str,
        *,
        results: str = "",
        insecure_tls: bool = False,
        warn: Warn | None = None,
    ) -> AsyncIterator[str]:
        """Register remotely before the body and revoke after it (shielded, bounded).
        A failure goes to ``warn`` (the job log) and the daemon log; the job goes on.

        Yields :attr:`url` when the server says it forwards the job's artifact calls (a
        non-empty ``results_url``; the job still reaches it at the configured address,
        spec 5.6), else an empty string.
        """
        if not token:
            yield ""
            return
        registration = {
            "token": token,
            "repo": repository,
            "results": results,
            "insecure_tls": insecure_tls,
            "public_url": self._base,
        }
        answer = await self._call("register", registration, warn)
        try:
            yield self.url if answer is not None and _forwards(answer) else ""
        finally:
            if answer is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(REMOTE_TIMEOUT + 1):
                    await self._call("revoke", {"token": token}, warn)


class _RegisterAnswer(msgspec.Struct):
    results_url: str = ""


def _forwards(answer: httpx.Response) -> bool:
    """An unparsable or empty answer means "no forwarding" (spec 5.6)."""
    try:
        return bool(msgspec.json.decode(answer.content, type=_RegisterAnswer).results_url)
    except msgspec.MsgspecError:
        return False
