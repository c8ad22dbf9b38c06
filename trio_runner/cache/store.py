"""Cache entries: metadata in SQLite, archives as files, uploads, downloads and eviction.

Layout under the cache dir (spec 10.2):

* ``cache.sqlite3``: one row per entry or reservation (spec 10.3).
* ``blobs/<id mod 256 as 2 hex>/<id>``: committed archives; they appear only by rename.
  They are not fsynced (a v1 commit is a rename of the file the parts were written
  into, which keeps a 1 GiB commit instant); a blob whose size no longer matches its row,
  as after a power loss, counts as lost and is dropped at lookup.
* ``uploads/<id>/``: staging of a reservation. v1 parts are written straight into
  ``data`` at their offsets (so commit is a rename, not a copy) and each finished part
  leaves an empty marker ``part-<first>-<end>`` (16 hex digits each, end exclusive): only
  marked ranges count. v2 uses ``blob`` (single shot), ``block-<sha256 of block id>`` and
  ``blocklist.json``. Names never derive from keys, versions, repositories or block ids.

SQLite runs on one connection in worker threads, behind a limiter of one and under a
lock. Every row is mirrored in an :class:`~.index.EntryIndex`, changed in the same locked
step as SQLite, so matching and reservation checks need no hop; each request makes as few
hops as it can (a small entry: one each for reserve, part, commit, lookup and download),
since for small entries the hops, not the bytes, are the cost. Other in-memory state (readers,
writers, in-flight part ranges) is only touched on the trio thread, which is what makes the
check-then-mark sequences atomic.

``used_at`` stamps (every lookup hit, download, upload write) are kept in memory and
written in one transaction at most ``STAMP_INTERVAL`` later, before any query that selects
or orders by ``used_at`` (sweeps, evictions), and at close; a reserve and the in-use test
compare with the pending stamp. So stamping needs neither a hop nor a transaction.

An upload body is written in batches of about ``WRITE_BUFFER`` bytes; while one batch is
written by a worker thread the next one is received, and no more, so a body in transit
holds at most two batches here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

import trio

from trio_runner.cache.index import Entry, EntryIndex
from trio_runner.cache.settings import EvictionPolicy

__all__ = ["Entry", "Store", "StoreError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

STALL_TIMEOUT_MS = 5 * 60 * 1000
IN_USE_GRACE_MS = 10 * 60 * 1000
MAX_KEYS = 10
MAX_KEY_LENGTH = 512
MAX_BLOCKS = 50_000
#: Bytes of a body written per worker-thread hop; one batch is written while the next one
#: is received, so an upload holds at most two (spec 14, item 7).
WRITE_BUFFER = 512 * 1024
#: iovecs per pwritev call, well under IOV_MAX (1024 on Linux)
_MAX_PIECES = 256
#: Bytes per download read: each is a trip through hypercorn (and a worker-thread hop when
#: they are not in the page cache).
READ_CHUNK = 2 * 1024 * 1024
#: Seconds a ``used_at`` stamp may wait in memory before it is written to SQLite.
STAMP_INTERVAL = 1.0
#: ``preadv`` flag for "only what is cached" (Linux); None where the platform lacks it
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  repo       TEXT    NOT NULL,
  key        TEXT    NOT NULL,
  version    TEXT    NOT NULL,
  size       INTEGER NOT NULL DEFAULT -1,
  complete   INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  used_at    INTEGER NOT NULL,
  api        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_match ON entries (repo, version, complete, key);
CREATE INDEX IF NOT EXISTS entries_used  ON entries (complete, used_at);
CREATE UNIQUE INDEX IF NOT EXISTS entries_one_reservation
  ON entries (repo, key, version) WHERE complete = 0;
"""
_COLUMNS = "id, repo, key, version, size, complete, created_at, used_at"


