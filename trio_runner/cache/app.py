"""The cache server's ASGI application: v1 REST, v2 twirp and the ``/_internal`` plane.

JSON routes are a Quart-Trio app; the three data routes (part uploads, blob uploads,
downloads) are plain ASGI handlers in :mod:`trio_runner.cache.transfer` that the
dispatcher here sends requests to before Quart sees them. Every error body is JSON in the
shape of its route family: ``{"error", "message"}`` for v1 and the control plane,
``{"code", "msg"}`` on twirp paths (spec 4, 7.1).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from trio_runner.cache import transfer
from trio_runner.cache.auth import (
    DOWNLOAD_LIFETIME,
    DOWNLOAD_PURPOSE,
    UPLOAD_LIFETIME,
    UPLOAD_PURPOSE,
    Credential,
    bearer_token,
)
from trio_runner.cache.state import CacheState, parse_id
from trio_runner.cache.store import MAX_KEY_LENGTH, MAX_KEYS, Entry, StoreError
from trio_runner.cache.transfer import JSON_TYPE, Receive, Scope, Send
from trio_runner.cache.wire import (
    CommitRequest,
    CreateEntryRequest,
    DownloadUrlRequest,
    FinalizeRequest,
    RegisterRequest,
    ReserveRequest,
    RevokeRequest,
)

log = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_BODY = 1024 * 1024
V1 = "/_apis/artifactcache"
TWIRP = "/twirp/github.actions.results.api.v1.CacheService"

_TWIRP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "bad_route",
    405: "bad_route",
    413: "malformed",
    500: "internal",
}


class ApiError(Exception):
    """A refusal; ``code`` overrides the twirp code derived from the status."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _json(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status, content_type=JSON_TYPE.decode())


def _error(status: int, message: str, code: str = "") -> Response:
    if request.path.startswith("/twirp/"):
        return _json({"code": code or _TWIRP_CODES.get(status, "unknown"), "msg": message}, status)
    return _json({"error": message, "message": message}, status)


def _valid_key(name: str, value: str) -> str:
    if not value:
        raise ApiError(400, f"{name} is required")
    if len(value) > MAX_KEY_LENGTH:
        raise ApiError(400, f"{name} is longer than {MAX_KEY_LENGTH} characters")
    if "\0" in value:
        raise ApiError(400, f"{name} contains a NUL character")
    return value


async def _decode(kind: type[S], *, empty_ok: bool = False) -> S:
    data = await request.get_data(cache=False)
    assert isinstance(data, bytes)
    if empty_ok and not data.strip():
        data = b"{}"
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise ApiError(400, "request body is not valid JSON", "malformed") from None


