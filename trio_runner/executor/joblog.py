"""The one choke point every line of a job passes on its way out of the executor.

Process output arrives as byte chunks; it is split into lines (LF, a trailing CR
removed), decoded with replacement, handed to the workflow-command processor, masked,
made safe for a row and passed to the sink in batches sharing one timestamp. Runner
messages take the same path minus the command processing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from trio_runner.executor.sink import JobSink
from trio_runner.masking import Masker, decode_output, row_safe

#: Turns one output line into the rows to write (a command may drop or add rows).
LineFilter = Callable[[str], list[str]]


def _now() -> datetime:
    return datetime.now(UTC)


class JobLog:
    """Masks and forwards rows of one job to its sink."""

    def __init__(self, sink: JobSink, masker: Masker) -> None:
        self.sink = sink
        self.masker = masker

    async def write(self, text: str) -> None:
        """Write a runner message; several lines become several rows."""
        await self._emit(self._lines(text.split("\n"), None), _now())

    def output(self, commands: LineFilter | None) -> ProcessOutput:
        """A line splitter for one process; ``commands`` sees lines that may be commands."""
        return ProcessOutput(self, commands)

    def _lines(self, lines: list[str], commands: LineFilter | None) -> list[str]:
        mask = self.masker.mask
        out: list[str] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith("\r") else raw
            # Only lines that can be commands pay for the processor (the common case skips).
            if commands is not None and ("::" in line or "##[" in line):
                out.extend(row_safe(mask(row)) for row in commands(line))
            else:
                out.append(row_safe(mask(line)))
        return out

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
        await self._log._emit(self._log._lines(text.split("\n"), self._commands), _now())

    async def close(self) -> None:
        if self._pending:
            text = decode_output(self._pending)
            self._pending = b""
            await self._log._emit(self._log._lines([text], self._commands), _now())