class StoreError(Exception):
    """A refusal with the HTTP status it maps to; the text is safe to show to a client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def _entry(row: Sequence[object]) -> Entry:
    id_, repo, key, version, size, complete, created, used = row
    assert isinstance(id_, int) and isinstance(size, int)
    assert isinstance(created, int) and isinstance(used, int)
    # Interned: the index holds every row, and repositories and versions repeat.
    repo, version = sys.intern(str(repo)), sys.intern(str(version))
    return Entry(id_, repo, str(key), version, size, bool(complete), created, used)


def block_name(block_id: str) -> str:
    return "block-" + hashlib.sha256(block_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Part:
    first: int
    end: int  # exclusive

    @property
    def name(self) -> str:
        return f"part-{self.first:016x}-{self.end:016x}"

    @classmethod
    def parse(cls, name: str) -> _Part | None:
        pieces = name.split("-")
        if len(pieces) != 3 or pieces[0] != "part":
            return None
        try:
            return cls(int(pieces[1], 16), int(pieces[2], 16))
        except ValueError:
            return None


class Store:
    """The entries of one cache dir. Call :meth:`open` before use and :meth:`close` after."""

    def __init__(self, root: Path, policy: EvictionPolicy) -> None:
        self.root = root
        self.policy = policy
        self._blobs = root / "blobs"
        self._uploads = root / "uploads"
        self._conn: sqlite3.Connection | None = None
        self._db_limiter = trio.CapacityLimiter(1)
        self._db_lock = threading.Lock()
        self._readers: dict[int, int] = {}
        self._writers: dict[int, int] = {}
        self._claims: dict[int, list[_Part]] = {}
        self._finishing: set[int] = set()
        self._deleting: set[int] = set()
        #: pending ``used_at`` stamps by entry id; worker threads add to it too
        self._stamps: dict[int, int] = {}
        self._stamps_lock = threading.Lock()
        self._index = EntryIndex()

    # -- plumbing -------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(self._locked, fn, *args, limiter=self._db_limiter)

    def _locked(self, fn: Callable[..., T], *args: object) -> T:
        with self._db_lock:
            return fn(*args)

    def _stamp(self, entry_id: int) -> None:
        """Stamp ``used_at`` now (any thread); written later by :meth:`write_stamps`."""
        with self._stamps_lock:
            self._stamps[entry_id] = now_ms()

    def _used_at(self, entry: Entry) -> int:
        return max(entry.used_at, self._stamps.get(entry.id, 0))

    def write_stamps(self) -> None:
        """Write the pending ``used_at`` stamps (the caller holds the connection)."""
        with self._stamps_lock:
            if not self._stamps:
                return
            pending, self._stamps = self._stamps, {}
        with self._transaction():
            self.conn.executemany(
                "UPDATE entries SET used_at = max(used_at, ?) WHERE id = ?",
                [(used, entry_id) for entry_id, used in pending.items()],
            )

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("cache store is not open")
        return self._conn

    def blob_path(self, entry_id: int) -> Path:
        return self._blobs / f"{entry_id % 256:02x}" / str(entry_id)

    def staging(self, entry_id: int) -> Path:
        return self._uploads / str(entry_id)

    async def open(self) -> None:
        await self._db(self._open_sync)
        await self.sweep()

    def _open_sync(self) -> None:
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.root / "cache.sqlite3", check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._reconcile()
        self._index.load(map(_entry, conn.execute(f"SELECT {_COLUMNS} FROM entries")))

    async def close(self) -> None:
        if self._conn is not None:
            await self._db(self.write_stamps)
            conn, self._conn = self._conn, None
            await self._db(conn.close)

    def _reconcile(self) -> None:
        """Remove what a crash can leave behind (spec 10.5), including complete rows whose
        blob is missing or has another size than recorded (blobs are not fsynced)."""
        rows = {
            i: (bool(complete), size)
            for i, complete, size in self.conn.execute("SELECT id, complete, size FROM entries")
        }
        reserved = {i for i, (complete, _) in rows.items() if not complete}
        for staging in self._uploads.iterdir():
            name = staging.name
            if not name.isdigit() or int(name) not in reserved:
                _remove_tree(staging)
                continue
            for leftover in staging.glob("*.tmp"):
                leftover.unlink(missing_ok=True)
        intact: set[int] = set()
        for bucket in self._blobs.iterdir():
            for blob in os.scandir(bucket) if bucket.is_dir() else ():
                row = rows.get(int(blob.name)) if blob.name.isdigit() else None
                if row is not None and row[0] and blob.is_file() and blob.stat().st_size == row[1]:
                    intact.add(int(blob.name))
                else:
                    Path(blob.path).unlink(missing_ok=True)
        dangling = [(i,) for i, (complete, _) in rows.items() if complete and i not in intact]
        with self._transaction():
            self.conn.executemany("DELETE FROM entries WHERE id = ?", dangling)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def in_use(self, entry: Entry, now: int) -> bool:
        return now - self._used_at(entry) < IN_USE_GRACE_MS or self._readers.get(entry.id, 0) > 0

    # -- lookups --------------------------------------------------------------------------

    async def find(self, repo: str, keys: Sequence[str], version: str) -> Entry | None:
        """Spec section 8, matched in the index; stamps ``used_at`` on a hit. A hit whose
        blob is missing or has another size (lost to a prune) is dropped: a miss."""
        entry = self._index.match(repo, keys, version)
        if entry is None:
            await trio.lowlevel.checkpoint()
            return None
        self._stamp(entry.id)
        if await trio.to_thread.run_sync(_file_size, self.blob_path(entry.id)) == entry.size:
            return entry
        if entry.id not in self._deleting and not self._readers.get(entry.id):
            await self._delete_sync_guarded(entry.id)
        return None

    async def list_key(self, repo: str, key: str) -> list[Entry]:
        def query() -> list[Entry]:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND key = ? AND complete = 1"
                " ORDER BY created_at DESC, id DESC",
                (repo, key),
            ).fetchall()
            return [_entry(r) for r in rows]

        return await self._db(query)

    # -- reservations ---------------------------------------------------------------------

    async def reserve(self, repo: str, key: str, version: str, size: int, api: int) -> int:
        """A new reservation's id; StoreError 409 when the entry exists or is being uploaded."""
        if self.policy.max_entry_size and size > self.policy.max_entry_size:
            raise StoreError(
                400,
                f"cache size {size} bytes exceeds the maximum entry size of "
                f"{self.policy.max_entry_size} bytes",
            )
        return await self._db(self._reserve_sync, repo, key, version, size, api)

    def _reserve_sync(self, repo: str, key: str, version: str, size: int, api: int) -> int:
        now = now_ms()
        stale: list[int] = []
        with self._transaction():
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND key = ? AND version = ?",
                (repo, key, version),
            ).fetchall()
            for entry in map(_entry, rows):
                if entry.complete:
                    self._stamp(entry.id)
                    raise StoreError(409, "cache entry already exists")
                if now - self._used_at(entry) < STALL_TIMEOUT_MS or self._writers.get(entry.id):
                    raise StoreError(409, "another job is uploading this entry")
                _remove_tree(self.staging(entry.id))
                self.conn.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
                stale.append(entry.id)
            reserved = size if size > 0 else -1
            cursor = self.conn.execute(
                "INSERT INTO entries (repo, key, version, size, complete, created_at, used_at, api)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (repo, key, version, reserved, now, now, api),
            )
        entry_id = cursor.lastrowid
        assert entry_id is not None
        for gone in stale:
            self._index.drop(gone)
        self._index.put(
            Entry(entry_id, sys.intern(repo), key, sys.intern(version), reserved, False, now, now)
        )
        return entry_id

    async def reservation(self, entry_id: int, repo: str | None, *, touch: bool = False) -> Entry:
        """The incomplete entry ``entry_id``, checked against the caller's repo (None: the
        caller holds a signed URL, which already names the entry). ``touch`` stamps
        ``used_at`` in the same step, for an upload that starts now (spec 9.3)."""

        entry = self._index.get(entry_id)
        await trio.lowlevel.checkpoint()
        if touch and entry is not None and not entry.complete:
            self._stamp(entry_id)
        if entry is None:
            raise StoreError(404, f"cache {entry_id}: not reserved")
        if repo is not None and entry.repo != repo:
            raise StoreError(403, f"cache {entry_id}: forbidden")
        if entry.complete or entry_id in self._finishing:
            raise StoreError(409, f"cache {entry_id}: already committed")
        return entry

    async def find_reservation(self, repo: str, key: str, version: str) -> Entry | None:
        def query() -> Entry | None:
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND key = ? AND version = ?"
                " AND complete = 0",
                (repo, key, version),
            ).fetchone()
            return None if row is None else _entry(row)

        return await self._db(query)

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, entry_id: int) -> Iterator[None]:
        """Mark a body as being received: the reservation is live, commit must wait.
        ``used_at`` is stamped at the start by ``reservation(touch=True)`` and at the end
        by the hop that finishes the body (:meth:`_stamp`)."""
        self._writers[entry_id] = self._writers.get(entry_id, 0) + 1
        try:
            yield
        finally:
            left = self._writers[entry_id] - 1
            if left:
                self._writers[entry_id] = left
            else:
                del self._writers[entry_id]

    def _has_room(self, length: int, free: int | None) -> bool:
        return free is None or free - length >= self.policy.min_free_disk

    async def _ensure_space(self, length: int, free: int | None) -> None:
        """Make room for ``length`` more bytes, given the free space measured just before."""
        if self._has_room(length, free):
            return
        await self._evict_for_free_space()
        free = await _free_bytes(self.root)
        if free is not None and free - length < self.policy.min_free_disk:
            raise StoreError(507, "insufficient storage")

    def _check_max(self, end: int) -> None:
        limit = self.policy.max_entry_size
        if limit and end > limit:
            raise StoreError(413, f"upload exceeds the maximum entry size of {limit} bytes")

    async def write_part(
        self, entry: Entry, first: int, last: int, total: int | None, body: AsyncIterator[bytes]
    ) -> None:
        """Store one v1 part (spec 6.4 checks 6 to 10), streamed to its offset in ``data``."""
        if entry.size >= 0 and (last >= entry.size or (total is not None and total != entry.size)):
            raise StoreError(400, "range outside the reserved size")
        part = _Part(first, last + 1)
        self._check_max(part.end)
        claims = self._claims.setdefault(entry.id, [])
        for other in claims:
            if other.first < part.end and part.first < other.end:
                raise StoreError(400, f"range overlaps bytes {other.first}-{other.end - 1}")
        claims.append(part)
        try:
            with self._writing(entry.id):
                await self._receive_part(entry.id, part, _Body(body, part.end - part.first))
        finally:
            claims.remove(part)
            if not claims:
                del self._claims[entry.id]

    async def _receive_part(self, entry_id: int, part: _Part, body: _Body) -> None:
        # The first batch is read before the part is prepared, so that a part that fits in
        # it is checked, written, marked and stamped in one worker-thread hop. Its length
        # is only judged after the other checks, which keeps their order.
        first = await body.batch()
        whole = first if body.ended and body.received == body.expected else None
        staging = self.staging(entry_id)
        fd, free, done = await trio.to_thread.run_sync(
            self._prepare_part, entry_id, staging, part, whole
        )
        try:
            if done:
                return
            await self._ensure_space(part.end - part.first, free)
            finish = partial(self._finish_part, entry_id, staging, part)
            await _receive(fd, part.first, body, first, finish=finish)
            if body.received != body.expected:
                raise StoreError(400, "body length does not match Content-Range")
        finally:
            os.close(fd)

    def _prepare_part(
        self, entry_id: int, staging: Path, part: _Part, whole: list[bytes] | None
    ) -> tuple[int, int | None, bool]:
        """Check ``part`` against the stored parts (an equal one is replaced), then open
        the staging data file. Returns its descriptor, the free disk space and whether
        ``whole`` (the complete body, if it came in one batch) was written and finished,
        which needs the room that :meth:`_ensure_space` would otherwise make first."""
        for other in _stored_parts(staging):
            if other == part:
                _unlink(staging / part.name)
            elif other.first < part.end and part.first < other.end:
                raise StoreError(400, f"range overlaps bytes {other.first}-{other.end - 1}")
        fd = _open_data(staging)
        free = _free_bytes_sync(self.root)
        if whole is None or not self._has_room(part.end - part.first, free):
            return fd, free, False
        try:
            _pwritev_all(fd, whole, part.first)
            self._finish_part(entry_id, staging, part)
        except BaseException:
            os.close(fd)
            raise
        return fd, free, True

    def _finish_part(self, entry_id: int, staging: Path, part: _Part) -> None:
        (staging / part.name).touch()
        self._stamp(entry_id)

    async def put_blob(self, entry: Entry, body: AsyncIterator[bytes]) -> None:
        """v2 Put Blob: the body is the whole archive; it replaces anything staged."""
        with self._writing(entry.id):
            limit = self.policy.max_entry_size or None
            await self._stream_to(entry.id, "blob", body, limit, drop_blocks=True)

    async def put_block(self, entry: Entry, block_id: str, body: AsyncIterator[bytes]) -> None:
        with self._writing(entry.id):
            room: int | None = None
            if self.policy.max_entry_size:
                staging = self.staging(entry.id)
                staged = await trio.to_thread.run_sync(_staged_block_bytes, staging)
                room = max(self.policy.max_entry_size - staged, 0)
            await self._stream_to(entry.id, block_name(block_id), body, room)

    async def put_block_list(self, entry: Entry, block_ids: Sequence[str]) -> None:
        names = [block_name(b) for b in block_ids]
        staging = self.staging(entry.id)

        def commit_list() -> None:
            for index, name in enumerate(names):
                if not (staging / name).is_file():
                    raise StoreError(400, f"block {index} of cache {entry.id} was never uploaded")
            total = sum((staging / n).stat().st_size for n in set(names))
            self._check_max(total)
            _atomic_write(staging / "blocklist.json", json.dumps(names).encode())
            _drop_blocks(staging, set(names))
            _unlink(staging / "blob")
            self._stamp(entry.id)

        with self._writing(entry.id):
            await trio.to_thread.run_sync(commit_list)

    async def _stream_to(
        self,
        entry_id: int,
        name: str,
        chunks: AsyncIterator[bytes],
        limit: int | None,
        *,
        drop_blocks: bool = False,
    ) -> None:
        """Receive a body into ``staging/name`` via a temporary file, at most ``limit``
        bytes (None: no limit); ``drop_blocks``: then remove the staged blocks."""
        staging = self.staging(entry_id)
        tmp = staging / f"{name}.{os.urandom(6).hex()}.tmp"

        def finish() -> None:
            os.replace(tmp, staging / name)
            if drop_blocks:
                _drop_blocks(staging, set())
            self._stamp(entry_id)

        fd = await trio.to_thread.run_sync(_open_new, tmp)
        try:
            try:
                body = _Body(chunks, None, limit)
                await _receive(fd, 0, body, await body.batch(), finish=finish)
            finally:
                os.close(fd)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_unlink, tmp)
            raise

    # -- committing -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _finishing_entry(self, entry: Entry) -> AsyncIterator[None]:
        if entry.id in self._finishing:
            raise StoreError(409, f"cache {entry.id}: already committed")
        if self._writers.get(entry.id) or self._claims.get(entry.id):
            raise StoreError(409, f"cache {entry.id}: an upload is still in progress")
        self._finishing.add(entry.id)
        try:
            yield
        finally:
            self._finishing.discard(entry.id)

    async def commit(self, entry: Entry, size: int | None) -> None:
        """v1 commit (spec 6.5 steps 3 to 7); a failed check deletes the reservation."""
        if size is not None and entry.size >= 0 and size != entry.size:
            raise StoreError(400, "size does not match the reserved size")
        expected = size if size is not None else (entry.size if entry.size >= 0 else None)
        async with self._finishing_entry(entry):
            try:
                # Assembling v1 parts is a rename, so it shares the hop of the row update.
                usage = await self._db(self._commit_parts, entry, expected)
            except StoreError:
                await self._delete_sync_guarded(entry.id)
                raise
            await self._enforce_limits(entry.repo, usage)

    def _commit_parts(self, entry: Entry, expected: int | None) -> _Usage:
        return self._complete_sync(entry, self._assemble_parts(entry.id, expected))

    def _assemble_parts(self, entry_id: int, expected: int | None) -> int:
        staging = self.staging(entry_id)
        parts = sorted(_stored_parts(staging), key=lambda p: p.first)
        position = 0
        for part in parts:
            if part.first != position:
                what = "gap" if part.first > position else "overlap"
                raise StoreError(400, f"upload incomplete: {what} at byte {position}")
            position = part.end
        if expected is not None and position != expected:
            raise StoreError(
                400, f"upload incomplete: {position} bytes uploaded, expected {expected}"
            )
        fd = _open_data(staging)
        try:
            os.ftruncate(fd, position)
        finally:
            os.close(fd)
        self._publish(entry_id, staging / "data")
        return position

    async def finalize(self, repo: str, key: str, version: str, size: int) -> tuple[int, str]:
        """v2 Finalize: ``(entry id, "")`` on success, ``(0, message)`` when refused."""
        entry = await self.find_reservation(repo, key, version)
        if entry is None:
            return 0, ""
        async with self._finishing_entry(entry):
            try:
                await trio.to_thread.run_sync(self._assemble_v2, entry.id, size)
            except StoreError as exc:
                await self._delete_sync_guarded(entry.id)
                return 0, exc.message
            await self._enforce_limits(entry.repo, await self._db(self._complete_sync, entry, size))
        return entry.id, ""

    def _assemble_v2(self, entry_id: int, size: int) -> None:
        staging = self.staging(entry_id)
        blocklist = staging / "blocklist.json"
        if blocklist.is_file():
            names: list[str] = json.loads(blocklist.read_bytes())
            sources = [staging / n for n in names]
        elif (staging / "blob").is_file():
            sources = [staging / "blob"]
        else:
            raise StoreError(400, "no data was uploaded")
        uploaded = sum(s.stat().st_size for s in sources)
        if uploaded != size:
            raise StoreError(400, f"uploaded {uploaded} bytes, expected {size}")
        if len(sources) == 1 and sources[0].name == "blob":
            self._publish(entry_id, sources[0])
            return
        assembled = staging / "assembled.tmp"
        with assembled.open("wb") as out:
            for source in sources:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, READ_CHUNK)
        self._publish(entry_id, assembled)

    def _publish(self, entry_id: int, source: Path) -> None:
        target = self.blob_path(entry_id)
        target.parent.mkdir(exist_ok=True)
        os.replace(source, target)

    def _complete_sync(self, entry: Entry, size: int) -> _Usage:
        """Mark the entry complete (its blob is in place) and measure what the commit-time
        eviction needs."""
        with self._stamps_lock:
            self._stamps.pop(entry.id, None)
        now = now_ms()
        with self._transaction():
            self.conn.execute(
                "UPDATE entries SET size = ?, complete = 1, used_at = ? WHERE id = ?",
                (size, now, entry.id),
            )
        self._index.put(dataclasses.replace(entry, size=size, complete=True, used_at=now))
        _remove_tree(self.staging(entry.id))
        return _Usage(
            repo=self._complete_bytes(entry.repo) if self.policy.repo_size_limit > 0 else 0,
            total=self._complete_bytes() if self.policy.size_limit > 0 else 0,
            free=_free_bytes_sync(self.root),
        )

    # -- downloading ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_blob(self, entry_id: int, read_ahead: int = 0) -> AsyncIterator[Blob]:
        """The committed archive; eviction skips it while this is open. Its first
        ``read_ahead`` bytes are read in the same hop (a small archive is then served
        with no other)."""
        if entry_id in self._deleting:
            raise StoreError(404, f"cache {entry_id}: not found")
        entry = self._index.get(entry_id)
        if entry is None or not entry.complete:
            await trio.lowlevel.checkpoint()
            raise StoreError(404, f"cache {entry_id}: not found")
        self._stamp(entry_id)
        self._readers[entry_id] = self._readers.get(entry_id, 0) + 1
        try:

            def open_sync() -> Blob | None:
                try:
                    handle = self.blob_path(entry_id).open("rb")
                except FileNotFoundError:
                    return None
                try:
                    size = os.fstat(handle.fileno()).st_size
                    head = os.pread(handle.fileno(), min(read_ahead, size), 0)
                except BaseException:
                    handle.close()
                    raise
                return Blob(handle, size, head)

            blob = await trio.to_thread.run_sync(open_sync)
            if blob is None:
                log.warning("cache entry %d lost its blob; dropping it", entry_id)
                await self._delete_sync_guarded(entry_id)
                raise StoreError(404, f"cache {entry_id}: not found")
            try:
                yield blob
            finally:
                blob.handle.close()
        finally:
            left = self._readers[entry_id] - 1
            if left:
                self._readers[entry_id] = left
            else:
                del self._readers[entry_id]

    # -- eviction -------------------------------------------------------------------------

    async def _delete(self, entry_ids: Sequence[int]) -> None:
        """Delete entries nobody is reading or writing."""
        for entry_id in entry_ids:
            if self._readers.get(entry_id) or self._writers.get(entry_id):
                continue
            if entry_id in self._deleting or entry_id in self._finishing:
                continue
            await self._delete_sync_guarded(entry_id)

    async def _delete_sync_guarded(self, entry_id: int) -> None:
        """Delete one entry; downloads starting meanwhile see it as gone."""
        self._deleting.add(entry_id)
        try:
            with trio.CancelScope(shield=True):
                await self._db(self._delete_sync, entry_id)
        finally:
            self._deleting.discard(entry_id)

    def _delete_sync(self, entry_id: int) -> None:
        """Files first, then the row; a file that will not go keeps its row (spec 10.4)."""
        try:
            self.blob_path(entry_id).unlink(missing_ok=True)
            _remove_tree(self.staging(entry_id), strict=True)
        except OSError as exc:
            log.warning("cannot delete files of cache entry %d: %s", entry_id, exc.strerror)
            return
        with self._transaction():
            self.conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        self._index.drop(entry_id)

    def _select(self, sql: str, *params: object) -> list[Entry]:
        """Entries of a sweep or eviction query, which may select or order by ``used_at``."""
        self.write_stamps()
        return [_entry(r) for r in self.conn.execute(sql, params).fetchall()]

    async def sweep(self) -> None:
        """All eviction passes of spec 11.2, in order."""
        now = now_ms()
        stale = await self._db(
            self._select,
            f"SELECT {_COLUMNS} FROM entries WHERE complete = 0 AND used_at < ?",
            now - STALL_TIMEOUT_MS,
        )
        await self._delete([e.id for e in stale])
        if self.policy.retention > 0:
            cutoff = now - max(int(self.policy.retention * 1000), IN_USE_GRACE_MS)
            expired = await self._db(
                self._select, f"SELECT {_COLUMNS} FROM entries WHERE used_at < ?", cutoff
            )
            await self._delete([e.id for e in expired])
        superseded = await self._db(
            self._select,
            f"SELECT {_COLUMNS} FROM entries e WHERE complete = 1 AND EXISTS ("
            " SELECT 1 FROM entries n WHERE n.complete = 1 AND n.repo = e.repo"
            " AND n.key = e.key AND n.version = e.version AND (n.created_at > e.created_at"
            " OR (n.created_at = e.created_at AND n.id > e.id)))",
        )
        await self._delete([e.id for e in superseded if not self.in_use(e, now)])
        if self.policy.repo_size_limit > 0:
            repos = await self._db(
                lambda: [
                    str(r[0])
                    for r in self.conn.execute(
                        "SELECT repo FROM entries WHERE complete = 1 GROUP BY repo"
                        " HAVING SUM(size) > ?",
                        (self.policy.repo_size_limit,),
                    )
                ]
            )
            for repo in repos:
                await self._evict_repo(repo)
        await self._evict_total()
        await self._evict_for_free_space()

    async def _evict_repo(self, repo: str) -> None:
        entries = await self._db(
            self._select,
            f"SELECT {_COLUMNS} FROM entries WHERE complete = 1 AND repo = ? ORDER BY used_at",
            repo,
        )
        await self._evict_to_limit(entries, self.policy.repo_size_limit)

    async def _evict_total(self) -> None:
        limit = self.policy.size_limit
        if limit <= 0:
            return
        total = await self._db(self._complete_bytes)
        if total > limit:
            await self._evict_to_limit(await self._all_complete(), limit)

    async def _all_complete(self) -> list[Entry]:
        return await self._db(
            self._select, f"SELECT {_COLUMNS} FROM entries WHERE complete = 1 ORDER BY used_at"
        )

    def _complete_bytes(self, repo: str | None = None) -> int:
        sql = "SELECT COALESCE(SUM(size), 0) FROM entries WHERE complete = 1"
        row = (
            self.conn.execute(sql).fetchone()
            if repo is None
            else self.conn.execute(sql + " AND repo = ?", (repo,)).fetchone()
        )
        return int(row[0])

    async def _evict_for_free_space(self) -> None:
        free = await _free_bytes(self.root)
        if free is None or free >= self.policy.min_free_disk:
            return
        shortfall = self.policy.min_free_disk - free
        entries = await self._all_complete()
        total = sum(e.size for e in entries)
        if total < shortfall:
            log.warning(
                "free disk space of the cache volume is below the floor and the cache holds "
                "only %d bytes: something else is filling the volume",
                total,
            )
        await self._evict_to_limit(entries, max(total - shortfall, 0))

    async def _evict_to_limit(self, entries: Sequence[Entry], limit: int) -> None:
        """Spec 11.3: oversized entries first, then least recently used; in-use entries stay
        and still count."""
        now = now_ms()
        total = sum(e.size for e in entries)
        victims: list[Entry] = []
        for entry in entries:
            if entry.size > limit and not self.in_use(entry, now):
                log.warning(
                    "evicting cache entry %r of %s: %d bytes exceed the limit of %d",
                    entry.key,
                    entry.repo,
                    entry.size,
                    limit,
                )
                victims.append(entry)
                total -= entry.size
        for entry in entries:
            if total <= limit:
                break
            if entry in victims or self.in_use(entry, now):
                continue
            victims.append(entry)
            total -= entry.size
        await self._delete([v.id for v in victims])

    async def _enforce_limits(self, repo: str, usage: _Usage) -> None:
        """Commit-time eviction (spec 11.4), from the usage measured at the commit: each
        pass only shrinks it, so a figure within its limit stays within it."""
        if 0 < self.policy.repo_size_limit < usage.repo:
            await self._evict_repo(repo)
        if 0 < self.policy.size_limit < usage.total:
            await self._evict_total()
        if usage.free is not None and usage.free < self.policy.min_free_disk:
            await self._evict_for_free_space()

    async def run_background(self) -> None:
        """Until cancelled: sweep every ``sweep_interval`` (the first sweep ran at open) and
        write pending ``used_at`` stamps every ``STAMP_INTERVAL``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_sweeps)
            while True:
                await trio.sleep(STAMP_INTERVAL)
                if self._stamps:
                    try:
                        await self._db(self.write_stamps)
                    except sqlite3.Error as exc:
                        log.warning("cache: writing last-use times failed: %s", exc)

    async def _run_sweeps(self) -> None:
        while True:
            await trio.sleep(self.policy.effective_sweep_interval)
            try:
                await self.sweep()
            except (OSError, sqlite3.Error) as exc:
                log.warning("cache sweep failed: %s", exc)


@dataclass(frozen=True, slots=True)
class Blob:
    """An open committed archive: its size and the bytes read ahead from its start."""

    handle: BinaryIO
    size: int
    head: bytes


@dataclass(frozen=True, slots=True)
class _Usage:
    """Bytes of complete entries (of one repo, in all; 0 when that limit is off) and
    free disk space (None: unknown) right after a commit."""

    repo: int
    total: int
    free: int | None


def _free_bytes_sync(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


async def _free_bytes(path: Path) -> int | None:
    return await trio.to_thread.run_sync(_free_bytes_sync, path)


class _Body:
    """A request body regrouped into batches of about ``WRITE_BUFFER`` bytes.

    Pulling stops as soon as more than ``expected`` or ``limit`` bytes came, before any of
    the excess is written; :meth:`check` then names the problem, so callers can run their
    other checks first.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], expected: int | None, limit: int | None = None
    ) -> None:
        self._chunks = chunks
        self.expected = expected
        self.limit = limit
        self.received = 0
        self.ended = False

    def _too_long(self) -> bool:
        return (self.limit is not None and self.received > self.limit) or (
            self.expected is not None and self.received > self.expected
        )

    async def batch(self) -> list[bytes]:
        """The next pieces; fewer than a batch only at the end (then :attr:`ended`) or
        when the body is too long."""
        pieces: list[bytes] = []
        buffered = 0
        while buffered < WRITE_BUFFER and len(pieces) < _MAX_PIECES and not self._too_long():
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self.ended = True
                break
            pieces.append(chunk)
            buffered += len(chunk)
            self.received += len(chunk)
        return pieces

    def check(self) -> None:
        if self.limit is not None and self.received > self.limit:
            raise StoreError(413, "upload exceeds the maximum entry size")
        if self.expected is not None and self.received > self.expected:
            raise StoreError(400, "body length does not match Content-Range")


