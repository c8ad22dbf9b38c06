"""The one choke point every line of a job passes on its way out of the executor.

Process output arrives as byte chunks; it is split into lines (LF, a trailing CR
removed), decoded with replacement, handed to the workflow-command processor, masked,
made safe for a row and passed to the sink in batches sharing one timestamp. Runner
messages take the same path minus the command processing.

A chunk is handled as a block as far as possible: lines that cannot be commands are
masked and checked together (see :meth:`Masker.mask_lines` and :func:`safe_rows`), so a
busy log costs a few C-level passes per chunk instead of several calls per line. Only a
line that may be a command is taken on its own, in order, because a command can change
the masks of the lines after it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from trio_runner.executor.sink import JobSink
from trio_runner.masking import Masker, decode_output, drop_line_end_cr, row_safe, safe_rows

#: Turns one output line into the rows to write (a command may drop or add rows).
LineFilter = Callable[[str], list[str]]


def _now() -> datetime:
    return datetime.now(UTC)


def _may_be_command(text: str) -> bool:
    return "::" in text or "##[" in text


class JobLog:
    """Masks and forwards rows of one job to its sink."""

    def __init__(self, sink: JobSink, masker: Masker) -> None:
        self.sink = sink
        self.masker = masker

    async def write(self, text: str) -> None:
        """Write a runner message; several lines become several rows."""
        await self._emit(self._rows(text, None), _now())

    def output(self, commands: LineFilter | None) -> ProcessOutput:
        """A line splitter for one process; ``commands`` sees lines that may be commands."""
        return ProcessOutput(self, commands)

    def _rows(self, text: str, commands: LineFilter | None) -> list[str]:
        """The rows of LF-separated ``text``."""
        text = drop_line_end_cr(text)
        if commands is None or not _may_be_command(text):
            return self._plain(text)
        out: list[str] = []
        lines = text.split("\n")
        start = 0
        for index, line in enumerate(lines):
            if _may_be_command(line):
                if start < index:
                    out += self._plain("\n".join(lines[start:index]))
                mask = self.masker.mask
                out += [row_safe(mask(row)) for row in commands(line)]
                start = index + 1
        if start < len(lines):
            out += self._plain("\n".join(lines[start:]))
        return out

    def _plain(self, text: str) -> list[str]:
        """Rows of lines that are not commands: masked together, then made row-safe."""
        return safe_rows(self.masker.mask_lines(text))

    async def _emit(self, rows: list[str], time: datetime) -> None:
        if rows:
            await self.sink.rows(rows, time)


class ProcessOutput:
    """Splits one process's byte stream into rows; call ``close`` when it ends."""

    def __init__(self, log: JobLog, commands: LineFilter | None) -> None:
        self._log = log
        self._commands = commands
        self._pending = b""

    async def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return
        self._pending = data[cut + 1 :]
        # A UTF-8 sequence never contains a LF byte, so decoding up to a LF is safe.
        text = decode_output(data[:cut])
        await self._log._emit(self._log._rows(text, self._commands), _now())

    async def close(self) -> None:
        if self._pending:
            text = decode_output(self._pending)
            self._pending = b""
            await self._log._emit(self._log._rows(text, self._commands), _now())
