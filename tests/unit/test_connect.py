"""One Connect unary call: request shape, answer decoding, error classification (spec 2, 3, 14)."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import trio

from trio_runner.gitea.connect import ConnectError, code_for_status, unary
from trio_runner.gitea.messages import (
    FetchTaskResponse,
    LogRow,
    PingRequest,
    PingResponse,
    Result,
    UpdateLogRequest,
    UpdateTaskResponse,
)

URL = "http://127.0.0.1:1/api/actions/runner.v1.RunnerService/FetchTask"
TOKEN = "3c0f6b1c9e8a4d2f7b5e1a0c9d8e7f6a5b4c3d2e"

Handler = Callable[[httpx.Request], httpx.Response]


async def call_with(
    handler: Handler,
    request: msgspec.Struct | None = None,
    response_type: type[msgspec.Struct] = FetchTaskResponse,
    **kwargs: Any,
) -> tuple[object, httpx.Headers]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await unary(
            http,
            URL,
            request if request is not None else PingRequest(),
            response_type,
            **kwargs,
        )


async def error_for(handler: Handler, **kwargs: Any) -> ConnectError:
    with pytest.raises(ConnectError) as info:
        await call_with(handler, **kwargs)
    return info.value


def answer(status: int, body: bytes | str, content_type: str | None) -> Handler:
    headers = {"content-type": content_type} if content_type else {}
    content = body.encode() if isinstance(body, str) else body
    return lambda request: httpx.Response(status, content=content, headers=headers)


def connect_body(code: str, message: str) -> str:
    return json.dumps({"code": code, "message": message})


JSON = "application/json"
HTML = "text/html"
UNREGISTERED = "rpc error: code = Unauthenticated desc = unregistered runner"


# (status, body, content type) -> (effective code, derived, unregistered, transient)
CLASSIFICATION = [
    pytest.param(
        500,
        connect_body("unknown", UNREGISTERED),
        JSON,
        "unauthenticated",
        False,
        True,
        False,
        id="gitea-unregistered",
    ),
    pytest.param(
        401,
        connect_body("unauthenticated", "unregistered runner"),
        JSON,
        "unauthenticated",
        False,
        True,
        False,
        id="connect-unauthenticated",
    ),
    pytest.param(
        401,
        "<html><h1>401 Authorization Required</h1></html>",
        HTML,
        "unauthenticated",
        True,
        False,
        True,
        id="proxy-401",
    ),
    pytest.param(401, "", None, "unauthenticated", True, False, True, id="bare-401"),
    pytest.param(
        500,
        connect_body("unknown", "rpc error: code = Internal desc = Runner is deleted"),
        JSON,
        "internal",
        False,
        True,
        False,
        id="runner-is-deleted",
    ),
    pytest.param(
        500,
        connect_body("unknown", "rpc error: code = Internal desc = query tasks version failed: db"),
        JSON,
        "internal",
        False,
        False,
        True,
        id="gitea-internal",
    ),
    pytest.param(
        500,
        connect_body("unknown", "runner registration token not found"),
        JSON,
        "unknown",
        False,
        False,
        True,
        id="plain-unknown",
    ),
    pytest.param(
        500,
        connect_body(
            "unknown", "rpc error: code = AlreadyExists desc = log file has been archived"
        ),
        JSON,
        "already_exists",
        False,
        False,
        False,
        id="archived",
    ),
    pytest.param(
        503,
        connect_body("unavailable", "later"),
        JSON,
        "unavailable",
        False,
        False,
        True,
        id="connect-unavailable",
    ),
    pytest.param(503, "", None, "unavailable", True, False, True, id="bare-503"),
    pytest.param(
        502, "<html>Bad Gateway</html>", HTML, "unavailable", True, False, True, id="proxy-502"
    ),
    pytest.param(
        504, "gateway timeout", "text/plain", "unavailable", True, False, True, id="proxy-504"
    ),
    pytest.param(429, "slow down", "text/plain", "unavailable", True, False, True, id="proxy-429"),
    pytest.param(400, "<html>bad</html>", HTML, "internal", True, False, True, id="proxy-400"),
    pytest.param(
        404, "404 page not found", "text/plain", "unimplemented", True, False, True, id="proxy-404"
    ),
    pytest.param(
        403, "<html>forbidden</html>", HTML, "permission_denied", True, False, False, id="proxy-403"
    ),
    pytest.param(415, "", None, "unknown", True, False, True, id="bare-415"),
    pytest.param(
        501,
        connect_body("unimplemented", "procedure not implemented"),
        JSON,
        "unimplemented",
        False,
        False,
        False,
        id="too-old-for-declare",
    ),
    pytest.param(
        400,
        connect_body("invalid_argument", "unmarshal: bad"),
        JSON,
        "invalid_argument",
        False,
        False,
        False,
        id="invalid-argument",
    ),
    pytest.param(
        500,
        json.dumps({"code": "weird", "message": "x"}),
        JSON,
        "unknown",
        True,
        False,
        True,
        id="not-a-connect-code",
    ),
    pytest.param(503, "{not json", JSON, "unavailable", True, False, True, id="garbled-json-error"),
    pytest.param(
        401,
        "<html>401</html>",
        "application/json",
        "unauthenticated",
        True,
        False,
        True,
        id="json-typed-html-401",
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "effective", "derived", "unregistered", "transient"),
    CLASSIFICATION,
)
async def test_error_classification(
    status: int,
    body: str,
    content_type: str | None,
    effective: str,
    derived: bool,
    unregistered: bool,
    transient: bool,
) -> None:
    error = await error_for(answer(status, body, content_type))
    assert error.http_status == status
    assert error.effective_code == effective
    assert error.derived is derived
    assert error.is_unregistered is unregistered
    assert error.is_transient is transient
    assert not error.is_config_error
    assert error.procedure == "FetchTask"


async def test_rpc_error_form_is_unwrapped() -> None:
    error = await error_for(answer(500, connect_body("unknown", UNREGISTERED), JSON))
    assert error.code == "unknown"
    assert error.message == UNREGISTERED
    assert error.effective_message == "unregistered runner"
    assert str(error) == "FetchTask: unauthenticated (HTTP 500): unregistered runner"


@pytest.mark.parametrize(
    ("grpc_name", "connect_code"),
    [
        ("DeadlineExceeded", "deadline_exceeded"),
        ("AlreadyExists", "already_exists"),
        ("PermissionDenied", "permission_denied"),
        ("Unavailable", "unavailable"),
        ("NoSuchCode", "unknown"),
    ],
)
async def test_grpc_names_map_to_connect_codes(grpc_name: str, connect_code: str) -> None:
    message = f"rpc error: code = {grpc_name} desc = line one\nline two"
    error = await error_for(answer(500, connect_body("unknown", message), JSON))
    assert error.effective_code == connect_code
    assert error.effective_message == "line one\nline two"


async def test_rpc_text_under_a_real_code_is_not_unwrapped() -> None:
    error = await error_for(answer(503, connect_body("unavailable", UNREGISTERED), JSON))
    assert error.effective_code == "unavailable"
    assert not error.is_unregistered


@pytest.mark.parametrize(
    ("message", "removed", "rejected"),
    [
        ("pick task: runner has been removed", True, False),
        ("update task: invalid runner for task", False, True),
        ("update task: resource does not exist", False, True),
        ("invalid runner for task", False, True),
        ("get task: task with id 7: resource does not exist", False, True),
    ],
)
async def test_final_internal_errors_are_not_transient(
    message: str, removed: bool, rejected: bool
) -> None:
    body = connect_body("unknown", f"rpc error: code = Internal desc = {message}")
    error = await error_for(answer(500, body, JSON))
    assert error.is_runner_removed is removed
    assert error.is_task_rejected is rejected
    assert not error.is_transient


async def test_archived_log_is_recognised() -> None:
    body = connect_body("already_exists", "log file has been archived")
    error = await error_for(answer(409, body, JSON))
    assert error.is_log_archived
    assert not error.is_transient


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "internal"),
        (401, "unauthenticated"),
        (403, "permission_denied"),
        (404, "unimplemented"),
        (429, "unavailable"),
        (502, "unavailable"),
        (503, "unavailable"),
        (504, "unavailable"),
        (500, "unknown"),
        (418, "unknown"),
    ],
)
def test_code_for_status(status: int, code: str) -> None:
    assert code_for_status(status) == code


async def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={}, headers={"content-type": JSON})

    await call_with(handler, PingRequest(), PingResponse, headers={"x-runner-uuid": "u"})
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-runner-uuid"] == "u"
    assert request.content == b"{}"


async def test_request_json_mapping() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, content=b'{"ackIndex":"2"}', headers={"content-type": JSON})

    when = datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    request = UpdateLogRequest(
        task_id=1337, index=0, rows=[LogRow(time=when, content="a"), LogRow(time=when)]
    )
    await call_with(handler, request)
    body = json.loads(seen[0])
    # Defaults (index 0, noMore false, empty content) are omitted; times carry Z.
    assert body == {
        "taskId": 1337,
        "rows": [
            {"time": "2026-03-01T10:00:00.123000Z", "content": "a"},
            {"time": "2026-03-01T10:00:00.123000Z"},
        ],
    }


async def test_answer_json_mapping() -> None:
    payload = (
        b'{"task":{"id":"1337","workflowPayload":"bmFtZTogY2kK",'
        b'"context":{"ref_protected":false,"event":{"number":12},"run_id":"88"},'
        b'"needs":{"build":{"outputs":{"v":"1"},"result":"RESULT_SUCCESS"},'
        b'"odd":{"result":7}},"secrets":{"GITEA_TOKEN":"t"},"brandNew":{"x":1}},'
        b'"tasksVersion":"43","alsoNew":true}'
    )
    message, _ = await call_with(answer(200, payload, JSON))
    assert isinstance(message, FetchTaskResponse)
    assert message.tasks_version == 43
    task = message.task
    assert task is not None
    assert task.id == 1337
    assert task.workflow_payload == b"name: ci\n"
    assert task.context == {"ref_protected": False, "event": {"number": 12}, "run_id": "88"}
    assert task.needs["build"].result_enum is Result.SUCCESS
    assert task.needs["odd"].result_enum is Result.UNSPECIFIED
    assert task.secrets == {"GITEA_TOKEN": "t"}


async def test_answer_timestamps_with_nanoseconds_decode_as_aware_utc() -> None:
    payload = b'{"state":{"id":"1","startedAt":"2026-03-01T10:00:00.123456789Z"}}'
    message, _ = await call_with(answer(200, payload, JSON), response_type=UpdateTaskResponse)
    assert isinstance(message, UpdateTaskResponse)
    assert message.state is not None
    assert message.state.started_at == datetime(2026, 3, 1, 10, 0, 0, 123457, tzinfo=UTC)


async def test_answer_with_charset_is_accepted_and_headers_returned() -> None:
    handler = answer(200, b'{"data":"Hello, x!"}', "application/json; charset=utf-8")
    message, headers = await call_with(handler, response_type=PingResponse)
    assert message == PingResponse(data="Hello, x!")
    assert headers["content-type"].startswith("application/json")


async def test_non_json_success_is_an_internal_error() -> None:
    error = await error_for(answer(200, "<html>login</html>", HTML))
    assert error.code == "internal"
    assert error.derived
    assert error.is_transient


async def test_malformed_success_body_is_an_internal_error() -> None:
    error = await error_for(answer(200, b'{"tasksVersion":[1]}', JSON))
    assert error.code == "internal"
    assert "malformed answer" in error.message


async def test_unencodable_request_is_a_final_local_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be sent")

    error = await error_for(handler, request=PingRequest(data="bad \udc80 surrogate"))
    assert error.code == "invalid_argument"
    assert not error.sent
    assert not error.is_transient


async def test_connection_refused_is_transient_and_unsent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConnectError) as info:
            await unary(http, f"http://127.0.0.1:{port}/x/Ping", PingRequest(), PingResponse)
    error = info.value
    assert error.code == "unavailable"
    assert error.http_status is None
    assert error.derived
    assert not error.sent
    assert error.is_transient
    assert not error.is_unregistered


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "sent"),
    [
        (httpx.ReadTimeout("read timed out"), "deadline_exceeded", True),
        (httpx.ConnectTimeout("connect timed out"), "deadline_exceeded", False),
        (httpx.PoolTimeout("pool"), "deadline_exceeded", False),
        (httpx.ReadError("connection reset"), "unavailable", True),
        (httpx.RemoteProtocolError("peer closed"), "unavailable", True),
        (httpx.ConnectError("name resolution failed"), "unavailable", False),
    ],
)
async def test_transport_failures_are_transient(exc: Exception, code: str, sent: bool) -> None:
    error = await error_for(raising(exc))
    assert error.code == code
    assert error.sent is sent
    assert error.is_transient
    assert not error.is_config_error


def tls_failure(cause: ssl.SSLError) -> httpx.ConnectError:
    exc = httpx.ConnectError("TLS failed")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        tls_failure(ssl.SSLCertVerificationError(1, "certificate verify failed")),
        tls_failure(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")),
        httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
        httpx.InvalidURL("Invalid port"),
    ],
    ids=["cert-verify", "https-to-http-port", "wrong-scheme", "malformed"],
)
async def test_configuration_failures_are_final(exc: Exception) -> None:
    error = await error_for(raising(exc))
    assert error.is_config_error
    assert not error.is_transient


async def test_plain_http_to_https_port_is_a_config_error() -> None:
    body = "Client sent an HTTP request to an HTTPS server.\n"
    error = await error_for(answer(400, body, "text/plain; charset=utf-8"))
    assert error.is_config_error
    assert not error.is_transient


async def test_other_tls_errors_stay_transient() -> None:
    error = await error_for(raising(tls_failure(ssl.SSLError(1, "handshake interrupted"))))
    assert not error.is_config_error
    assert error.is_transient


async def test_overall_timeout_bounds_a_hanging_call() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with trio.fail_after(10), pytest.raises(ConnectError) as info:
            await unary(http, URL, PingRequest(), PingResponse, call_timeout=0.05)
    assert info.value.code == "deadline_exceeded"
    assert info.value.is_transient


@pytest.mark.parametrize(
    "handler",
    [
        answer(500, connect_body("unknown", f"token {TOKEN} is wrong"), JSON),
        answer(502, f"<html>upstream saw {TOKEN}</html>", HTML),
        raising(httpx.LocalProtocolError(f"Illegal header value b'{TOKEN} '")),
        raising(httpx.ReadError(f"reset while sending {TOKEN}")),
    ],
    ids=["connect-body", "proxy-page", "header-error", "transport"],
)
async def test_error_text_never_contains_secrets(handler: Handler) -> None:
    error = await error_for(handler, secrets=[TOKEN])
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert all(TOKEN not in str(arg) for arg in error.args)
    assert "***" in error.message