async def _receive(
    fd: int,
    offset: int,
    body: _Body,
    first: list[bytes],
    *,
    finish: Callable[[], object] | None = None,
) -> None:
    """Write ``first`` (the body's first batch) and the rest of ``body`` at ``offset``.
    ``finish`` runs after the last write, in the same worker-thread hop, when the body
    had its expected length (or none was expected).

    While a batch is written in a worker thread the next one is received, and no more:
    the receiving side then waits, and so does the client, through hypercorn's queue and
    the socket. The pieces are written as they arrived (``pwritev``), without joining.
    """
    pieces = first
    position = offset
    if not body.ended:
        send, receive = trio.open_memory_channel[tuple[list[bytes], int]](0)
        with _single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write_batches, fd, receive)
                async with send:
                    while not body.ended:
                        body.check()
                        await send.send((pieces, position))
                        position += sum(map(len, pieces))
                        pieces = await body.batch()
    body.check()
    run_finish = finish is not None and body.expected in (None, body.received)

    def last_write() -> None:
        _pwritev_all(fd, pieces, position)
        if run_finish and finish is not None:
            finish()

    if pieces or run_finish:
        await trio.to_thread.run_sync(last_write)


async def _write_batches(
    fd: int, batches: trio.MemoryReceiveChannel[tuple[list[bytes], int]]
) -> None:
    async with batches:
        async for pieces, position in batches:
            await trio.to_thread.run_sync(_pwritev_all, fd, pieces, position)


