"""Host backend: steps run as processes on this machine, each in its own process group.

A job gets a private directory ``<workdir_parent>/<J>`` holding the runner dir, the
workspace, a temp dir and a tool cache. Every process started for the job carries a
marker variable in its environment, so teardown can find and kill whatever a step left
behind, even processes that moved to a session of their own. Docker actions and
``docker://`` steps (3.10) go to the job's container engine, when it has one
(:class:`~trio_runner.backends.host_engine.HostEngine`).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from trio_runner.backends.base import ContainerStep, OutputHandler
from trio_runner.backends.host_engine import HostEngine
from trio_runner.errors import RunnerError
from trio_runner.workflow.expressions.hashfiles import hash_files

#: Environment variable carrying the job's marker into every process it starts.
JOB_MARKER_VAR = "TRIO_RUNNER_JOB"

# GitHub's runner escalation when a step is cancelled: SIGINT, SIGTERM, SIGKILL.
SIGINT_GRACE = 7.5
SIGTERM_GRACE = 2.5
# After the main process exits and what it wrote is forwarded, a background child may
# still hold the output pipe open; what it writes within this window is still forwarded.
DRAIN_IDLE = 0.05
TEARDOWN_BUDGET = 30.0
# Bigger reads of a bigger pipe: a busy step wakes the runner less often and its lines
# are handled in larger blocks.
READ_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024
# Files up to this size are read and written inline: on a local disk that takes
# microseconds, far less than the hop to a worker thread (a step reads and writes a
# dozen small command files).
INLINE_FILE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031


class HostEnvironment:
    """A started host job environment (see the Environment protocol)."""

    def __init__(self, root: Path, tool_cache: Path | None = None) -> None:
        self.root = root
        self.marker = root.name
        self.workspace = str(root / "hostexecutor")
        self.runner_dir = str(root / "act")
        self.temp_dir = str(root / "tmp")
        self.tool_cache = str(tool_cache or root / "tool_cache")
        self.default_path = os.environ.get("PATH", os.defpath)
        #: ``job.services``: the job's service containers, when an engine runs them (2.6).
        self.services: dict[str, dict[str, Any]] = {}
        #: Runs the job's container steps; None: the job has no container engine.
        self.containers: HostEngine | None = None
        self._groups: set[int] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, workdir_parent: str, *, shared_tool_cache: bool = False
    ) -> AsyncIterator[HostEnvironment]:
        """Create the job directories; on exit kill leftovers and delete them."""
        env = _create_job_dirs(cls, workdir_parent, shared_tool_cache)
        try:
            yield env
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_BUDGET):
                await env.teardown()

    async def teardown(self) -> None:
        """Kill every process of the job, then remove the job directory."""
        await self.kill()
        await trio.to_thread.run_sync(shutil.rmtree, self.root, True)

    async def run_container_step(self, step: ContainerStep, *, output: OutputHandler) -> int:
        """ContainerSteps: the step runs in the job's container engine."""
        if self.containers is None:
            raise RunnerError("no container engine is set up for this job")
        return await self.containers.run_container_step(step, output=output)

    async def kill(self) -> None:
        if self.containers is not None:
            await self.containers.kill()
        for pgid in self._groups:
            _signal_group(pgid, signal.SIGKILL)
        for pid in await trio.to_thread.run_sync(_marked_processes, self.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def job_context(self) -> dict[str, Any]:
        return {
            "container": {"id": "", "network": ""},
            "services": {key: dict(value) for key, value in self.services.items()},
        }

    async def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        output: OutputHandler,
    ) -> int:
        # The runner's own environment is the lowest layer; it never overrides a job value.
        full_env = {**os.environ, **env, JOB_MARKER_VAR: self.marker}
        proc = await trio.lowlevel.open_process(
            list(argv),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._groups.add(proc.pid)
        assert proc.stdout is not None
        _enlarge_pipe(proc.stdout)
        try:
            await _pump_until_exit(proc, proc.stdout, output)
        except BaseException:
            # Cancelled (job cancel, timeout, shutdown) or a failing output handler:
            # stop the process tree the way GitHub's runner does, still forwarding output.
            with trio.CancelScope(shield=True):
                await _stop_process_group(proc, output)
            raise
        finally:
            await proc.stdout.aclose()
        assert proc.returncode is not None
        return proc.returncode

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        def write() -> None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)

        if len(data) <= INLINE_FILE_BYTES:
            write()
        else:
            await trio.to_thread.run_sync(write)

    async def read_file(self, path: str) -> bytes:
        data = _read_if_small(path)
        if data is None:
            data = await trio.to_thread.run_sync(Path(path).read_bytes)
        return data

    async def hash_files(self, arguments: Sequence[str]) -> str:
        return await trio.to_thread.run_sync(hash_files, self.workspace, arguments)

    async def which(self, command: str, path: str) -> str | None:
        return shutil.which(command, path=path)


