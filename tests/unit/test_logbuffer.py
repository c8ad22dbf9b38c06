"""The log buffer's byte bound: blocking at ``max_bytes``, resuming after an ack, and
``held_bytes`` staying exact through any sequence of appends, batches and answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from trio_runner.daemon.logbuffer import MAX_ROW_BYTES, ROW_OVERHEAD, LogBuffer, cut_row
from trio_runner.daemon.reporter import Reporter, ReporterSettings
from trio_runner.gitea.messages import Result

from .test_reporter import LIMIT, FakeGitea, make

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def cost(line: str) -> int:
    return len(line) + ROW_OVERHEAD


async def blocks(buffer: LogBuffer) -> bool:
    """Whether ``wait_for_space`` is blocked once every task has settled."""
    returned = False

    async def wait() -> None:
        nonlocal returned
        await buffer.wait_for_space()
        returned = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return not returned


async def test_waiting_blocks_at_the_byte_cap_and_resumes_after_an_ack() -> None:
    line = "x" * 200
    buffer = LogBuffer(max_rows=1000, max_request_bytes=10**6, max_bytes=5 * cost(line))
    buffer.append([line] * 4, NOW)
    assert buffer.held_bytes == 4 * cost(line)
    assert not await blocks(buffer)
    buffer.append([line], NOW)
    assert buffer.held_bytes == buffer.max_bytes and buffer.buffered < buffer.max_rows
    assert await blocks(buffer)

    resumed = trio.Event()

    async def writer() -> None:
        await buffer.wait_for_space()
        buffer.append(["after"], NOW)
        resumed.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert len(buffer.take()) == 5
            # Unanswered or unacknowledged batches free nothing.
            buffer.settle(None)
            buffer.take()
            buffer.settle(0)
            await trio.testing.wait_all_tasks_blocked()
            assert not resumed.is_set()
            buffer.take()
            assert buffer.settle(1) == 1
            await resumed.wait()
    assert buffer.held_bytes == 4 * cost(line) + cost("after")


async def test_closing_releases_a_blocked_writer() -> None:
    buffer = LogBuffer(max_rows=1000, max_request_bytes=10**6, max_bytes=100)
    buffer.append(["y" * 100], NOW)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(buffer.wait_for_space)
            await trio.testing.wait_all_tasks_blocked()
            buffer.close()
    assert buffer.held_bytes == 0 and buffer.buffered == 0


@pytest.mark.parametrize("seed", range(8))
def test_held_bytes_stay_exact_under_random_appends_and_acks(seed: int) -> None:
    rng = random.Random(seed)
    buffer = LogBuffer(max_rows=10**6, max_request_bytes=rng.randint(60, 4000), max_bytes=10**9)
    held: list[str] = []  # what the buffer must hold, in order
    sent = 0  # rows of the batch in flight
    unconfirmed = 0  # rows sent whose answer never came (the server may hold them)
    for _ in range(600):
        action = rng.random()
        if action < 0.45:
            lines = [
                rng.choice(["", "ab", "é" * rng.randint(1, 40), "x" * rng.randint(1, 300)])
                for _ in range(rng.randint(0, 12))
            ]
            if rng.random() < 0.02:
                lines.append("€" * (MAX_ROW_BYTES // 2))  # over the row limit: cut
            buffer.append(lines, NOW)
            held += [cut_row(line) for line in lines]
        elif action < 0.7 and not sent:
            rows = buffer.take()
            assert [row.content for row in rows] == held[: len(rows)]
            assert bool(rows) == bool(held)
            sent = len(rows)
            unconfirmed = max(unconfirmed, sent)
        elif sent:
            if rng.random() < 0.2:
                assert buffer.settle(None) == 0
            else:
                acked = rng.randint(0, unconfirmed)
                assert buffer.settle(buffer.offset + acked) == acked
                del held[:acked]
                unconfirmed = 0
            sent = 0
        assert buffer.buffered == len(held)
        assert buffer.held_bytes == sum(map(cost, held))
    if sent:
        buffer.settle(None)
    while held:
        rows = buffer.take()
        assert buffer.settle(buffer.offset + len(rows)) == len(rows)
        del held[: len(rows)]
        assert buffer.held_bytes == sum(map(cost, held))
    assert buffer.held_bytes == 0 and buffer.buffered == 0


async def test_reporter_rows_block_on_bytes_until_the_server_acknowledges(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    down = True
    gitea.log_fault = lambda: "fail" if down else None
    line = "z" * 1000
    # Far below the row bound: only the byte bound can stop the writer.
    settings = ReporterSettings(max_buffered_rows=10_000, max_buffered_bytes=20 * cost(line))
    reporter: Reporter = make(gitea, settings)
    expected = [f"{i:04d}{line}" for i in range(200)]
    written = 0
    done = trio.Event()

    async def produce() -> None:
        nonlocal written
        for start in range(0, len(expected), 5):
            await reporter.rows(expected[start : start + 5], NOW)
            written += 5
        done.set()

    with trio.fail_after(LIMIT * 5):
        async with reporter.running(), trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.sleep(60)  # virtual: the server stays down for a minute
            assert not done.is_set()
            assert written < len(expected)
            assert reporter.buffered_rows < settings.max_buffered_rows
            down = False
            await done.wait()
            reporter.set_result(Result.SUCCESS)
    assert gitea.contents in (expected, [*expected, ""])