@contextlib.contextmanager
def _single_error() -> Iterator[None]:
    """Let the one error of a nursery out as itself: callers map it to a status."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def read_blob(
    blob: Blob, start: int, end: int, deliver: Callable[[bytes], Awaitable[object]]
) -> None:
    """Hand ``deliver`` bytes ``start`` to ``end`` of ``blob`` in chunks of ``READ_CHUNK``.

    Bytes already in the page cache are read on the trio thread with ``RWF_NOWAIT``, which
    the kernel answers at once or refuses (it never waits for the disk); only what it
    refuses is read by a worker thread. A download of a recently written or read blob then
    costs no thread hop per chunk."""
    fd = blob.handle.fileno()
    buffer = bytearray(min(READ_CHUNK, max(end - start, 0)))
    view = memoryview(buffer)
    position = start
    while position < end:
        want = min(len(buffer), end - position)
        got = _read_cached(fd, view[:want], position)
        # ASGI bodies are bytes; the buffer itself is reused for the next read.
        chunk = (
            bytes(view[:got])
            if got
            else await trio.to_thread.run_sync(os.pread, fd, want, position)
        )
        if not chunk:
            return
        position += len(chunk)
        await deliver(chunk)


def _read_cached(fd: int, into: memoryview, position: int) -> int:
    """Bytes read into ``into`` without waiting for the disk; 0 when none are cached."""
    if _NOWAIT is None:
        return 0
    try:
        return os.preadv(fd, [into], position, _NOWAIT)
    except OSError:  # not cached (EAGAIN), or the file system cannot do it
        return 0


def _pwritev_all(fd: int, pieces: list[bytes], offset: int) -> None:
    views = [memoryview(piece) for piece in pieces]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _stored_parts(staging: Path) -> list[_Part]:
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return []
    return [p for p in map(_Part.parse, names) if p is not None]


def _open_data(staging: Path) -> int:
    staging.mkdir(parents=True, exist_ok=True)
    return os.open(staging / "data", os.O_RDWR | os.O_CREAT, 0o644)


def _open_new(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _staged_block_bytes(staging: Path) -> int:
    return sum(p.stat().st_size for p in staging.glob("block-*") if not p.name.endswith(".tmp"))


def _drop_blocks(staging: Path, keep: set[str]) -> None:
    """Remove staged blocks not in ``keep`` (and the block list when keeping none)."""
    for block in staging.glob("block-*"):
        if block.name not in keep and not block.name.endswith(".tmp"):
            block.unlink(missing_ok=True)
    if not keep:
        (staging / "blocklist.json").unlink(missing_ok=True)


def _remove_tree(path: Path, *, strict: bool = False) -> None:
    try:
        _remove_flat(path)
        return
    except OSError:
        pass
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        if strict:
            raise


def _remove_flat(path: Path) -> None:
    """Remove a directory of plain files, as staging directories are: much cheaper than
    ``shutil.rmtree``, which stays the fallback for anything else."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
    os.rmdir(path)
