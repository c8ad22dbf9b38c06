"""The cache server's ASGI application: an ASGI front over a Quart-Trio app.

The front sends each request to the first of these that claims it:

* :mod:`trio_runner.cache.transfer`: the data routes (part and blob uploads, downloads);
* :mod:`trio_runner.cache.api`: the JSON routes of v1 and twirp v2, the hot path of every
  save and restore;
* :mod:`trio_runner.cache.forward`: the artifact half of the results service (spec 12.6);
* the Quart app: the ``/_internal`` control plane and every other path (404/405).

Every error body is JSON in the shape of its route family: ``{"error", "message"}`` for v1
and the control plane, ``{"code", "msg"}`` on twirp paths (spec 4, 7.1).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from trio_runner.cache import api, forward, transfer
from trio_runner.cache.api import MAX_JSON_BODY, error_body
from trio_runner.cache.asgi import JSON_TYPE, HttpError, Receive, Scope, Send, draining
from trio_runner.cache.auth import Credential, bearer_token
from trio_runner.cache.state import CacheState
from trio_runner.cache.wire import RegisterRequest, RevokeRequest

log = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _json(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status, content_type=JSON_TYPE.decode())


async def _decode(kind: type[S]) -> S:
    data = await request.get_data(cache=False)
    assert isinstance(data, bytes)
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise HttpError(400, "request body is not valid JSON", "malformed") from None


def create_app(state: CacheState) -> ASGIApp:
    """The ASGI callable hypercorn serves."""
    app = QuartTrio(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_JSON_BODY, PROVIDE_AUTOMATIC_OPTIONS=False)

    def error(status: int, message: str, code: str = "") -> Response:
        return _json(error_body(request.path, status, message, code), status)

    @app.errorhandler(HttpError)
    async def api_error(exc: HttpError) -> Response:
        return error(exc.status, exc.message, exc.code)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return error(exc.code or 500, (exc.name or "error").lower())

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("cache server: unexpected error on %s %s", request.method, request.path)
        return error(500, "internal server error")

    def shared_secret() -> None:
        if not state.shared_secret:
            raise HttpError(404, "not found")
        given = bearer_token(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(given.encode(), state.shared_secret.encode()):
            raise HttpError(401, "internal: bad secret")

    @app.post("/_internal/register")
    async def register() -> Response:
        shared_secret()
        body = await _decode(RegisterRequest)
        if not body.token:
            raise HttpError(400, "token is required")
        credential = Credential(body.repo, body.results, body.insecure_tls, body.public_url)
        state.registry.register(body.token, credential)
        # A non-empty answer tells the runner this server forwards the job's artifact calls.
        return _json({"results_url": state.base_for(credential) if body.results else ""})

    @app.post("/_internal/revoke")
    async def revoke() -> Response:
        shared_secret()
        body = await _decode(RevokeRequest)
        if not body.token:
            raise HttpError(400, "token is required")
        state.registry.revoke(body.token)
        return _json({})

    # Quart types its ASGI entry with its own scope TypedDicts; the front passes
    # hypercorn's scope through untouched.
    quart_asgi = cast(ASGIApp, app)

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Quart reads every request to its end itself; the plain ASGI routes may not.
            plain = draining(receive, send)
            data_handler = transfer.route(scope)
            if data_handler is not None:
                await transfer.handle(data_handler, state, scope, *plain)
                return
            api_handlers = api.route(scope)
            if api_handlers is not None:
                await api.handle(api_handlers, state, scope, *plain)
                return
            if forward.claims(scope):
                await state.forwarder.handle(state.registry, scope, *plain)
                return
        await quart_asgi(scope, receive, send)

    return front
