"""The exit line of a step run in the job container: output before it is forwarded
whole (however the engine cuts it into frames), the code is taken from it, and a step
whose wrapper never printed it falls back to the engine's end of stream and exit code."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
import trio

from tests.integration.engine import BUSYBOX, needs_engine
from trio_runner.backends import docker_api
from trio_runner.backends.docker import DockerEnvironment, DockerSettings, JobSpec
from trio_runner.backends.step_exit import StepExit


class Collected:
    def __init__(self) -> None:
        self.data = bytearray()
        self.exits = 0

    async def output(self, chunk: bytes) -> None:
        self.data.extend(chunk)

    def on_exit(self) -> None:
        self.exits += 1


async def feed_in_pieces(step: StepExit, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        await step.feed(data[start : start + size])


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
async def test_exit_line_found_across_any_chunking(size: int) -> None:
    seen = Collected()
    step = StepExit(seen.output, seen.on_exit)
    text = b"line one\nno newline at the end"
    await feed_in_pieces(step, text + step.marker.encode() + b"42\n", size)
    assert (bytes(seen.data), step.code, seen.exits) == (text, 42, 1)


async def test_output_after_the_exit_line_is_dropped() -> None:
    seen = Collected()
    step = StepExit(seen.output, seen.on_exit)
    await step.feed(b"before\n" + step.marker.encode() + b"0\nlate background output\n")
    await step.feed(b"more late output\n")
    await step.flush()
    assert (bytes(seen.data), step.code, seen.exits) == (b"before\n", 0, 1)


async def test_a_marker_prefix_in_plain_output_is_passed_on() -> None:
    seen = Collected()
    step = StepExit(seen.output, seen.on_exit)
    prefix = step.marker.encode()[:10]
    await step.feed(b"ends like the marker " + prefix)
    await step.feed(b" and goes on\n")
    await step.feed(b"held " + prefix)
    await step.flush()
    assert bytes(seen.data) == b"ends like the marker " + prefix + b" and goes on\nheld " + prefix
    assert (step.code, seen.exits) == (None, 0)


async def test_a_marker_without_a_number_is_plain_output() -> None:
    seen = Collected()
    step = StepExit(seen.output, seen.on_exit)
    await step.feed(step.marker.encode() + b"oops\n")
    assert (bytes(seen.data), step.code) == (step.marker.encode() + b"oops\n", None)


# --- in a container ---------------------------------------------------------------------


class _Log:
    async def info(self, message: str) -> None:
        pass

    async def warning(self, message: str) -> None:
        pass


@pytest.fixture
async def environment() -> AsyncIterator[DockerEnvironment]:
    name = f"step-exit-{secrets.token_hex(4)}"
    job = JobSpec(
        runner_uuid="step-exit-test",
        task_id=1,
        name=name,
        job_id="build",
        alias="build",
        image=BUSYBOX,
        workspace="/workspace/o/r",
    )
    async with (
        docker_api.connect(os.environ["DOCKER_HOST"]) as api,
        DockerEnvironment.start(api, job, DockerSettings(), _Log()) as env,
    ):
        yield env


async def run(env: DockerEnvironment, script: str) -> tuple[int, bytes]:
    seen = Collected()
    with trio.fail_after(60):
        code = await env.exec(["sh", "-c", script], env={}, cwd="/", output=seen.output)
    return code, bytes(seen.data)


@pytest.mark.container
@needs_engine
async def test_steps_in_the_container_end_on_their_exit_line(
    environment: DockerEnvironment,
) -> None:
    env = environment
    # Stderr joins stdout in order; a last line without a newline arrives whole.
    assert await run(env, "echo out; echo err >&2; printf tail") == (0, b"out\nerr\ntail")
    assert await run(env, "exit 7") == (7, b"")
    # A step killed by a signal reports the shell's code for it.
    assert await run(env, "kill -9 $$") == (137, b"")
    # The wrapper itself killed: no exit line, the engine's code decides.
    assert (await run(env, 'kill -9 "$PPID"; sleep 5'))[0] == 137
