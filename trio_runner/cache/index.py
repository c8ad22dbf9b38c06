"""The entries table mirrored in memory, so that lookups (spec 8) and the reservation
checks of uploads and commits are answered on the trio thread, without a worker-thread
hop: for a small entry the hops, not the bytes, are most of the server's work.

SQLite stays the record. The store changes a row there first and then here, in the same
step under the connection lock; this index has its own short lock so the trio thread can
read while a worker thread writes. ``used_at`` of a mirrored row is what SQLite held when
the row last changed here; the store keeps newer stamps itself.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    repo: str
    key: str
    version: str
    size: int
    complete: bool
    created_at: int
    used_at: int


def _newer(a: Entry, b: Entry | None) -> bool:
    return b is None or (a.created_at, a.id) > (b.created_at, b.id)


class EntryIndex:
    """Every row by id, and the complete entries by ``(repo, version)`` and key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, Entry] = {}
        #: keys of complete entries per (repo, version), sorted by code point, which is
        #: the order SQLite gives UTF-8 text: a prefix's matches are one run of this list
        self._keys: dict[tuple[str, str], list[str]] = {}
        self._complete: dict[tuple[str, str, str], list[Entry]] = {}

    def load(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            self._rows.clear()
            self._keys.clear()
            self._complete.clear()
            for entry in entries:
                self._rows[entry.id] = entry
                if entry.complete:
                    self._list(entry)

    def get(self, entry_id: int) -> Entry | None:
        return self._rows.get(entry_id)

    def put(self, entry: Entry) -> None:
        """Add a row or replace the row with the same id."""
        with self._lock:
            old = self._rows.get(entry.id)
            if old is not None:
                self._unlist(old)
            self._rows[entry.id] = entry
            if entry.complete:
                self._list(entry)

    def drop(self, entry_id: int) -> None:
        with self._lock:
            old = self._rows.pop(entry_id, None)
            if old is not None:
                self._unlist(old)

    def match(self, repo: str, keys: Sequence[str], version: str) -> Entry | None:
        """Spec 8: for each key in turn, the newest complete entry with exactly that key,
        else the newest whose key starts with it."""
        with self._lock:
            sorted_keys = self._keys.get((repo, version))
            if not sorted_keys:
                return None
            for key in keys:
                exact = self._complete.get((repo, version, key))
                if exact:
                    return self._newest(exact)
                best: Entry | None = None
                for stored in sorted_keys[bisect_left(sorted_keys, key) :]:
                    if not stored.startswith(key):
                        break
                    candidate = self._newest(self._complete[(repo, version, stored)])
                    if _newer(candidate, best):
                        best = candidate
                if best is not None:
                    return best
            return None

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def _newest(entries: list[Entry]) -> Entry:
        best = entries[0]
        for entry in entries[1:]:
            if _newer(entry, best):
                best = entry
        return best

    def _list(self, entry: Entry) -> None:
        group = self._complete.setdefault((entry.repo, entry.version, entry.key), [])
        if not group:
            insort(self._keys.setdefault((entry.repo, entry.version), []), entry.key)
        group.append(entry)

    def _unlist(self, entry: Entry) -> None:
        if not entry.complete:
            return
        triple = (entry.repo, entry.version, entry.key)
        group = [e for e in self._complete.get(triple, []) if e.id != entry.id]
        if group:
            self._complete[triple] = group
            return
        self._complete.pop(triple, None)
        keys = self._keys.get((entry.repo, entry.version), [])
        at = bisect_left(keys, entry.key)
        if at < len(keys) and keys[at] == entry.key:
            del keys[at]
        if not keys:
            self._keys.pop((entry.repo, entry.version), None)
