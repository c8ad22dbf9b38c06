"""The host backend's output drain: what a step wrote before it exited always arrives,
however slowly it is handed on, and a background child holding the pipe open does not
keep the step running."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from trio_runner.backends.host import DRAIN_IDLE, HostEnvironment

TIMEOUT = 30
SIZE = 3 * 1024 * 1024
#: Pause per chunk of the slow handler; a few of them far outlast DRAIN_IDLE.
SLOW = 2 * DRAIN_IDLE
WRITER = (
    "import sys\n"
    "block = bytes(range(256)) * 4096\n"  # 1 MiB, no two neighbouring bytes alike
    f"for _ in range({SIZE // (1024 * 1024)}):\n"
    "    sys.stdout.buffer.write(block)\n"
    "sys.stdout.buffer.flush()\n"
)


async def test_slow_output_handler_still_gets_every_byte_written_before_exit(
    tmp_path: Path,
) -> None:
    received = bytearray()

    async def slow(chunk: bytes) -> None:
        received.extend(chunk)
        await trio.sleep(SLOW)

    with trio.fail_after(TIMEOUT):
        async with HostEnvironment.start(str(tmp_path)) as env:
            code = await env.exec(
                [sys.executable, "-c", WRITER], env={}, cwd=env.workspace, output=slow
            )
    assert code == 0
    assert len(received) == SIZE
    assert received == (bytes(range(256)) * 4096) * (SIZE // (1024 * 1024))


async def test_background_child_holding_the_pipe_does_not_keep_the_step_running(
    tmp_path: Path,
) -> None:
    received = bytearray()

    async def collect(chunk: bytes) -> None:
        received.extend(chunk)

    script = "sleep 600 & echo child=$!; echo main done; exit 3"
    with trio.fail_after(TIMEOUT):
        async with HostEnvironment.start(str(tmp_path)) as env:
            code = await env.exec(["sh", "-c", script], env={}, cwd=env.workspace, output=collect)
            lines = received.decode().splitlines()
            child = int(lines[0].removeprefix("child="))
            # The step is over while its background child still runs.
            assert await trio.Path(f"/proc/{child}").exists()
    assert code == 3
    assert lines[1] == "main done"


async def test_job_context_carries_the_services_an_engine_runs(tmp_path: Path) -> None:
    async with HostEnvironment.start(str(tmp_path)) as env:
        assert env.job_context() == {"container": {"id": "", "network": ""}, "services": {}}
        env.services = {"db": {"id": "abc", "network": "net", "ports": {"5432": "40001"}}}
        context = env.job_context()
        context["services"]["db"]["id"] = "changed by an expression"
        assert env.job_context()["services"] == {
            "db": {"id": "abc", "network": "net", "ports": {"5432": "40001"}}
        }
