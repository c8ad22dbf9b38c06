"""How a step run by ``exec`` in the job container tells its end and exit code.

The engine closes an exec's output stream, and publishes its exit code, some 20-50 ms
after the process ended, and reading the code is one more round trip. The step runs
under a small shell wrapper that prints one last line carrying a per-step random marker
and the exit code; :class:`StepExit` forwards the output up to that line and reports the
code as soon as the line arrives. Without the line (the wrapper was killed), the stream's
end and the engine's exit code decide, as before.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from trio_runner.backends.base import OutputHandler

#: ``sh -c WRAPPER sh <pidfile> <marker> <argv...>``. The shell records its pid and leads
#: the step's process group (an exec starts a session), so cancellation can signal the
#: whole group from a second exec. The step's stderr joins its stdout, as on the host, so
#: the last line follows all of the step's own output. The shell's own messages (such as
#: ``Killed`` for a step killed by a signal) are not the step's: its stderr is dropped,
#: and the step's redirection is made inside a subshell, because the shell prints them
#: while a command's own redirections are in force. The shell traps INT and TERM (a
#: handler, not an ignore: the subshell and the step get them as usual) to outlive a
#: step that handles them and still report its code.
STEP_WRAPPER = (
    'echo $$ > "$1" && end=$2 && shift 2 && exec 2>/dev/null && trap : INT TERM && '
    '(exec 2>&1 && exec "$@"); code=$?; printf "%s%d\\n" "$end" "$code"; exit "$code"'
)


class StepExit:
    """Filters a wrapped step's output: forwards everything before the exit line, keeps
    the code from it, and calls ``on_exit`` once it arrived."""

    def __init__(self, output: OutputHandler, on_exit: Callable[[], object]) -> None:
        self.marker = f"::trio-runner-exit-{secrets.token_hex(16)}::"
        self.code: int | None = None
        self._needle = self.marker.encode()
        self._output = output
        self._on_exit = on_exit
        # Bytes that may be the start of the exit line, held back until the next chunk.
        self._held = b""

    async def feed(self, chunk: bytes) -> None:
        if self.code is not None:
            return  # a background child of the step, writing after the step ended
        data = self._held + chunk
        index = data.find(self._needle)
        if index < 0:
            keep = _partial_suffix(data, self._needle)
            self._held = data[len(data) - keep :]
            if keep < len(data):
                await self._output(data[: len(data) - keep])
            return
        if index:
            await self._output(data[:index])
        rest = data[index + len(self._needle) :]
        line, newline, _ = rest.partition(b"\n")
        if not newline:
            self._held = data[index:]
            return
        self._held = b""
        self.code = int(line) if line.strip().isdigit() else None
        if self.code is None:
            # Not the wrapper's line after all (it always prints a number): plain output.
            await self._output(data[index:])
            return
        self._on_exit()

    async def flush(self) -> None:
        """The output ended without an exit line: pass on what was held back."""
        held, self._held = self._held, b""
        if held and self.code is None:
            await self._output(held)


def _partial_suffix(data: bytes, needle: bytes) -> int:
    """The length of the longest end of ``data`` that begins ``needle``."""
    for size in range(min(len(data), len(needle) - 1), 0, -1):
        if data.endswith(needle[:size]):
            return size
    return 0
