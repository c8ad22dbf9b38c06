"""The Environment protocol: where the steps of one job run (host or container).

The executor only speaks to this protocol; it never imports a concrete backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

#: Receives raw output bytes of a process (stdout and stderr merged, arrival order).
OutputHandler = Callable[[bytes], Awaitable[None]]


class Environment(Protocol):
    """A started job environment. Paths are as seen from inside the environment."""

    workspace: str
    runner_dir: str
    temp_dir: str
    tool_cache: str
    #: PATH a step gets when its environment sets none (the image's, or the runner's).
    default_path: str

    async def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        output: OutputHandler,
    ) -> int:
        """Run a process to completion and return its exit status.

        ``env`` holds the job's variables; the environment adds them on top of its own
        base (the runner's environment on the host, the image's in a container).

        Output is delivered to ``output`` as it arrives. When the calling scope is
        cancelled, the process tree gets SIGINT, then SIGTERM 7.5 s later and SIGKILL
        2.5 s after that (shielded; output keeps flowing), and Cancelled propagates.
        """
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    async def read_file(self, path: str) -> bytes: ...

    async def which(self, command: str, path: str) -> str | None:
        """The absolute path of ``command`` on the ``PATH`` value given, or None."""
        ...

    def job_context(self) -> dict[str, Any]:
        """The ``container`` and ``services`` parts of the ``job`` context (4.2)."""
        ...

    async def kill(self) -> None:
        """Kill every process of the job at once (a second interrupt); no cleanup."""
        ...