def _int64(value: int | str | None, name: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > 2**63 - 1:
        raise ApiError(400, f"{name} must be a non-negative integer")
    return value


def create_app(state: CacheState) -> ASGIApp:
    """The ASGI callable hypercorn serves."""
    app = QuartTrio(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_JSON_BODY, PROVIDE_AUTOMATIC_OPTIONS=False)

    def credential() -> Credential:
        token = bearer_token(request.headers.get("Authorization"))
        if not token:
            raise ApiError(401, "missing bearer token")
        found = state.registry.lookup(token)
        if found is None:
            raise ApiError(401, "unknown bearer token")
        return found

    def download_url(base: str, entry: Entry) -> str:
        query = state.signer.query(DOWNLOAD_PURPOSE, entry.id, DOWNLOAD_LIFETIME)
        return f"{base}{V1}/artifacts/{entry.id}?{query}"

    def entry_id(text: str) -> int:
        parsed = parse_id(text)
        if parsed is None:
            raise ApiError(400, "invalid cache id")
        return parsed

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.code)

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> Response:
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _error(status, (exc.name or "error").lower())

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("cache server: unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal server error")

    # -- v1 -------------------------------------------------------------------------------

    @app.get(f"{V1}/cache")
    async def lookup() -> Response:
        caller = credential()
        keys_arg = request.args.get("keys")
        version = request.args.get("version") or ""
        if keys_arg is None:
            raise ApiError(400, "keys is required")
        if not version:
            raise ApiError(400, "version is required")
        keys = keys_arg.split(",")
        if len(keys) > MAX_KEYS:
            raise ApiError(400, f"more than {MAX_KEYS} keys")
        if any(len(k) > MAX_KEY_LENGTH for k in keys):
            raise ApiError(400, f"a key is longer than {MAX_KEY_LENGTH} characters")
        entry = await state.store.find(caller.repo, keys, version)
        if entry is None:
            return Response(b"", 204)
        url = download_url(state.base_for(caller), entry)
        return _json({"result": "hit", "archiveLocation": url, "cacheKey": entry.key})

    @app.post(f"{V1}/caches")
    async def reserve() -> Response:
        caller = credential()
        body = await _decode(ReserveRequest)
        key = _valid_key("key", body.key)
        if "," in key:
            raise ApiError(400, "key must not contain a comma")
        version = _valid_key("version", body.version)
        size = body.cacheSize or 0
        if size < 0:
            raise ApiError(400, "cacheSize must not be negative")
        new_id = await state.store.reserve(caller.repo, key, version, size, api=1)
        return _json({"cacheId": new_id})

    @app.get(f"{V1}/caches")
    async def list_entries() -> Response:
        caller = credential()
        key = request.args.get("key")
        if key is None:
            raise ApiError(400, "key is required")
        entries = await state.store.list_key(caller.repo, key)
        caches = [
            {
                "cacheKey": e.key,
                "cacheVersion": e.version,
                "scope": e.repo,
                "creationTime": _iso(e.created_at),
            }
            for e in entries
        ]
        return _json({"totalCount": len(caches), "artifactCaches": caches})

    @app.post(f"{V1}/caches/<path:raw_id>")
    async def commit(raw_id: str) -> Response:
        caller = credential()
        entry = await state.store.reservation(entry_id(raw_id), caller.repo)
        body = await _decode(CommitRequest, empty_ok=True)
        if body.size is not None and body.size < 0:
            raise ApiError(400, "size must not be negative")
        await state.store.commit(entry, body.size)
        return _json({})

    @app.post(f"{V1}/clean")
    async def clean() -> Response:
        credential()
        return _json({})

    # -- v2 twirp -------------------------------------------------------------------------

    def twirp_json() -> None:
        if "application/protobuf" in request.headers.get("Content-Type", ""):
            raise ApiError(400, "only JSON is supported", "malformed")

    @app.post(f"{TWIRP}/CreateCacheEntry")
    async def create_entry() -> Response:
        caller = credential()
        twirp_json()
        body = await _decode(CreateEntryRequest)
        key, version = _valid_key("key", body.key), _valid_key("version", body.version)
        try:
            new_id = await state.store.reserve(caller.repo, key, version, -1, api=2)
        except StoreError as exc:
            if exc.status != 409:
                raise
            return _json({"ok": False})
        query = state.signer.query(UPLOAD_PURPOSE, new_id, UPLOAD_LIFETIME)
        url = f"{state.base_for(caller)}{V1}/blobs/{new_id}?{query}"
        return _json({"ok": True, "signed_upload_url": url})

    @app.post(f"{TWIRP}/FinalizeCacheEntryUpload")
    async def finalize() -> Response:
        caller = credential()
        twirp_json()
        body = await _decode(FinalizeRequest)
        key, version = _valid_key("key", body.key), _valid_key("version", body.version)
        raw_size = body.size_bytes if body.size_bytes is not None else body.sizeBytes
        size = _int64(raw_size, "size_bytes")
        done_id, message = await state.store.finalize(caller.repo, key, version, size)
        if not done_id:
            return _json({"ok": False, "message": message} if message else {"ok": False})
        return _json({"ok": True, "entry_id": str(done_id)})

    @app.post(f"{TWIRP}/GetCacheEntryDownloadURL")
    async def download_url_v2() -> Response:
        caller = credential()
        twirp_json()
        body = await _decode(DownloadUrlRequest)
        key, version = _valid_key("key", body.key), _valid_key("version", body.version)
        keys = [key, *(body.restore_keys or body.restoreKeys or [])]
        if len(keys) > MAX_KEYS:
            raise ApiError(400, f"more than {MAX_KEYS} keys")
        entry = await state.store.find(caller.repo, keys, version)
        if entry is None:
            return _json({"ok": False})
        url = download_url(state.base_for(caller), entry)
        return _json({"ok": True, "signed_download_url": url, "matched_key": entry.key})

    # -- control plane --------------------------------------------------------------------

    def shared_secret() -> None:
        if not state.shared_secret:
            raise ApiError(404, "not found")
        given = bearer_token(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(given.encode(), state.shared_secret.encode()):
            raise ApiError(401, "internal: bad secret")

    @app.post("/_internal/register")
    async def register() -> Response:
        shared_secret()
        body = await _decode(RegisterRequest)
        if not body.token:
            raise ApiError(400, "token is required")
        state.registry.register(
            body.token,
            Credential(body.repo, body.results, body.insecure_tls, body.public_url),
        )
        # Artifact forwarding (results) is not served, so no job is pointed here for it.
        return _json({"results_url": ""})

    @app.post("/_internal/revoke")
    async def revoke() -> Response:
        shared_secret()
        body = await _decode(RevokeRequest)
        if not body.token:
            raise ApiError(400, "token is required")
        state.registry.revoke(body.token)
        return _json({})

    # Quart types its ASGI entry with its own scope TypedDicts; the dispatcher passes
    # hypercorn's scope through untouched.
    quart_asgi = cast(ASGIApp, app)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await quart_asgi(scope, receive, send)
            return
        handler = transfer.route(scope)
        if handler is not None:
            await transfer.handle(handler, state, scope, receive, send)
            return
        await quart_asgi(scope, receive, send)

    return dispatch


def _iso(millis: int) -> str:
    moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
