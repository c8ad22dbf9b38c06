"""RunnerClient: the six calls of the runner protocol against one Gitea address.

Owns the base-URL rules (spec 1.1), the per-call headers (x-runner-* credentials, user
agent, Connect-Timeout-Ms for FetchTask), one keep-alive connection pool per client, and a
small bounded retry helper with exponential backoff and jitter for callers that want one.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import httpx
import msgspec
import trio

from trio_runner import __version__
from trio_runner.errors import ConfigError
from trio_runner.gitea.connect import ConnectError, unary
from trio_runner.gitea.messages import (
    DeclareRequest,
    DeclareResponse,
    FetchTaskRequest,
    FetchTaskResponse,
    PingRequest,
    PingResponse,
    RegisterRequest,
    RegisterResponse,
    UpdateLogRequest,
    UpdateLogResponse,
    UpdateTaskRequest,
    UpdateTaskResponse,
)

__all__ = [
    "CAPABILITIES_HEADER",
    "DEFAULT_TIMEOUT",
    "RunnerClient",
    "api_base_url",
    "retry",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
CAPABILITIES_HEADER = "X-Gitea-Actions-Capabilities"
_PING = "ping.v1.PingService"
_RUNNER = "runner.v1.RunnerService"
# The Go runner keeps up to 10 idle connections per server.
_POOL_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)


def api_base_url(address: str) -> str:
    """``address`` without trailing slashes, plus ``/api/actions`` (spec 1.1).

    Raises ConfigError when the address is not an absolute http(s) URL.
    """
    try:
        url = httpx.URL(address.strip())
    except httpx.InvalidURL as exc:
        raise ConfigError(f"invalid Gitea address {address!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host or not 0 < (url.port or 1) < 65536:
        raise ConfigError(
            f"invalid Gitea address {address!r}: expected http://host[:port][/path] "
            "or https://host[:port][/path]"
        )
    if url.query or url.fragment:
        raise ConfigError(f"invalid Gitea address {address!r}: no query or fragment allowed")
    return address.strip().rstrip("/") + "/api/actions"


def _connect_timeout_ms(timeout: float) -> int:
    """A server-side deadline a little below the client's, so the server gives up first."""
    return max(1, int((timeout - min(1.0, timeout * 0.1)) * 1000))


class RunnerClient:
    """An async context manager holding one HTTP connection pool for one Gitea address.

    ``uuid``/``token`` are the runner credentials for the x-runner-* headers (omitted when
    empty). ``insecure`` skips TLS verification (only meaningful for https). ``timeout``
    bounds every call. Proxies come from the environment. Every method raises
    ConnectError on failure.
    """

    def __init__(
        self,
        address: str,
        *,
        uuid: str = "",
        token: str = "",
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.address = address
        self.base_url = api_base_url(address)
        self.uuid = uuid
        self.token = token
        self.timeout = timeout
        self._insecure = insecure
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(
            verify=not self._insecure,
            trust_env=True,
            timeout=self.timeout,
            limits=_POOL_LIMITS,
            headers={
                "User-Agent": f"trio-runner/{__version__}",
                "Connect-Protocol-Version": "1",
            },
            transport=self._transport,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await http.aclose()

    def _auth_headers(self) -> dict[str, str]:
        headers = {}
        if self.uuid:
            headers["x-runner-uuid"] = self.uuid
        if self.token:
            headers["x-runner-token"] = self.token
        return headers

    async def _call(
        self,
        service: str,
        method: str,
        request: msgspec.Struct,
        response_type: type[T],
        *,
        headers: dict[str, str] | None = None,
        call_timeout: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> tuple[T, httpx.Headers]:
        if self._http is None:
            raise RuntimeError("RunnerClient used outside 'async with'")
        return await unary(
            self._http,
            f"{self.base_url}/{service}/{method}",
            request,
            response_type,
            headers=headers,
            call_timeout=self.timeout if call_timeout is None else call_timeout,
            secrets=(self.token, *secrets),
        )

    async def ping(self, data: str) -> PingResponse:
        answer, _ = await self._call(_PING, "Ping", PingRequest(data=data), PingResponse)
        return answer

    async def register(self, request: RegisterRequest) -> RegisterResponse:
        """Not idempotent: never repeat it after a timeout (see ``retry(idempotent=False)``)."""
        answer, _ = await self._call(
            _RUNNER, "Register", request, RegisterResponse, secrets=(request.token,)
        )
        return answer

    async def declare(self, request: DeclareRequest) -> tuple[DeclareResponse, str]:
        """Declare labels and capabilities; also returns the server's capabilities header."""
        answer, headers = await self._call(
            _RUNNER, "Declare", request, DeclareResponse, headers=self._auth_headers()
        )
        return answer, headers.get(CAPABILITIES_HEADER, "").strip()

    async def fetch_task(self, tasks_version: int, timeout: float) -> FetchTaskResponse:  # noqa: ASYNC109 (also sent to the server as Connect-Timeout-Ms)
        """One poll. ``timeout`` bounds the call; the server is told to give up a bit sooner."""
        timeout = min(timeout, self.timeout)
        headers = self._auth_headers()
        headers["Connect-Timeout-Ms"] = str(_connect_timeout_ms(timeout))
        answer, _ = await self._call(
            _RUNNER,
            "FetchTask",
            FetchTaskRequest(tasks_version=tasks_version),
            FetchTaskResponse,
            headers=headers,
            call_timeout=timeout,
        )
        return answer

    async def update_task(self, request: UpdateTaskRequest) -> UpdateTaskResponse:
        answer, _ = await self._call(
            _RUNNER, "UpdateTask", request, UpdateTaskResponse, headers=self._auth_headers()
        )
        return answer

    async def update_log(self, request: UpdateLogRequest) -> UpdateLogResponse:
        answer, _ = await self._call(
            _RUNNER, "UpdateLog", request, UpdateLogResponse, headers=self._auth_headers()
        )
        return answer


def _default_should_retry(error: ConnectError) -> bool:
    return error.is_transient


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    idempotent: bool = True,
    should_retry: Callable[[ConnectError], bool] = _default_should_retry,
    on_retry: Callable[[ConnectError, int, float], None] | None = None,
) -> T:
    """Run ``call`` up to ``attempts`` times, sleeping with exponential backoff between.

    A ConnectError is retried when ``should_retry`` says so (default: transient errors)
    and, for a non-``idempotent`` call such as Register, only when the request never
    reached the server. The delay before attempt n+1 is ``base_delay * 2**(n-1)`` capped
    at ``max_delay``, with +/-20 % jitter. ``on_retry(error, attempt, delay)`` is called
    before each sleep (e.g. to log). The last error is raised when attempts run out.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await call()
        except ConnectError as error:
            retryable = should_retry(error) and (idempotent or not error.sent)
            if not retryable or attempt >= attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.2)
            if on_retry is not None:
                on_retry(error, attempt, delay)
            await trio.sleep(delay)
            attempt += 1
