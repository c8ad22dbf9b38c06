"""Plain ASGI plumbing shared by the routes that bypass Quart: the request view, body
streaming and JSON responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)

from trio_runner.cache.auth import Credential, bearer_token

if TYPE_CHECKING:
    from trio_runner.cache.state import CacheState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json; charset=utf-8"


class HttpError(Exception):
    """A refusal: the status and message of the JSON error body (v1 or twirp); ``code``
    overrides the twirp code derived from the status."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


def draining(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` for a handler that may leave part of the request unread.

    hypercorn hands request messages over through a bounded queue and, once the response
    is complete, puts ``http.disconnect`` into that queue, waiting for room. If the handler
    left messages in it (the empty body of a GET, a refused upload), that wait never ends
    and the connection is never closed. So the response's last message first takes in
    whatever of the request is left.
    """
    ended = False

    async def tracked(message: Message) -> Message:
        nonlocal ended
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            ended = True
        return message

    async def receive_tracked() -> Message:
        return await tracked(await receive())

    async def send_draining(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            while not ended:
                await receive_tracked()
        await send(message)

    return receive_tracked, send_draining


class Request:
    """The parts of an ASGI HTTP scope these routes look at."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # Decoded as werkzeug decodes ``request.args``: invalid bytes stay percent-encoded.
        self.query = parse_qsl(
            scope["query_string"].decode(errors="replace"),
            keep_blank_values=True,
            errors="werkzeug.url_quote",
        )
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self._receive = receive

    def arg(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read_at_most(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.body():
            data += chunk
            if len(data) > limit:
                raise HttpError(413, "request body too large")
        return bytes(data)


async def send_response(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    more: bool = False,
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def send_json(send: Send, status: int, obj: object, *, head: bool = False) -> None:
    """``obj`` as a JSON response; ``head``: the headers of one, without the body."""
    body = msgspec.json.encode(obj)
    headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]
    await send_response(send, status, b"" if head else body, headers)


def caller_credential(state: CacheState, request: Request) -> Credential:
    """The registration of the job behind a request's bearer token, or a 401."""
    token = bearer_token(request.headers.get("authorization"))
    if not token:
        raise HttpError(401, "missing bearer token")
    credential = state.registry.lookup(token)
    if credential is None:
        raise HttpError(401, "unknown bearer token")
    return credential
