"""The JSON routes of the v1 REST API and the v2 twirp ``CacheService`` as plain ASGI.

A job's save and restore are a handful of these small requests around one data transfer,
so their per-request cost is what a small cache entry costs. They are dispatched here
before the Quart app sees them (Quart keeps the control plane and answers everything
else). Behaviour is that of the routes in spec sections 6 and 7: the same status codes,
and JSON error bodies in the shape of the route family (``{"error", "message"}`` for v1,
``{"code", "msg"}`` on twirp paths, spec 4, 7.1).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import msgspec

from trio_runner.cache.asgi import (
    ClientGone,
    HttpError,
    Receive,
    Request,
    Scope,
    Send,
    caller_credential,
    send_json,
    send_response,
)
from trio_runner.cache.auth import (
    DOWNLOAD_LIFETIME,
    DOWNLOAD_PURPOSE,
    UPLOAD_LIFETIME,
    UPLOAD_PURPOSE,
    Credential,
)
from trio_runner.cache.state import CacheState, parse_id
from trio_runner.cache.store import MAX_KEY_LENGTH, MAX_KEYS, Entry, StoreError
from trio_runner.cache.wire import (
    CommitRequest,
    CreateEntryRequest,
    DownloadUrlRequest,
    FinalizeRequest,
    ReserveRequest,
)

log = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)
#: A route's answer: status and JSON body; None is no body at all (204).
Reply = tuple[int, object | None]
Handler = Callable[[CacheState, Request], Awaitable[Reply]]

MAX_JSON_BODY = 1024 * 1024
V1 = "/_apis/artifactcache"
TWIRP = "/twirp/github.actions.results.api.v1.CacheService"
TOO_LARGE = "request entity too large"

TWIRP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "bad_route",
    405: "bad_route",
    413: "malformed",
    500: "internal",
    502: "unavailable",
}


def error_body(path: str, status: int, message: str, code: str = "") -> dict[str, str]:
    """The JSON error document of the route family ``path`` belongs to."""
    if path.startswith("/twirp/"):
        return {"code": code or TWIRP_CODES.get(status, "unknown"), "msg": message}
    return {"error": message, "message": message}


def _valid_key(name: str, value: str) -> str:
    if not value:
        raise HttpError(400, f"{name} is required")
    if len(value) > MAX_KEY_LENGTH:
        raise HttpError(400, f"{name} is longer than {MAX_KEY_LENGTH} characters")
    if "\0" in value:
        raise HttpError(400, f"{name} contains a NUL character")
    return value


async def _decode(request: Request, kind: type[S], *, empty_ok: bool = False) -> S:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise HttpError(413, TOO_LARGE)
    try:
        data = await request.read_at_most(MAX_JSON_BODY)
    except HttpError:
        raise HttpError(413, TOO_LARGE) from None
    if empty_ok and not data.strip():
        data = b"{}"
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise HttpError(400, "request body is not valid JSON", "malformed") from None


def _int64(value: int | str | None, name: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > 2**63 - 1:
        raise HttpError(400, f"{name} must be a non-negative integer")
    return value


def _download_url(state: CacheState, caller: Credential, entry: Entry) -> str:
    query = state.signer.query(DOWNLOAD_PURPOSE, entry.id, DOWNLOAD_LIFETIME)
    return f"{state.base_for(caller)}{V1}/artifacts/{entry.id}?{query}"


def _iso(millis: int) -> str:
    moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- v1 -----------------------------------------------------------------------------------


async def lookup(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    keys_arg = request.arg("keys")
    version = request.arg("version") or ""
    if keys_arg is None:
        raise HttpError(400, "keys is required")
    if not version:
        raise HttpError(400, "version is required")
    keys = keys_arg.split(",")
    if len(keys) > MAX_KEYS:
        raise HttpError(400, f"more than {MAX_KEYS} keys")
    if any(len(k) > MAX_KEY_LENGTH for k in keys):
        raise HttpError(400, f"a key is longer than {MAX_KEY_LENGTH} characters")
    entry = await state.store.find(caller.repo, keys, version)
    if entry is None:
        return 204, None
    url = _download_url(state, caller, entry)
    return 200, {"result": "hit", "archiveLocation": url, "cacheKey": entry.key}


async def reserve(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    body = await _decode(request, ReserveRequest)
    key = _valid_key("key", body.key)
    if "," in key:
        raise HttpError(400, "key must not contain a comma")
    version = _valid_key("version", body.version)
    size = body.cacheSize or 0
    if size < 0:
        raise HttpError(400, "cacheSize must not be negative")
    new_id = await state.store.reserve(caller.repo, key, version, size, api=1)
    return 200, {"cacheId": new_id}


async def list_entries(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    key = request.arg("key")
    if key is None:
        raise HttpError(400, "key is required")
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
    return 200, {"totalCount": len(caches), "artifactCaches": caches}


async def commit(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    entry_id = parse_id(request.path[len(V1) + len("/caches/") :])
    if entry_id is None:
        raise HttpError(400, "invalid cache id")
    entry = await state.store.reservation(entry_id, caller.repo)
    body = await _decode(request, CommitRequest, empty_ok=True)
    if body.size is not None and body.size < 0:
        raise HttpError(400, "size must not be negative")
    await state.store.commit(entry, body.size)
    return 200, {}


async def clean(state: CacheState, request: Request) -> Reply:
    caller_credential(state, request)
    return 200, {}


# -- v2 twirp -----------------------------------------------------------------------------


def _twirp_json(request: Request) -> None:
    if "application/protobuf" in request.headers.get("content-type", ""):
        raise HttpError(400, "only JSON is supported", "malformed")


async def create_entry(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    _twirp_json(request)
    body = await _decode(request, CreateEntryRequest)
    key, version = _valid_key("key", body.key), _valid_key("version", body.version)
    try:
        new_id = await state.store.reserve(caller.repo, key, version, -1, api=2)
    except StoreError as exc:
        if exc.status != 409:
            raise
        return 200, {"ok": False}
    query = state.signer.query(UPLOAD_PURPOSE, new_id, UPLOAD_LIFETIME)
    url = f"{state.base_for(caller)}{V1}/blobs/{new_id}?{query}"
    return 200, {"ok": True, "signed_upload_url": url}


async def finalize(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    _twirp_json(request)
    body = await _decode(request, FinalizeRequest)
    key, version = _valid_key("key", body.key), _valid_key("version", body.version)
    raw_size = body.size_bytes if body.size_bytes is not None else body.sizeBytes
    size = _int64(raw_size, "size_bytes")
    done_id, message = await state.store.finalize(caller.repo, key, version, size)
    if not done_id:
        return 200, {"ok": False, "message": message} if message else {"ok": False}
    return 200, {"ok": True, "entry_id": str(done_id)}


async def download_url(state: CacheState, request: Request) -> Reply:
    caller = caller_credential(state, request)
    _twirp_json(request)
    body = await _decode(request, DownloadUrlRequest)
    key, version = _valid_key("key", body.key), _valid_key("version", body.version)
    keys = [key, *(body.restore_keys or body.restoreKeys or [])]
    if len(keys) > MAX_KEYS:
        raise HttpError(400, f"more than {MAX_KEYS} keys")
    entry = await state.store.find(caller.repo, keys, version)
    if entry is None:
        return 200, {"ok": False}
    url = _download_url(state, caller, entry)
    return 200, {"ok": True, "signed_download_url": url, "matched_key": entry.key}


# -- dispatch -----------------------------------------------------------------------------

ROUTES: dict[str, Mapping[str, Handler]] = {
    f"{V1}/cache": {"GET": lookup},
    f"{V1}/caches": {"GET": list_entries, "POST": reserve},
    f"{V1}/clean": {"POST": clean},
    f"{TWIRP}/CreateCacheEntry": {"POST": create_entry},
    f"{TWIRP}/FinalizeCacheEntryUpload": {"POST": finalize},
    f"{TWIRP}/GetCacheEntryDownloadURL": {"POST": download_url},
}
_COMMIT_PREFIX = f"{V1}/caches/"
_COMMIT: Mapping[str, Handler] = {"POST": commit}


def route(scope: Scope) -> Mapping[str, Handler] | None:
    """The handlers by method of this request's path, or None when it is not an API path."""
    path: str = scope["path"]
    found = ROUTES.get(path)
    if found is not None:
        return found
    # ``/caches/<id>``: whatever follows the prefix is the id (a bad one is a 400), as long
    # as it does not start with a slash.
    rest = path[len(_COMMIT_PREFIX) :] if path.startswith(_COMMIT_PREFIX) else ""
    return _COMMIT if rest and not rest.startswith("/") else None


async def handle(
    methods: Mapping[str, Handler],
    state: CacheState,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    request = Request(scope, receive)
    head = request.method == "HEAD"
    handler = methods.get("GET" if head else request.method)
    try:
        if handler is None:
            raise HttpError(405, "method not allowed")
        status, body = await handler(state, request)
    except ClientGone:
        return
    except HttpError as exc:
        status, body = exc.status, error_body(request.path, exc.status, exc.message, exc.code)
    except StoreError as exc:
        status, body = exc.status, error_body(request.path, exc.status, exc.message)
    except Exception:
        log.exception("cache server: unexpected error on %s %s", request.method, request.path)
        status, body = 500, error_body(request.path, 500, "internal server error")
    if body is None:
        await send_response(send, status)
    else:
        await send_json(send, status, body, head=head)