class _Drain:
    """Forwards a step's output until its main process has exited and it is drained.

    Background children inherit the pipe and may hold it open for the whole job; the
    step is over when its main process exits, as on GitHub. Everything the process wrote
    before it exited is forwarded, however long handing it on takes (the log may be
    applying back-pressure); after that, background children get DRAIN_IDLE to finish.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.received = 0
        #: Bytes received plus those still in the pipe when the process exited.
        self.exit_mark: int | None = None
        self.quiet_deadline = math.inf
        self.receiving: trio.CancelScope | None = None

    async def watch_exit(self, proc: trio.Process) -> None:
        await proc.wait()
        self.exit_mark = self.received + _unread_bytes(self.stream)
        self._drained()

    def _drained(self) -> None:
        if self.exit_mark is not None and self.received >= self.exit_mark:
            if self.quiet_deadline == math.inf:
                self.quiet_deadline = trio.current_time() + DRAIN_IDLE
            if self.receiving is not None:
                self.receiving.deadline = self.quiet_deadline

    async def forward(self, output: OutputHandler) -> None:
        while True:
            chunk: bytes | bytearray = b""
            with trio.CancelScope() as self.receiving:
                self._drained()
                chunk = await self.stream.receive_some(READ_SIZE)
            self.receiving = None
            if not chunk:  # end of stream, or the quiet time after the exit is over
                return
            self.received += len(chunk)
            await output(bytes(chunk))


async def _pump_until_exit(
    proc: trio.Process, stream: trio.abc.ReceiveStream, output: OutputHandler
) -> None:
    """Forward output until the process has exited and its output is drained."""
    drain = _Drain(stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain.watch_exit, proc)
        await drain.forward(output)
        # The end of the stream often comes a moment before the exit.
        await proc.wait()
        nursery.cancel_scope.cancel()


def _fd(stream: trio.abc.ReceiveStream) -> int | None:
    fileno = getattr(stream, "fileno", None)
    return None if fileno is None else int(fileno())


def _unread_bytes(stream: trio.abc.ReceiveStream) -> int:
    fd = _fd(stream)
    try:
        answer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0") if fd is not None else None
    except OSError:
        answer = None
    return 0 if answer is None else int.from_bytes(answer, sys.byteorder)


async def _stop_process_group(proc: trio.Process, output: OutputHandler) -> None:
    pgid = proc.pid
    assert proc.stdout is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_escalate, proc, pgid)
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await _pump_until_exit(proc, proc.stdout, output)


async def _escalate(proc: trio.Process, pgid: int) -> None:
    for sig, grace in ((signal.SIGINT, SIGINT_GRACE), (signal.SIGTERM, SIGTERM_GRACE)):
        _signal_group(pgid, sig)
        with trio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is not None:
            break
    # Whatever is left of the group (background children ignore SIGINT) goes now.
    _signal_group(pgid, signal.SIGKILL)


def _create_job_dirs(
    cls: type[HostEnvironment], workdir_parent: str, shared_tool_cache: bool
) -> HostEnvironment:
    # A handful of mkdir calls: cheaper inline than a thread hop per job start.
    parent = Path(workdir_parent).expanduser()
    tool_cache = parent / "tool_cache" if shared_tool_cache else None
    env = cls(parent / secrets.token_hex(8), tool_cache)
    for path in (env.workspace, env.runner_dir, env.temp_dir, env.tool_cache):
        Path(path).mkdir(parents=True, exist_ok=True)
    return env


def _read_if_small(path: str) -> bytes | None:
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size > INLINE_FILE_BYTES:
            return None
        return file.read()


def _enlarge_pipe(stream: trio.abc.ReceiveStream) -> None:
    fd = _fd(stream)
    # Best effort (Linux only; the per-user pipe budget may refuse it).
    with contextlib.suppress(OSError):
        if fd is not None:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _marked_processes(marker: str) -> list[int]:
    """Pids of processes whose environment carries this job's marker."""
    needle = f"{JOB_MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
