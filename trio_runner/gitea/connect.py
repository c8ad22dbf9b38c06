"""One Connect unary call with the JSON codec over httpx, and the typed error it can raise.

Owns the wire rules of spec sections 1.2-1.3 (POST, exact headers, ``{}`` for empty
messages, lenient decoding of answers) and 2.1-2.3 / 14 (error bodies, codes derived from
bare HTTP statuses, Gitea's ``unknown`` + "rpc error: code = X desc = ..." form, and which
failures are transient, final or configuration errors). Error texts are scrubbed of the
secrets the caller names, so a token can never travel inside an exception.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping
from typing import TypeVar

import httpx
import msgspec
import trio

__all__ = [
    "CONNECT_CODES",
    "ConnectError",
    "code_for_status",
    "unary",
]

T = TypeVar("T")

JSON_CONTENT_TYPE = "application/json"

CONNECT_CODES = frozenset(
    {
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    }
)

# Codes of failures that a later attempt can plausibly get past (spec section 14).
_TRANSIENT_CODES = frozenset(
    {"unavailable", "deadline_exceeded", "internal", "unknown", "resource_exhausted", "aborted"}
)

_RPC_ERROR = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")
_PLAIN_HTTP_TO_HTTPS = "HTTP request to an HTTPS server"
_MAX_BODY_EXCERPT = 200
_MARKUP = re.compile(r"<[^>]*>")


def code_for_status(status: int) -> str:
    """The Connect code a client derives from an HTTP status without a Connect body."""
    match status:
        case 400:
            return "internal"
        case 401:
            return "unauthenticated"
        case 403:
            return "permission_denied"
        case 404:
            return "unimplemented"
        case 429 | 502 | 503 | 504:
            return "unavailable"
        case _:
            return "unknown"


class ConnectError(Exception):
    """A failed call: the server's Connect error, a bare HTTP status, or a transport failure.

    ``code`` is the wire code (or the one derived from ``http_status``; ``derived`` says
    so). ``http_status`` is None when no HTTP answer arrived. ``config_error`` marks
    failures that retrying cannot fix (TLS verification, malformed address, wrong scheme).
    ``sent`` is False when the request certainly never reached the server (connection
    could not be made), so even a non-idempotent call may be repeated.
    """

    def __init__(
        self,
        code: str,
        message: str,
        http_status: int | None,
        derived: bool,
        *,
        procedure: str = "",
        config_error: bool = False,
        sent: bool = True,
    ) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        self.derived = derived
        self.procedure = procedure
        self.config_error = config_error
        self.sent = sent
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.procedure}: " if self.procedure else ""
        status = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        text = f": {self.effective_message}" if self.effective_message else ""
        return f"{where}{self.effective_code}{status}{text}"

    def __repr__(self) -> str:
        return f"ConnectError({str(self)!r})"

    def _rpc_form(self) -> tuple[str, str] | None:
        if self.code != "unknown" or self.derived:
            return None
        match = _RPC_ERROR.match(self.message)
        if match is None:
            return None
        code = _CAMEL_BOUNDARY.sub("_", match.group(1)).lower()
        return (code if code in CONNECT_CODES else "unknown"), match.group(2)

    @property
    def effective_code(self) -> str:
        """The code after unwrapping Gitea's ``unknown`` + "rpc error: ..." form (2.3)."""
        rpc = self._rpc_form()
        return rpc[0] if rpc else self.code

    @property
    def effective_message(self) -> str:
        """The ``desc`` part of an "rpc error" message, else the message itself."""
        rpc = self._rpc_form()
        return rpc[1] if rpc else self.message

    @property
    def is_unregistered(self) -> bool:
        """The server says this runner does not exist (deleted, or a wrong token).

        Only a real Connect body counts: a proxy's bare 401 is not the runner's fault.
        """
        if self.derived:
            return False
        code = self.effective_code
        return code == "unauthenticated" or (
            code == "internal" and self.effective_message == "Runner is deleted"
        )

    @property
    def is_runner_removed(self) -> bool:
        """FetchTask for an ephemeral runner whose one task is over."""
        return self.effective_code == "internal" and self.effective_message.startswith(
            "pick task: runner has been removed"
        )

    @property
    def is_task_rejected(self) -> bool:
        """UpdateTask/UpdateLog for a task that is not (or no longer) this runner's."""
        if self.derived or self.effective_code != "internal":
            return False
        text = self.effective_message
        return "invalid runner for task" in text or "resource does not exist" in text

    @property
    def is_log_archived(self) -> bool:
        """UpdateLog with new rows for a sealed log; those rows can never be stored."""
        return not self.derived and self.effective_code == "already_exists"

    @property
    def is_config_error(self) -> bool:
        """TLS verification failure, malformed address or wrong scheme: do not spin on it."""
        return self.config_error

    @property
    def is_transient(self) -> bool:
        """Worth another attempt later, per the decision table of spec section 14."""
        if self.config_error or self.is_unregistered:
            return False
        if self.is_runner_removed or self.is_task_rejected:
            return False
        if self.derived:
            # Proxy pages, transport failures and garbled answers; a proxy's 403 is a policy.
            return self.code != "permission_denied" and self.code != "invalid_argument"
        return self.effective_code in _TRANSIENT_CODES


