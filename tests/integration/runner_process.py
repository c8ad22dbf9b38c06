"""Run the real ``trio-runner`` command as a child process for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import yaml

from tests.fake_gitea.state import FakeGitea, RunnerRecord
from trio_runner.registration import Registration, save_registration

#: Every wait on the child is bounded by this.
PROCESS_WAIT = 60.0

Interrupt = Callable[[trio.Process, "re.Match[bytes]"], Awaitable[None]]


async def interrupt_when(
    argv: list[str],
    marker: re.Pattern[bytes],
    interrupt: Interrupt,
    *,
    env: dict[str, str],
    within: float = PROCESS_WAIT,
) -> tuple[int, str, re.Match[bytes]]:
    """Run ``argv``, call ``interrupt`` once its output matches ``marker``, then read the
    output to its end. Returns the exit status, the whole output and the match."""
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(within):
            while (match := marker.search(output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
            await interrupt(process, match)
            while chunk := await process.stdout.receive_some():
                output += chunk
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.stdout.aclose()
    return code, output.decode(), match


async def send_sigint(process: trio.Process, _match: re.Match[bytes]) -> None:
    process.send_signal(signal.SIGINT)


def runner_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_runner", *args]


def write_config(directory: Path, **sections: dict[str, Any]) -> Path:
    """A config.yaml with quick report intervals, plus the given section overrides."""
    config: dict[str, Any] = {
        "log": {"level": "info"},
        "runner": {
            "file": str(directory / ".runner"),
            "fetch_interval": "100ms",
            "fetch_interval_max": "200ms",
            "log_report_interval": "200ms",
            "log_report_max_latency": "100ms",
            "state_report_interval": "300ms",
            "report_close_timeout": "2s",
        },
        "cache": {"enabled": False},
        "host": {"workdir_parent": str(directory / "work")},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def register_locally(
    gitea: FakeGitea, directory: Path, labels: Sequence[str], *, ephemeral: bool = False
) -> RunnerRecord:
    """A runner known to the fake and its .runner file, without running ``register``."""
    names = [label.split(":", 1)[0] for label in labels]
    runner = gitea.add_runner("test-runner", names, ephemeral=ephemeral)
    save_registration(
        directory / ".runner",
        Registration(
            id=runner.id,
            uuid=runner.uuid,
            name=runner.name,
            token=runner.token,
            address=gitea.url,
            labels=list(labels),
            ephemeral=ephemeral,
        ),
    )
    return runner


@dataclass
class RunnerProcess:
    process: trio.Process
    log_path: Path
    _output: bytearray = field(default_factory=bytearray)
    _grew: trio.Event = field(default_factory=trio.Event)

    @property
    def log(self) -> str:
        return self._output.decode(errors="replace")

    async def wait_for_log(self, text: str, within: float = PROCESS_WAIT) -> None:
        """Wait until the runner's output contains ``text``."""
        with trio.fail_after(within):
            while text not in self.log:
                await self._grew.wait()

    async def _collect(self, stream: trio.abc.ReceiveStream) -> None:
        with self.log_path.open("wb") as copy:
            async for chunk in stream:
                copy.write(chunk)
                copy.flush()
                self._output += chunk
                self._grew.set()
                self._grew = trio.Event()

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait(self, within: float = PROCESS_WAIT) -> int:
        with trio.fail_after(within):
            return await self.process.wait()


@asynccontextmanager
async def start_runner(
    directory: Path, config: Path, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[RunnerProcess]:
    """``trio-runner -c config start`` in ``directory``; killed at the end if still running."""
    process = await trio.lowlevel.open_process(
        runner_command("-c", str(config), "start", *extra),
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    runner = RunnerProcess(process, directory / "runner.log")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._collect, process.stdout)
        try:
            yield runner
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            with trio.move_on_after(10):
                await process.wait()
