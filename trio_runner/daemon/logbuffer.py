"""The unacknowledged tail of one task's log: compact storage, batches, acks, back-pressure.

Back-pressure bounds both the rows and their estimated bytes, so the memory a task's
log holds does not depend on how long its lines are.

Rows are kept as the chunks the executor handed over (one timestamp and a tuple of
lines per chunk), so buffering a row costs a slot in a tuple and nothing else; LogRow
Structs are built only for the rows of a request. Rows leave the buffer only when the
server's ``ack_index`` covers them (runner-protocol 10.5), so a failed, lost or partly
acknowledged call is simply repeated from ``offset``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime

import trio

from trio_runner.gitea.messages import LogRow

#: Gitea cuts rows at 64 KiB by bytes, possibly inside a UTF-8 sequence (spec 8.1).
MAX_ROW_BYTES = 64 * 1024
# No string of this many characters or fewer can exceed MAX_ROW_BYTES in UTF-8.
_SAFE_ROW_CHARS = MAX_ROW_BYTES // 4
#: Estimated JSON bytes of a row besides its content: the time and the field names.
ROW_OVERHEAD = 56

_Chunk = tuple[datetime, tuple[str, ...], int]


class LogLostError(Exception):
    """The server acknowledged fewer rows than it had before: stored rows were lost."""


def cut_row(content: str) -> str:
    """``content`` cut to MAX_ROW_BYTES of UTF-8 at a character boundary."""
    data = content.encode()
    if len(data) <= MAX_ROW_BYTES:
        return content
    return data[:MAX_ROW_BYTES].decode(errors="ignore")


def _estimate(lines: Sequence[str]) -> int:
    # Characters, not bytes: exact for ASCII, and cheap because it runs in C.
    return sum(map(len, lines)) + ROW_OVERHEAD * len(lines)


class LogBuffer:
    """Rows appended by the job and not yet acknowledged by the server.

    ``appended`` counts every row ever accepted (the absolute index of the next row),
    ``offset`` is the last acknowledged ``ack_index``. At most one batch is in flight:
    ``take`` marks its rows, ``settle`` applies the answer (or the failure). Rows sent
    without an answer are *unconfirmed*: the server may or may not hold them. Once
    closed (log sealed, archived, lost, or the task gone) rows are still counted, so
    step sections stay right, but no longer stored.
    """

    def __init__(self, max_rows: int, max_request_bytes: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_request_bytes = max_request_bytes
        self.max_bytes = max_bytes
        self.appended = 0
        self.offset = 0
        self.in_flight = 0
        self.is_open = True
        self._sent_upto = 0
        self._chunks: deque[_Chunk] = deque()
        self._head_skip = 0
        self._buffered = 0
        self._held_bytes = 0
        self._space = trio.Event()

    @property
    def buffered(self) -> int:
        """Rows held, including those of the batch in flight."""
        return self._buffered

    @property
    def unsent(self) -> int:
        """Rows held that are not part of the batch in flight."""
        return self._buffered - self.in_flight

    @property
    def unconfirmed(self) -> bool:
        """Rows were sent whose fate is unknown (their answer never came)."""
        return self._sent_upto > self.offset

    @property
    def held_bytes(self) -> int:
        """Estimated JSON bytes of the rows held."""
        return self._held_bytes

    def _full(self) -> bool:
        return self._buffered >= self.max_rows or self._held_bytes >= self.max_bytes

    async def wait_for_space(self) -> None:
        """Block while ``max_rows`` rows or ``max_bytes`` are held (and the buffer is open)."""
        while self.is_open and self._full():
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()

    def append(self, contents: Sequence[str], time: datetime) -> None:
        """Accept the rows of one chunk, cutting rows longer than MAX_ROW_BYTES."""
        self.appended += len(contents)
        if not self.is_open or not contents:
            return
        lines = tuple(contents)
        chars = sum(map(len, lines))
        if chars > _SAFE_ROW_CHARS and max(map(len, lines)) > _SAFE_ROW_CHARS:
            lines = tuple(map(cut_row, lines))
            chars = sum(map(len, lines))
        size = chars + ROW_OVERHEAD * len(lines)
        self._chunks.append((time, lines, size))
        self._buffered += len(lines)
        self._held_bytes += size

    def take(self) -> list[LogRow]:
        """The rows from ``offset`` on, at most about ``max_request_bytes``, now in flight.

        Always at least one row when any is held, however large it is.
        """
        rows: list[LogRow] = []
        budget = self.max_request_bytes
        skip = self._head_skip
        for time, lines, size in self._chunks:
            if skip:
                lines = lines[skip:]
                size = _estimate(lines)
                skip = 0
            if size <= budget:
                rows.extend([LogRow(time=time, content=line) for line in lines])
                budget -= size
                continue
            for line in lines:
                cost = len(line) + ROW_OVERHEAD
                if cost > budget and rows:
                    break
                rows.append(LogRow(time=time, content=line))
                budget -= cost
            break
        self.in_flight = len(rows)
        self._sent_upto = max(self._sent_upto, self.offset + len(rows))
        return rows

    def settle(self, ack_index: int | None) -> int:
        """End the call in flight with the server's ``ack_index`` (None: no answer).

        Returns how many rows the answer acknowledged; raises LogLostError when the
        server went back below ``offset``. An ``ack_index`` beyond the rows ever sent is
        clamped; an answer confirms what the server holds, so nothing stays unconfirmed.
        """
        self.in_flight = 0
        if ack_index is None or not self.is_open:
            return 0
        if ack_index < self.offset:
            raise LogLostError(f"acknowledged {ack_index} rows after {self.offset}")
        acked = min(ack_index, self._sent_upto) - self.offset
        if acked:
            self._drop(acked)
        self._sent_upto = self.offset
        return acked

    def close(self) -> None:
        """Stop storing rows and release everything held (and any blocked writer)."""
        self.is_open = False
        self._chunks.clear()
        self._head_skip = 0
        self._buffered = 0
        self._held_bytes = 0
        self.in_flight = 0
        self._space.set()

    def _drop(self, count: int) -> None:
        self.offset += count
        self._buffered -= count
        skip = self._head_skip
        while count and self._chunks:
            _time, lines, size = self._chunks[0]
            left = len(lines) - skip
            if count < left:
                self._held_bytes -= _estimate(lines[skip : skip + count])
                skip += count
                break
            # What is left of a chunk is its size minus the parts dropped before.
            self._held_bytes -= _estimate(lines[skip:]) if skip else size
            self._chunks.popleft()
            count -= left
            skip = 0
        self._head_skip = skip
        if not self._full():
            self._space.set()