class _ErrorBody(msgspec.Struct):
    code: str = ""
    message: str = ""


_encoder = msgspec.json.Encoder()


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE


def _error_from_answer(
    response: httpx.Response, procedure: str, secrets: Iterable[str]
) -> ConnectError:
    status = response.status_code
    if _is_json(response.headers.get("content-type", "")):
        try:
            body = msgspec.json.decode(response.content, type=_ErrorBody, strict=False)
        except msgspec.DecodeError:
            body = None
        if body is not None and body.code in CONNECT_CODES:
            message = _redact(body.message, secrets)
            return ConnectError(body.code, message, status, False, procedure=procedure)
    text = response.content.decode("utf-8", "replace")
    excerpt = " ".join(_MARKUP.sub(" ", text).split())[:_MAX_BODY_EXCERPT]
    reason = response.reason_phrase or httpx.codes.get_reason_phrase(status) or "HTTP error"
    message = _redact(reason + (f": {excerpt}" if excerpt else ""), secrets)
    return ConnectError(
        code_for_status(status),
        message,
        status,
        True,
        procedure=procedure,
        config_error=status == 400 and _PLAIN_HTTP_TO_HTTPS in text,
    )


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _error_from_transport(exc: Exception, procedure: str, secrets: Iterable[str]) -> ConnectError:
    detail = _redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secrets)
    if isinstance(exc, httpx.TimeoutException):
        return ConnectError(
            "deadline_exceeded",
            detail,
            None,
            True,
            procedure=procedure,
            sent=not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
        return ConnectError(
            "unavailable", detail, None, True, procedure=procedure, config_error=True, sent=False
        )
    tls = _ssl_cause(exc)
    config_error = tls is not None and (
        isinstance(tls, ssl.SSLCertVerificationError)
        # An https address pointed at a plain-HTTP port.
        or "WRONG_VERSION_NUMBER" in str(tls)
        or "RECORD_LAYER_FAILURE" in str(tls)
    )
    return ConnectError(
        "unavailable",
        detail,
        None,
        True,
        procedure=procedure,
        config_error=config_error,
        sent=not isinstance(exc, httpx.ConnectError),
    )


async def unary(
    http: httpx.AsyncClient,
    url: str,
    request: msgspec.Struct,
    response_type: type[T],
    *,
    headers: Mapping[str, str] | None = None,
    call_timeout: float = 60.0,
    secrets: Iterable[str] = (),
) -> tuple[T, httpx.Headers]:
    """POST ``request`` to ``url`` and decode the answer as ``response_type``.

    ``call_timeout`` bounds the whole call (connect, send, wait, read). Returns the decoded
    message and the answer's headers. Raises ConnectError for every failure; its text
    never contains any of ``secrets``.
    """
    secrets = tuple(secrets)
    procedure = url.rsplit("/", 1)[-1]
    try:
        body = _encoder.encode(request)
    except (msgspec.EncodeError, UnicodeEncodeError) as exc:
        raise ConnectError(
            "invalid_argument",
            _redact(f"cannot encode request: {exc}", secrets),
            None,
            True,
            procedure=procedure,
            sent=False,
        ) from None
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    response: httpx.Response | None = None
    failure: ConnectError | None = None
    with trio.move_on_after(call_timeout) as scope:
        try:
            response = await http.post(url, content=body, headers=all_headers, timeout=call_timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            failure = _error_from_transport(exc, procedure, secrets)
    if scope.cancelled_caught:
        failure = ConnectError(
            "deadline_exceeded",
            f"no answer within {call_timeout:g} s",
            None,
            True,
            procedure=procedure,
        )
    if failure is not None:
        raise failure
    assert response is not None
    if response.status_code != 200:
        raise _error_from_answer(response, procedure, secrets)
    if not _is_json(response.headers.get("content-type", "")):
        raise ConnectError(
            "internal",
            f"answer is not JSON: content type {response.headers.get('content-type', '(none)')!r}",
            200,
            True,
            procedure=procedure,
        )
    try:
        message = msgspec.json.decode(response.content, type=response_type, strict=False)
    except msgspec.DecodeError as exc:
        raise ConnectError(
            "internal", f"malformed answer: {exc}", 200, True, procedure=procedure
        ) from None
    return message, response.headers
