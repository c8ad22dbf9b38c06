"""The data routes, served as plain ASGI so bodies stream with back-pressure.

PATCH ``/caches/{id}`` (v1 parts), PUT ``/blobs/{id}`` (v2 Azure-style uploads) and
GET/HEAD ``/artifacts/{id}`` (downloads) move archives. Quart would buffer request bodies
without bound and cut responses at its response timeout (spec 14, item 6), so these
routes read ``receive`` and write ``send`` directly, and the store takes no more of a body
than it has room for (two write batches), so back-pressure through hypercorn's queue and
the socket slows the client down to the disk's pace: an upload holds about 2 MiB here.
"""

from __future__ import annotations

import logging
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

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
    DOWNLOAD_PURPOSE,
    UPLOAD_PURPOSE,
    SignatureError,
)
from trio_runner.cache.state import CacheState, parse_id
from trio_runner.cache.store import MAX_BLOCKS, READ_CHUNK, StoreError, read_blob

log = logging.getLogger(__name__)

PREFIX = "/_apis/artifactcache/"
MAX_BLOCK_ID = 1024
MAX_BLOCK_LIST = 8 * 1024 * 1024

_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def route(scope: Scope) -> Callable[[CacheState, Request, Send], Awaitable[None]] | None:
    """The data-route handler for this request, or None for the Quart app."""
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    if rest.startswith("caches/") and scope["method"] == "PATCH":
        return _upload_part
    if rest.startswith("artifacts/"):
        return _download
    if rest.startswith("blobs/"):
        return _put_blob
    return None


async def handle(
    handler: Callable[[CacheState, Request, Send], Awaitable[None]],
    state: CacheState,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    try:
        await handler(state, Request(scope, receive), send)
    except ClientGone:
        return
    except HttpError as exc:
        await send_json(send, exc.status, {"error": exc.message, "message": exc.message})
    except StoreError as exc:
        await send_json(send, exc.status, {"error": exc.message, "message": exc.message})
    except Exception:
        # Answered here rather than by hypercorn, so the unread rest of an upload is
        # drained and the connection closes (see ``asgi.draining``).
        log.exception("cache server: unexpected error on %s %s", scope["method"], scope["path"])
        message = "internal server error"
        await send_json(send, 500, {"error": message, "message": message})


def _entry_id(request: Request) -> int:
    entry_id = parse_id(request.path.rsplit("/", 1)[-1] if request.path.count("/") == 4 else "")
    if entry_id is None:
        raise HttpError(400, "invalid cache id")
    return entry_id


def _verify(state: CacheState, request: Request, purpose: str, entry_id: int) -> None:
    try:
        state.signer.verify(purpose, entry_id, request.arg("exp"), request.arg("sig"))
    except SignatureError as exc:
        raise HttpError(401, str(exc)) from None


def parse_content_range(header: str | None) -> tuple[int, int, int | None]:
    """``bytes <first>-<last>/<total or *>`` → (first, last, total or None)."""
    match = _CONTENT_RANGE.fullmatch(header or "")
    if match is None:
        raise HttpError(400, "missing or malformed Content-Range (want bytes first-last/total)")
    first, last = int(match[1]), int(match[2])
    if first > last:
        raise HttpError(400, "Content-Range first byte is after its last byte")
    return first, last, None if match[3] == "*" else int(match[3])


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as (start, end exclusive);
    None means "answer with the whole body". Unsatisfiable ranges raise 416."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise HttpError(416, "range not satisfiable")
        return max(size - suffix, 0), size
    start = int(match[1])
    end = min(int(match[2]) + 1, size) if match[2] else size
    if start >= size or (match[2] and int(match[2]) < start):
        raise HttpError(416, "range not satisfiable")
    return start, end


async def _upload_part(state: CacheState, request: Request, send: Send) -> None:
    credential = caller_credential(state, request)
    entry = await state.store.reservation(_entry_id(request), credential.repo, touch=True)
    first, last, total = parse_content_range(request.headers.get("content-range"))
    await state.store.write_part(entry, first, last, total, request.body())
    await send_json(send, 200, {})


async def _download(state: CacheState, request: Request, send: Send) -> None:
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {request.method} not allowed")
    entry_id = _entry_id(request)
    _verify(state, request, DOWNLOAD_PURPOSE, entry_id)
    range_header = request.headers.get("range") or request.headers.get("x-ms-range")
    # A whole-body GET starts at byte 0: its first chunk comes with the open.
    read_ahead = READ_CHUNK if request.method == "GET" and not range_header else 0
    async with state.store.open_blob(entry_id, read_ahead) as blob:
        size = blob.size
        start, end, status = 0, size, 200
        if range_header:
            try:
                picked = parse_range(range_header, size)
            except HttpError:
                headers = [(b"content-range", f"bytes */{size}".encode())]
                await send_response(send, 416, b"", headers)
                return
            if picked is not None:
                (start, end), status = picked, 206
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(end - start).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if status == 206:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})

        async def deliver(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        if blob.head:
            await deliver(blob.head)
        if request.method == "GET":
            await read_blob(blob, start + len(blob.head), end, deliver)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _put_blob(state: CacheState, request: Request, send: Send) -> None:
    if request.method != "PUT":
        raise HttpError(405, f"method {request.method} not allowed")
    entry_id = _entry_id(request)
    _verify(state, request, UPLOAD_PURPOSE, entry_id)
    entry = await state.store.reservation(entry_id, None, touch=True)
    comp = (request.arg("comp") or "").lower()
    if not comp:
        await state.store.put_blob(entry, request.body())
    elif comp == "block":
        block_id = (request.arg("blockid") or "").replace(" ", "+")
        if not block_id:
            raise HttpError(400, "blockid is required")
        if len(block_id) > MAX_BLOCK_ID:
            raise HttpError(400, f"blockid is longer than {MAX_BLOCK_ID} characters")
        await state.store.put_block(entry, block_id, request.body())
    elif comp == "blocklist":
        block_ids = parse_block_list(await request.read_at_most(MAX_BLOCK_LIST))
        await state.store.put_block_list(entry, block_ids)
    else:
        raise HttpError(400, "unsupported comp value")
    headers = [(b"content-length", b"0"), (b"x-ms-request-id", str(uuid.uuid4()).encode())]
    if version := request.headers.get("x-ms-version"):
        headers.append((b"x-ms-version", version.encode("latin-1")))
    await send_response(send, 201, b"", headers)


def parse_block_list(document: bytes) -> list[str]:
    """Block ids of a Put Block List document, in blob order."""
    if b"<!DOCTYPE" in document.upper() or b"<!ENTITY" in document.upper():
        raise HttpError(400, "block list must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise HttpError(400, f"block list is not valid XML: {exc}") from None
    if root.tag != "BlockList":
        raise HttpError(400, "block list root element must be BlockList")
    ids = [
        (child.text or "").strip()
        for child in root
        if child.tag in ("Latest", "Committed", "Uncommitted")
    ]
    if len(ids) > MAX_BLOCKS:
        raise HttpError(400, f"block list names more than {MAX_BLOCKS} blocks")
    return ids
