"""HTTP face of the fake Gitea: Connect unary routes on Quart-Trio, served by hypercorn.

Applies the transport rules of spec section 1 strictly (POST only, exact content types,
gzip, ``{}`` bodies), the injected faults, Connect-Timeout-Ms, and renders errors the way
Gitea does. ``serve_fake_gitea`` runs it on 127.0.0.1 inside the caller's trio loop.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from trio_runner.gitea.messages import (
    DeclareRequest,
    FetchTaskRequest,
    PingRequest,
    RegisterRequest,
    UpdateLogRequest,
    UpdateTaskRequest,
)

from .state import FakeGitea, Fault
from .wire import STATUS_FOR_CODE, DecodeProblem, RpcError, decode_request, encode_answer

CAPABILITIES_HEADER = "X-Gitea-Actions-Capabilities"
ACCEPTED_CONTENT_TYPES = ("application/json", "application/json; charset=utf-8")
GZIP_MIN_SIZE = 1024

# procedure -> (method name, request type)
PROCEDURES: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "ping.v1.PingService/Ping": ("Ping", PingRequest),
    "runner.v1.RunnerService/Register": ("Register", RegisterRequest),
    "runner.v1.RunnerService/Declare": ("Declare", DeclareRequest),
    "runner.v1.RunnerService/FetchTask": ("FetchTask", FetchTaskRequest),
    "runner.v1.RunnerService/UpdateTask": ("UpdateTask", UpdateTaskRequest),
    "runner.v1.RunnerService/UpdateLog": ("UpdateLog", UpdateLogRequest),
}

_PROXY_PAGE = "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"


def _json_response(payload: bytes, status: int, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if len(payload) >= GZIP_MIN_SIZE and "gzip" in request.headers.get("Accept-Encoding", ""):
        payload = gzip.compress(payload, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return Response(payload, status=status, headers=headers, content_type="application/json")


def _error_response(gitea: FakeGitea, error: RpcError) -> Response:
    body, status = error.body_and_status(gitea.connect_codes)
    return _json_response(msgspec.json.encode(body), status)


def _bare_response(status: int) -> Response:
    return Response(_PROXY_PAGE.format(status=status), status=status, content_type="text/html")


def _fault_response(fault: Fault) -> Response:
    assert fault.status is not None
    if not fault.connect_body:
        return _bare_response(fault.status)
    code = fault.code or next(
        (c for c, s in STATUS_FOR_CODE.items() if s == fault.status), "unknown"
    )
    body = msgspec.json.encode({"code": code, "message": fault.message})
    return Response(body, status=fault.status, content_type="application/json")


def _connect_timeout_ms() -> int | None:
    raw = request.headers.get("Connect-Timeout-Ms", "")
    return int(raw) if raw.isdigit() else None


def _handler(
    gitea: FakeGitea, method: str, message: Any, headers: dict[str, str]
) -> tuple[Callable[[], msgspec.Struct], str | int | None, int | None]:
    """The call to run, the key that must not be in flight twice, and the task it concerns."""
    if method == "Ping":
        return partial(gitea.ping, message), None, None
    if method == "Register":
        return partial(gitea.register, message), None, None
    runner = gitea.authenticate(headers)
    if method == "Declare":
        return partial(gitea.declare, runner, message), None, None
    if method == "FetchTask":
        return partial(gitea.fetch_task, runner, message), runner.uuid, None
    if method == "UpdateTask":
        task_id = message.state.id
        return partial(gitea.update_task, runner, message), task_id, task_id
    task_id = message.task_id
    return partial(gitea.update_log, runner, message), task_id, task_id


async def _handle(gitea: FakeGitea, method: str, request_type: type[msgspec.Struct]) -> Response:
    client = request.scope.get("client")
    gitea.record_call(method, f"{client[0]}:{client[1]}" if client else "unknown")
    fault = gitea.take_fault(method)
    # Read the whole request first, even when answering a fault: an answer that leaves the
    # body unread can stall the next request on the same keep-alive connection.
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    if fault is not None and fault.status is not None:
        return _fault_response(fault)
    content_type = request.headers.get("Content-Type", "")
    if content_type not in ACCEPTED_CONTENT_TYPES:
        gitea.violation(f"{method}: unsupported Content-Type {content_type!r}")
        return Response("", status=415, headers={"Accept-Post": ", ".join(ACCEPTED_CONTENT_TYPES)})
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return _error_response(gitea, RpcError("invalid_argument", "bad gzip request body"))
    elif encoding != "identity":
        return _error_response(gitea, RpcError("unimplemented", f"unknown encoding {encoding}"))
    timeout_ms = _connect_timeout_ms()
    if method == "FetchTask":
        gitea.connect_timeouts.append(timeout_ms)
    try:
        message = decode_request(body, request_type)
    except DecodeProblem as problem:
        gitea.violation(f"{method}: {problem.violation}", problem.task_id)
        return _error_response(gitea, RpcError("invalid_argument", problem.message))
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        call, key, task_id = _handler(gitea, method, message, headers)
        with gitea.in_flight(method, key, task_id):
            if fault is not None and fault.delay:
                timeout = fault.delay if timeout_ms is None else timeout_ms / 1000
                await trio.sleep(min(fault.delay, timeout))
                if timeout < fault.delay:
                    # The server gives up (and does not apply the call) at the client's deadline.
                    return _error_response(
                        gitea, RpcError("deadline_exceeded", "the operation timed out")
                    )
            answer = call()
    except RpcError as error:
        if fault is not None and fault.lose:
            return _bare_response(503)
        return _error_response(gitea, error)
    if fault is not None and fault.lose:
        return _bare_response(503)
    extra = {}
    if method == "Declare" and gitea.server_capabilities is not None:
        extra[CAPABILITIES_HEADER] = gitea.server_capabilities
    return _json_response(encode_answer(answer), 200, extra)


def create_app(gitea: FakeGitea, prefix: str = "") -> QuartTrio:
    """The Quart-Trio app answering the six procedures below ``prefix``/api/actions."""
    app = QuartTrio("fake_gitea")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

    @app.route(f"{prefix}/api/actions/<service>/<method>", methods=["POST"])
    async def rpc(service: str, method: str) -> Response:
        procedure = PROCEDURES.get(f"{service}/{method}")
        if procedure is None:
            return Response("404 page not found", status=404, content_type="text/plain")
        return await _handle(gitea, *procedure)

    return app


@asynccontextmanager
async def serve_fake_gitea(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    prefix: str = "",
    connect_codes: bool = False,
    server_capabilities: str | None = "job-summary",
) -> AsyncIterator[FakeGitea]:
    """Serve a fresh FakeGitea until the block ends; ``gitea.url`` ends with ``/``.

    ``prefix`` serves it below a sub-path (e.g. ``/gitea``), like a Gitea behind a proxy.
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    gitea = FakeGitea(connect_codes=connect_codes, server_capabilities=server_capabilities)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, create_app(gitea, prefix), config))
        gitea.url = f"{binds[0]}{prefix}/"
        try:
            yield gitea
        finally:
            nursery.cancel_scope.cancel()
