"""The task reporter against an in-test Gitea that follows runner-protocol 9 and 10.

Time is trio's virtual clock (autojump), so reporting intervals and retry budgets pass
without real waiting.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import trio

from trio_runner.daemon.logbuffer import MAX_ROW_BYTES, ROW_OVERHEAD
from trio_runner.daemon.reporter import (
    CANCELLED_TEXT,
    EARLY_TERMINATION_TEXT,
    ENDED_BY_SERVER_TEXT,
    TIMED_OUT_TEXT,
    CancelCause,
    Reporter,
    ReporterSettings,
)
from trio_runner.executor.sink import Conclusion
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import (
    LogRow,
    Result,
    TaskState,
    UpdateLogRequest,
    UpdateLogResponse,
    UpdateTaskRequest,
    UpdateTaskResponse,
)

TASK_ID = 1337
SETTINGS = ReporterSettings()
LIMIT = 120  # virtual seconds; every test's reporter must be done well within it


def unavailable() -> ConnectError:
    return ConnectError("unavailable", "server down", 503, False)


def gitea_error(grpc_code: str, desc: str) -> ConnectError:
    return ConnectError("unknown", f"rpc error: code = {grpc_code} desc = {desc}", 500, False)


def now() -> datetime:
    return datetime.now(UTC)


# A fault decides what happens to one call: None (normal), "fail" (an error before the
# server does anything), "lose" (the server acts, the answer is lost), "partial" (the
# server stores only part of the rows), "hang" (no answer ever).
Fault = Callable[[], str | None]


class FakeGitea:
    """UpdateLog / UpdateTask as Gitea handles them, with injectable faults.

    ``legacy`` selects the UpdateLog of older Gitea (runner-protocol 10.3), which ignores
    ``no_more`` in a batch that brings no new rows.
    """

    def __init__(self, step_count: int, *, legacy: bool = False) -> None:
        self.step_count = step_count
        self.legacy = legacy
        self.rows: list[LogRow] = []
        self.sealed = False
        self.result: Result | None = None  # the task's final result once reported
        self.ends_task: Result | None = None  # answers report this while running
        self.outputs: dict[str, str] = {}
        self.refuse_outputs = 0  # calls carrying outputs whose outputs are not stored
        self.events: list[str] = []
        self.log_requests: list[UpdateLogRequest] = []
        self.task_requests: list[UpdateTaskRequest] = []
        self.log_fault: Fault = lambda: None
        self.task_fault: Fault = lambda: None
        self.log_error: ConnectError | None = None
        self.task_error: ConnectError | None = None
        self.first_row_at: float | None = None
        self.row_arrival: dict[str, float] = {}
        self._in_flight = {"log": 0, "task": 0}
        self.max_in_flight = {"log": 0, "task": 0}

    def _enter(self, call: str) -> None:
        self._in_flight[call] += 1
        self.max_in_flight[call] = max(self.max_in_flight[call], self._in_flight[call])

    async def _act(self, call: str, fault: str | None, error: ConnectError | None) -> None:
        await trio.sleep(0.01)
        if error is not None:
            raise error
        if fault == "fail":
            raise unavailable()
        if fault == "hang":
            await trio.sleep_forever()

    async def update_log(self, request: UpdateLogRequest) -> UpdateLogResponse:
        self.log_requests.append(request)
        self._enter("log")
        try:
            fault = self.log_fault()
            await self._act("log", fault, self.log_error)
            rows = request.rows[: len(request.rows) // 2] if fault == "partial" else request.rows
            ack = self._store(request.index, rows, request.no_more and fault != "partial")
            if fault == "lose":
                raise unavailable()
            return UpdateLogResponse(ack_index=ack)
        finally:
            self._in_flight["log"] -= 1

    def _store(self, index: int, rows: list[LogRow], no_more: bool) -> int:
        ack = len(self.rows)
        new = rows[ack - index :] if index <= ack < index + len(rows) else []
        if self.legacy and not new:
            return ack
        if self.sealed:
            if new:
                raise gitea_error("AlreadyExists", "log file has been archived")
            return ack
        if not new and (not no_more or index > ack):
            return ack
        for row in new:
            self.row_arrival.setdefault(row.content, trio.current_time())
        if new and self.first_row_at is None:
            self.first_row_at = trio.current_time()
        self.rows.extend(new)
        if no_more:
            self.sealed = True
            self.events.append("log sealed")
        return len(self.rows)

    async def update_task(self, request: UpdateTaskRequest) -> UpdateTaskResponse:
        self.task_requests.append(request)
        self._enter("task")
        try:
            fault = self.task_fault()
            await self._act("task", fault, self.task_error)
            assert [step.id for step in request.state.steps] == list(range(self.step_count))
            reported = Result.parse(request.state.result)
            if self.result is None and reported is not Result.UNSPECIFIED:
                self.result = reported
                self.events.append("final state")
            if request.outputs and self.refuse_outputs:
                self.refuse_outputs -= 1
            else:
                for key, value in request.outputs.items():
                    self.outputs.setdefault(key, value)
            answer = self.result or self.ends_task or Result.UNSPECIFIED
            if fault == "lose":
                raise unavailable()
            return UpdateTaskResponse(
                state=TaskState(id=request.state.id, result=answer.value),
                sent_outputs=list(self.outputs),
            )
        finally:
            self._in_flight["task"] -= 1

    @property
    def contents(self) -> list[str]:
        return [row.content for row in self.rows]

    @property
    def final_state(self) -> TaskState:
        finals = [r for r in self.task_requests if r.state.result != Result.UNSPECIFIED.value]
        assert finals, "no final UpdateTask was sent"
        return finals[-1].state


def faults(rng: random.Random, choices: list[str | None]) -> Fault:
    """Random faults, but never more than two in a row."""
    streak = 0

    def pick() -> str | None:
        nonlocal streak
        fault = rng.choice(choices) if streak < 2 else None
        streak = streak + 1 if fault else 0
        return fault

    return pick


def never_called(result: Result) -> None:
    raise AssertionError(f"unexpected server result {result}")


def make(
    gitea: FakeGitea,
    settings: ReporterSettings = SETTINGS,
    on_server_result: Callable[[Result], None] = never_called,
    **kwargs: Callable[[], None],
) -> Reporter:
    return Reporter(gitea, TASK_ID, gitea.step_count, settings, on_server_result, **kwargs)


def step_results(state: TaskState) -> list[Result]:
    return [Result.parse(step.result) for step in state.steps]


async def test_rows_steps_and_final_report_in_order(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=3)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["setup 1", "setup 2"], now())
            reporter.step_started(0, now())
            await reporter.rows(["s0 a", "s0 b", "s0 c"], now())
            reporter.step_finished(0, Conclusion.SUCCESS, now())
            await trio.sleep(1)
            reporter.step_started(1, now())
            reporter.step_finished(1, Conclusion.FAILURE, now())
            reporter.step_finished(2, Conclusion.SKIPPED, now())
            await reporter.rows(["cleanup"], now())
            reporter.set_result(Result.FAILURE)

    assert gitea.contents == ["setup 1", "setup 2", "s0 a", "s0 b", "s0 c", "cleanup"]
    assert gitea.events == ["log sealed", "final state"]
    assert gitea.log_requests[-1].no_more
    final = gitea.final_state
    assert Result.parse(final.result) is Result.FAILURE
    assert final.started_at is not None and final.stopped_at is not None
    assert step_results(final) == [Result.SUCCESS, Result.FAILURE, Result.SKIPPED]
    assert [(s.log_index, s.log_length) for s in final.steps] == [(2, 3), (5, 0), (5, 0)]
    assert final.steps[0].started_at is not None and final.steps[1].started_at is not None
    assert reporter.log_sealed and reporter.final_result is Result.FAILURE
    assert all(Result.parse(r.state.result) is Result.UNSPECIFIED for r in gitea.task_requests[:-1])
    assert gitea.max_in_flight == {"log": 1, "task": 1}


async def test_running_step_reports_its_growing_section(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=2)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["setup"], now())
            reporter.step_started(0, now())
            await reporter.rows(["one", "two"], now())
            await trio.sleep(SETTINGS.state_report_interval + 1)
            running = gitea.task_requests[-1].state.steps
            assert (running[0].log_index, running[0].log_length) == (1, 2)
            assert running[0].started_at is not None and running[1].started_at is None
            reporter.step_finished(0, Conclusion.SUCCESS, now())
            reporter.step_started(1, now())
            reporter.step_finished(1, Conclusion.SUCCESS, now())
            reporter.set_result(Result.SUCCESS)
    assert [(s.log_index, s.log_length) for s in gitea.final_state.steps] == [(1, 2), (3, 0)]


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "older"])
@pytest.mark.parametrize("seed", range(8))
async def test_every_row_arrives_once_in_order_despite_faults(
    autojump_clock: trio.abc.Clock, seed: int, legacy: bool
) -> None:
    rng = random.Random(seed)
    gitea = FakeGitea(step_count=4, legacy=legacy)
    # At most two faults in a row, so that the final flush cannot run out of budget.
    gitea.log_fault = faults(rng, [None, None, None, "fail", "lose", "partial"])
    gitea.task_fault = faults(rng, [None, None, None, "fail", "lose"])
    settings = ReporterSettings(max_buffered_rows=300, max_request_bytes=4000)
    reporter = make(gitea, settings)
    expected: list[str] = []

    async def emit(count: int) -> None:
        while count:
            size = min(count, rng.randint(1, 40))
            chunk = [f"line {len(expected) + i}" for i in range(size)]
            expected.extend(chunk)
            await reporter.rows(chunk, now())
            count -= size
            if rng.random() < 0.3:
                await trio.sleep(rng.random())

    with trio.fail_after(LIMIT * 10):
        async with reporter.running():
            await emit(50)
            for index in range(4):
                reporter.step_started(index, now())
                await emit(rng.randint(0, 600))
                reporter.step_finished(index, Conclusion.SUCCESS, now())
            await emit(20)
            reporter.set_result(Result.SUCCESS)

    assert gitea.contents in (expected, [*expected, ""])
    assert gitea.sealed and gitea.events == ["log sealed", "final state"]
    assert step_results(gitea.final_state) == [Result.SUCCESS] * 4
    assert gitea.max_in_flight == {"log": 1, "task": 1}
    for request in gitea.log_requests:
        estimate = sum(len(row.content) + ROW_OVERHEAD for row in request.rows)
        assert estimate <= settings.max_request_bytes


async def test_first_row_goes_at_once_and_later_rows_within_max_latency(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            handed_out = trio.current_time()
            await reporter.rows(["hello"], now())
            await trio.sleep(0.5)
            second_at = trio.current_time()
            await reporter.rows(["second"], now())
            await trio.sleep(SETTINGS.log_report_max_latency + 1)
            assert gitea.first_row_at is not None
            assert gitea.first_row_at - handed_out < 0.3
            arrival = gitea.row_arrival["second"]
            # Coalesced with what follows, but never held longer than max_latency.
            assert second_at + 0.1 < arrival <= second_at + SETTINGS.log_report_max_latency + 0.1
            reporter.set_result(Result.SUCCESS)


async def test_backlog_goes_in_one_call_capped_by_request_size(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    down = True
    gitea.log_fault = lambda: "fail" if down else None
    settings = ReporterSettings(max_request_bytes=200_000)
    reporter = make(gitea, settings)
    lines = [f"{i:05d} " + "x" * 94 for i in range(3000)]  # 100 characters each
    with trio.fail_after(LIMIT):
        async with reporter.running():
            for start in range(0, len(lines), 500):
                await reporter.rows(lines[start : start + 500], now())
            await trio.sleep(1)
            failed_calls = len(gitea.log_requests)
            down = False
            await trio.sleep(SETTINGS.log_report_interval + 1)
            assert gitea.contents == lines
            reporter.set_result(Result.SUCCESS)
    recovered = gitea.log_requests[failed_calls:]
    per_call = settings.max_request_bytes // (100 + ROW_OVERHEAD)
    assert len(recovered[0].rows) == per_call > SETTINGS.log_report_batch_size
    assert [len(r.rows) for r in recovered[:3]] == [per_call, per_call, len(lines) - 2 * per_call]


async def test_rows_block_while_the_buffer_is_full(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    down = True
    gitea.log_fault = lambda: "fail" if down else None
    settings = ReporterSettings(max_buffered_rows=100)
    reporter = make(gitea, settings)
    expected = [f"row {i}" for i in range(1000)]
    highest = 0
    written = 0
    done = trio.Event()

    async def produce() -> None:
        nonlocal highest, written
        for start in range(0, len(expected), 10):
            await reporter.rows(expected[start : start + 10], now())
            written += 10
            highest = max(highest, reporter.buffered_rows)
        done.set()

    with trio.fail_after(LIMIT * 5):
        async with reporter.running(), trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.sleep(60)
            assert not done.is_set()
            assert written == 100 and reporter.buffered_rows == 100
            down = False
            await done.wait()
            reporter.set_result(Result.SUCCESS)
    # Checked before each chunk is added: at most one chunk beyond the limit.
    assert highest < settings.max_buffered_rows + 10
    assert gitea.contents in (expected, [*expected, ""])


async def test_server_cancel_is_reported_once_and_ends_the_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=2)
    job_scope = trio.CancelScope()
    seen: list[Result] = []

    def server_result(result: Result) -> None:
        seen.append(result)
        job_scope.cancel()

    reporter = make(gitea, on_server_result=server_result)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            with job_scope:
                reporter.step_started(0, now())
                await reporter.rows(["working"], now())
                await trio.sleep(1)
                gitea.ends_task = Result.CANCELLED
                await trio.sleep_forever()
    assert seen == [Result.CANCELLED]
    assert reporter.server_result is Result.CANCELLED
    assert reporter.cancel_cause is CancelCause.SERVER
    assert gitea.contents == ["working", ENDED_BY_SERVER_TEXT]
    final = gitea.final_state
    assert Result.parse(final.result) is Result.CANCELLED
    assert step_results(final) == [Result.CANCELLED, Result.CANCELLED]
    assert [(s.log_index, s.log_length) for s in final.steps] == [(0, 1), (1, 0)]
    assert gitea.events == ["log sealed", "final state"]


async def test_cancelled_surrounding_scope_still_flushes(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=2)
    reporter = make(gitea)
    with trio.fail_after(LIMIT), trio.CancelScope() as outer:
        async with reporter.running():
            reporter.step_started(0, now())
            await reporter.rows(["a"] * 150, now())
            outer.cancel()
            await trio.sleep_forever()
    assert outer.cancelled_caught
    # A call cut off by the cancellation leaves its rows unconfirmed; confirming them
    # first may leave nothing for the final batch but the empty row.
    expected = ["a"] * 150 + [CANCELLED_TEXT]
    assert gitea.contents in (expected, [*expected, ""])
    assert gitea.events == ["log sealed", "final state"]
    final = gitea.final_state
    assert Result.parse(final.result) is Result.CANCELLED
    assert step_results(final) == [Result.CANCELLED, Result.CANCELLED]


async def test_timeout_is_reported_as_failure(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT), trio.move_on_after(30) as timeout:
        async with reporter.running():
            reporter.step_started(0, now())
            try:
                await trio.sleep_forever()
            finally:
                reporter.record_cancel(CancelCause.TIMEOUT)
    assert timeout.cancelled_caught
    assert reporter.cancel_cause is CancelCause.TIMEOUT
    assert gitea.contents == [TIMED_OUT_TEXT]
    assert Result.parse(gitea.final_state.result) is Result.FAILURE


async def test_timeout_turns_the_jobs_cancelled_result_into_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            reporter.record_cancel(CancelCause.TIMEOUT)
            reporter.record_cancel(CancelCause.SHUTDOWN)
            reporter.set_result(Result.CANCELLED)
    assert reporter.cancel_cause is CancelCause.TIMEOUT
    assert Result.parse(gitea.final_state.result) is Result.FAILURE
    assert gitea.contents == [""]


async def test_crash_without_result_is_an_early_termination(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT), pytest.raises(RuntimeError, match="executor bug"):
        async with reporter.running():
            await reporter.rows(["before"], now())
            raise RuntimeError("executor bug")
    assert gitea.contents == ["before", EARLY_TERMINATION_TEXT]
    assert Result.parse(gitea.final_state.result) is Result.FAILURE
    assert step_results(gitea.final_state) == [Result.CANCELLED]


async def test_error_text_becomes_the_last_rows(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            reporter.set_error("cannot start container\nimage not found")
    assert gitea.contents == ["cannot start container", "image not found"]
    assert Result.parse(gitea.final_state.result) is Result.FAILURE


async def test_skipped_job(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=2)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            reporter.mark_job_skipped()
    final = gitea.final_state
    assert Result.parse(final.result) is Result.SKIPPED
    assert step_results(final) == [Result.SKIPPED, Result.SKIPPED]


async def test_empty_log_is_sealed_with_one_empty_row(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            reporter.step_started(0, now())
            reporter.step_finished(0, Conclusion.SUCCESS, now())
            reporter.set_result(Result.SUCCESS)
    assert len(gitea.log_requests) == 1
    assert gitea.log_requests[0].no_more and gitea.contents == [""]
    assert gitea.events == ["log sealed", "final state"]


async def test_outputs_are_filtered_and_resent_until_acknowledged(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    gitea.refuse_outputs = 2
    reporter = make(gitea)
    long_key = "k" * 300
    with trio.fail_after(LIMIT):
        async with reporter.running():
            reporter.set_outputs(
                {"coverage": "81.5", long_key: "v", "big": "x" * (1024 * 1024 + 1), "n": ""}
            )
            reporter.set_result(Result.SUCCESS)
    assert gitea.outputs == {"coverage": "81.5", "n": ""}
    with_outputs = [r for r in gitea.task_requests if r.outputs]
    assert len(with_outputs) >= 3
    assert all(set(r.outputs) == {"coverage", "n"} for r in with_outputs)
    warnings = [c for c in gitea.contents if c.startswith("::warning::")]
    assert len(warnings) == 2
    assert "'big'" in warnings[1] and long_key not in warnings[0]


async def test_archived_log_stops_rows_but_not_the_final_state(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gitea = FakeGitea(step_count=1)
    gitea.sealed = True
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["a"], now())
            await trio.sleep(1)
            await reporter.rows(["b"] * 200, now())
            await trio.sleep(10)
            reporter.set_result(Result.SUCCESS)
    assert len(gitea.log_requests) == 1
    assert Result.parse(gitea.final_state.result) is Result.SUCCESS
    assert "already sealed" in caplog.text


async def test_lost_rows_on_the_server_stop_sending_rows(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["a", "b"], now())
            await trio.sleep(1)
            assert gitea.contents == ["a", "b"]
            gitea.rows.clear()
            await reporter.rows(["c"], now())
            await trio.sleep(SETTINGS.log_report_max_latency + 1)
            calls = len(gitea.log_requests)
            await reporter.rows(["d"], now())
            reporter.set_result(Result.SUCCESS)
    assert len(gitea.log_requests) == calls
    assert gitea.contents == []
    assert Result.parse(gitea.final_state.result) is Result.SUCCESS
    assert "lost" in caplog.text


async def test_rejected_task_is_no_longer_reported(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gitea = FakeGitea(step_count=1)
    gitea.task_error = gitea_error("Internal", "update task: invalid runner for task")
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await trio.sleep(1)
            await reporter.rows(["a"], now())
            await trio.sleep(SETTINGS.state_report_interval * 3)
    assert len(gitea.task_requests) == 1
    assert gitea.log_requests == []
    assert "rejects the task" in caplog.text


async def test_unregistered_runner_is_told_and_stops_reporting(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    gitea.log_error = gitea_error("Unauthenticated", "unregistered runner")
    told: list[bool] = []
    reporter = make(gitea, on_unregistered=lambda: told.append(True))
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["a"], now())
            await trio.sleep(SETTINGS.log_report_interval * 3)
    assert told == [True] and reporter.runner_unregistered
    assert len(gitea.log_requests) == 1
    assert len(gitea.task_requests) <= 1


async def test_final_flush_is_bounded_when_the_server_hangs(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gitea = FakeGitea(step_count=1)
    hang = False
    gitea.log_fault = gitea.task_fault = lambda: "hang" if hang else None
    reporter = make(gitea)
    with trio.fail_after(7 * SETTINGS.report_close_timeout + 5):
        async with reporter.running():
            await reporter.rows(["a"], now())
            await trio.sleep(1)
            hang = True
            await reporter.rows(["b"], now())
    final_logs = [r for r in gitea.log_requests if r.no_more]
    final_states = [r for r in gitea.task_requests if r.state.result != Result.UNSPECIFIED.value]
    assert len(final_logs) >= 2 and len(final_states) >= 2
    assert gitea.contents == ["a"]
    assert "gave up the final UpdateLog" in caplog.text
    assert "gave up the final UpdateTask" in caplog.text


async def test_final_flush_retries_through_failures(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    failures = iter(["fail", "lose", "fail"])
    gitea.log_fault = lambda: next(failures, None)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["x", "y"], now())
    assert gitea.contents == ["x", "y", EARLY_TERMINATION_TEXT]
    assert gitea.events == ["log sealed", "final state"]


async def test_heartbeat_without_activity(autojump_clock: trio.abc.Clock) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await trio.sleep(4 * SETTINGS.state_report_interval + 1)
            assert len(gitea.task_requests) >= 4
            reporter.set_result(Result.SUCCESS)
    assert gitea.log_requests[-1].no_more


async def test_outage_is_logged_once_and_its_recovery_once(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_runner.daemon.reporter")
    gitea = FakeGitea(step_count=1)
    down = True
    gitea.log_fault = lambda: "fail" if down else None
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            for _ in range(5):
                await reporter.rows(["secret-free row"], now())
                await trio.sleep(SETTINGS.log_report_interval)
            down = False
            await trio.sleep(SETTINGS.log_report_interval + 1)
            reporter.set_result(Result.SUCCESS)
    assert len(gitea.log_requests) > 4
    messages = [r.getMessage() for r in caplog.records]
    assert sum("UpdateLog failed" in m for m in messages) == 1
    assert sum("UpdateLog works again" in m for m in messages) == 1
    assert "secret-free row" not in caplog.text


async def test_overlong_rows_are_cut_at_a_character_boundary(
    autojump_clock: trio.abc.Clock,
) -> None:
    gitea = FakeGitea(step_count=1)
    reporter = make(gitea)
    with trio.fail_after(LIMIT):
        async with reporter.running():
            await reporter.rows(["é" * 40_000, "short"], now())
            reporter.set_result(Result.SUCCESS)
    cut, short = gitea.contents
    assert cut == "é" * (MAX_ROW_BYTES // 2) and short == "short"


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="log_report_batch_size"):
        ReporterSettings(log_report_batch_size=0)


async def test_step_index_out_of_range_is_an_error(autojump_clock: trio.abc.Clock) -> None:
    reporter = make(FakeGitea(step_count=2))
    with pytest.raises(ValueError, match="step index 2 out of range"):
        reporter.step_started(2, now())
