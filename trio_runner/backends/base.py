"""The Environment protocol: where the steps of one job run (host or container).

The executor only speaks to this protocol; it never imports a concrete backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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

    async def hash_files(self, arguments: Sequence[str]) -> str:
        """The ``hashFiles(...)`` result (workflow-execution 5.8) over the environment's
        own files; OSError or ValueError when it fails (TimeoutError past its bound)."""
        ...

    async def which(self, command: str, path: str) -> str | None:
        """The absolute path of ``command`` on the ``PATH`` value given, or None."""
        ...

    def job_context(self) -> dict[str, Any]:
        """The ``container`` and ``services`` parts of the ``job`` context (4.2)."""
        ...

    async def kill(self) -> None:
        """Kill every process of the job at once (a second interrupt); no cleanup."""
        ...


@dataclass(frozen=True)
class ContainerStep:
    """One phase of a docker action or a ``docker://`` step (workflow-execution 3.10).

    Exactly one of ``image`` and ``dockerfile`` is set. ``image`` is a reference to
    pull (``docker://`` removed). ``dockerfile`` is a Dockerfile to build with
    ``build_context`` as context and ``tag`` as the image name; ``context_is_local``
    says whether that directory is on the runner's machine (remote actions, from the
    action cache) or inside the job environment (local ``./`` actions). ``entrypoint``
    None keeps the image's; ``args`` is the command. ``env`` is the complete step
    environment (defaults, ``INPUT_*``, ``runs.env``). ``key`` is the step key for the
    container name (``STEP-<key>``).
    """

    key: str
    env: Mapping[str, str]
    image: str = ""
    dockerfile: str = ""
    build_context: str = ""
    context_is_local: bool = True
    tag: str = ""
    entrypoint: list[str] | None = None
    args: list[str] = field(default_factory=list)


@runtime_checkable
class ContainerSteps(Protocol):
    """An environment that can run docker actions (optional next to Environment)."""

    async def run_container_step(self, step: ContainerStep, *, output: OutputHandler) -> int:
        """Pull or build the image, run the container to completion, return its exit code.

        Same output and cancellation contract as ``Environment.exec``; the container
        is removed afterwards.
        """
        ...
