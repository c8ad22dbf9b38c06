"""One task's reporter: the job's log rows and step states, sent as UpdateLog / UpdateTask.

Owns the reporting rules of runner-protocol 9, 10, 13.2-13.4 and 14 and of
workflow-execution 8: when rows are flushed, how acknowledgements drive resending, what
every state report carries, how server-side ends of the task are noticed, and the final
flush that seals the log and then reports the result, shielded from cancellation.

Usage by the task::

    reporter = Reporter(client, task.id, len(job.steps), settings, on_server_result=cancel)
    async with reporter.running():
        await run_job(sink=reporter)   # rows / step_started / step_finished
        reporter.set_outputs(outputs)
        reporter.set_result(result)
    # the final flush has happened here, whatever ended the block
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Protocol

import trio

from trio_runner.daemon.logbuffer import LogBuffer, LogLostError
from trio_runner.executor.sink import Conclusion
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import (
    Result,
    StepState,
    TaskState,
    UpdateLogRequest,
    UpdateLogResponse,
    UpdateTaskRequest,
    UpdateTaskResponse,
)

__all__ = [
    "CANCELLED_TEXT",
    "EARLY_TERMINATION_TEXT",
    "ENDED_BY_SERVER_TEXT",
    "TIMED_OUT_TEXT",
    "CancelCause",
    "ReportClient",
    "Reporter",
    "ReporterSettings",
]

logger = logging.getLogger(__name__)

#: Last log row of a job that produced no result (runner-protocol 13.4).
ENDED_BY_SERVER_TEXT = "Ended by the server"
CANCELLED_TEXT = "Cancelled"
EARLY_TERMINATION_TEXT = "Early termination"
TIMED_OUT_TEXT = "The job exceeded the runner's timeout"

#: Gitea silently drops outputs beyond these sizes (runner-protocol 9.4).
MAX_OUTPUT_KEY_BYTES = 255
MAX_OUTPUT_VALUE_BYTES = 1024 * 1024

_UPDATE_LOG = "UpdateLog"
_UPDATE_TASK = "UpdateTask"
# Pauses between final-flush attempts: doubling, but short, so that a budget of a few
# report_close_timeouts holds many attempts even when one of them hangs to its deadline.
_FIRST_RETRY_DELAY = 0.1
_MAX_RETRY_DELAY = 1.0
_SHOWN_KEY_CHARS = 64


class ReportClient(Protocol):
    """The part of RunnerClient the reporter uses; both raise ConnectError on failure."""

    async def update_log(self, request: UpdateLogRequest) -> UpdateLogResponse: ...

    async def update_task(self, request: UpdateTaskRequest) -> UpdateTaskResponse: ...


@dataclass(frozen=True, slots=True)
class ReporterSettings:
    """Reporting knobs; the first five are the runner config keys of the same names.

    ``max_buffered_rows`` and ``max_buffered_bytes`` bound the unacknowledged rows held
    and their estimated JSON size (``rows`` blocks beyond either), so that a task's log
    takes bounded memory however long its lines are; ``max_request_bytes`` bounds one
    UpdateLog request (estimated JSON size).
    """

    log_report_interval: float = 5.0
    log_report_max_latency: float = 3.0
    log_report_batch_size: int = 100
    state_report_interval: float = 5.0
    report_close_timeout: float = 10.0
    max_buffered_rows: int = 50_000
    max_buffered_bytes: int = 16 * 1024 * 1024
    max_request_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"reporter setting {field.name} must be positive, not {value!r}")


class CancelCause(enum.Enum):
    """Why the task's scope was cancelled (exactly one cause per task)."""

    SERVER = "server"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


class _Outcome(enum.Enum):
    DONE = enum.auto()
    PROGRESS = enum.auto()
    RETRY = enum.auto()
    GIVE_UP = enum.auto()


class _Step:
    __slots__ = ("log_index", "log_length", "result", "running", "started_at", "stopped_at")

    def __init__(self) -> None:
        self.started_at: datetime | None = None
        self.stopped_at: datetime | None = None
        self.result = Result.UNSPECIFIED
        self.log_index = 0
        self.log_length = 0
        self.running = False

    def state(self, index: int, appended: int) -> StepState:
        length = appended - self.log_index if self.running else self.log_length
        return StepState(
            id=index,
            result=self.result.value,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            log_index=self.log_index,
            log_length=length,
        )


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _escape(text: str) -> str:
    # Command rows written by the runner are escaped the way the web UI decodes them.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Reporter:
    """Reports one task to Gitea; implements the executor's JobSink.

    ``on_server_result(result)`` is called once, from a reporting task, when an answer
    says the server ended the task while it runs; it must not block or raise (cancel
    the job's scope). ``on_unregistered()`` likewise, when the server no longer knows
    this runner; reporting stops for good then.
    """

    def __init__(
        self,
        client: ReportClient,
        task_id: int,
        step_count: int,
        settings: ReporterSettings,
        on_server_result: Callable[[Result], None],
        *,
        on_unregistered: Callable[[], None] | None = None,
    ) -> None:
        self.task_id = task_id
        self._client = client
        self._settings = settings
        self._on_server_result = on_server_result
        self._on_unregistered = on_unregistered
        self._buffer = LogBuffer(
            settings.max_buffered_rows, settings.max_request_bytes, settings.max_buffered_bytes
        )
        self._steps = [_Step() for _ in range(step_count)]
        self._started_at: datetime | None = None
        self._stopped_at: datetime | None = None
        self._outputs: dict[str, str] = {}
        self._sent_outputs: set[str] = set()
        self._job_result: Result | None = None
        self._job_skipped = False
        self._job_cancelled = False
        self._error: str | None = None
        self._cancel_cause: CancelCause | None = None
        self._server_result: Result | None = None
        self._final_result: Result | None = None
        self._task_open = True
        self._runner_unregistered = False
        self._log_sealed = False
        self._no_more_sent = False
        self._failing: set[str] = set()
        self._stopping = False
        # Log flush scheduling (runner-protocol 13.2).
        self._log_wakeup = trio.Event()
        self._pending_since: float | None = None
        self._flush_now = False
        self._last_log_send = -math.inf
        self._log_retry_at = -math.inf
        # State reports (runner-protocol 13.3); the first one goes out at once.
        self._state_wakeup = trio.Event()
        self._state_now = True
        self._last_state_attempt = -math.inf
        self._state_retry_at = -math.inf

    # What the task reads afterwards.

    @property
    def server_result(self) -> Result | None:
        """The final result an answer reported while the job ran, if any."""
        return self._server_result

    @property
    def cancel_cause(self) -> CancelCause | None:
        return self._cancel_cause

    @property
    def final_result(self) -> Result | None:
        """The result of the final report (set when the final flush starts)."""
        return self._final_result

    @property
    def runner_unregistered(self) -> bool:
        return self._runner_unregistered

    @property
    def buffered_rows(self) -> int:
        """Rows held and not yet acknowledged by the server."""
        return self._buffer.buffered

    @property
    def log_sealed(self) -> bool:
        """The server acknowledged every row and sealed the log."""
        return self._log_sealed

    # JobSink.

    async def rows(self, contents: Sequence[str], time: datetime) -> None:
        """Buffer one row per line; blocks while the unacknowledged rows are at a bound.

        Does not checkpoint unless it blocks, so that a fast producer pays almost
        nothing per call.
        """
        if contents:
            await self._buffer.wait_for_space()
            self._append(contents, time)

    def step_started(self, index: int, time: datetime) -> None:
        step = self._step(index)
        if self._started_at is None:
            self._started_at = time
        step.started_at = time
        step.log_index = self._buffer.appended
        step.running = True
        self._transition()

    def step_finished(self, index: int, outcome: Conclusion, time: datetime) -> None:
        step = self._step(index)
        appended = self._buffer.appended
        if not step.running:
            step.log_index = appended
        step.running = False
        step.log_length = appended - step.log_index
        step.result = Result.from_word(outcome.value)
        step.stopped_at = time
        self._transition()

    # The job's end.

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        """Job outputs for the final report; oversized pairs are dropped with a warning row."""
        warnings = []
        for key, value in outputs.items():
            if len(key.encode()) > MAX_OUTPUT_KEY_BYTES:
                shown = _escape(key[:_SHOWN_KEY_CHARS])
                warnings.append(
                    f"::warning::Output '{shown}...' dropped: its name is longer than "
                    f"{MAX_OUTPUT_KEY_BYTES} bytes"
                )
            elif (size := len(value.encode())) > MAX_OUTPUT_VALUE_BYTES:
                warnings.append(
                    f"::warning::Output '{_escape(key)}' dropped: its value has {size} bytes, "
                    f"more than {MAX_OUTPUT_VALUE_BYTES}"
                )
            else:
                self._outputs.setdefault(key, value)
        if warnings:
            self._append(warnings, datetime.now(UTC))

    def set_result(self, result: Result) -> None:
        """The job's own result (success, failure, cancelled or skipped)."""
        self._job_result = result
        self._transition()

    def set_error(self, text: str) -> None:
        """The error that ended the job; it becomes the last rows of the log."""
        if not self._error:
            self._error = text

    def mark_job_skipped(self) -> None:
        """The job's ``if`` was false: result skipped, steps that never ran skipped."""
        self._job_skipped = True
        if self._job_result is None:
            self._job_result = Result.SKIPPED

    def record_cancel(self, cause: CancelCause) -> None:
        """Why the task's scope is being cancelled; the first cause recorded stays."""
        if self._cancel_cause is None:
            self._cancel_cause = cause

    # Lifetime.

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Reporter]:
        """Report periodically while the block runs, then perform the final flush.

        The final flush runs however the block ends (also when it is cancelled), in a
        shielded scope bounded by the ``report_close_timeout`` budgets. An exception of
        the block comes out as it was raised, not wrapped in an exception group.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._log_loop)
                nursery.start_soon(self._state_loop)
                try:
                    yield self
                except BaseException as exc:
                    if _is_cancellation(exc):
                        self._job_cancelled = True
                    raise
                finally:
                    self._stop_periodic(nursery.cancel_scope)
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None
        finally:
            with trio.CancelScope(shield=True):
                await self._final_flush()

    def _stop_periodic(self, scope: trio.CancelScope) -> None:
        # A call in flight may finish (bounded), so the final flush starts from its ack.
        self._stopping = True
        self._log_wakeup.set()
        self._state_wakeup.set()
        scope.deadline = min(scope.deadline, trio.current_time() + self._close_timeout)

    @property
    def _close_timeout(self) -> float:
        return self._settings.report_close_timeout

    # Rows and flush triggers.

    def _append(self, lines: Sequence[str], time: datetime) -> None:
        if self._started_at is None:
            self._started_at = time
        buffer = self._buffer
        before = buffer.unsent
        buffer.append(lines, time)
        after = buffer.unsent
        if after == before:
            return
        if self._pending_since is None:
            self._pending_since = trio.current_time()
            self._log_wakeup.set()
        elif before < self._settings.log_report_batch_size <= after:
            self._log_wakeup.set()

    def _step(self, index: int) -> _Step:
        if not 0 <= index < len(self._steps):
            raise ValueError(f"step index {index} out of range: the job has {len(self._steps)}")
        return self._steps[index]

    def _transition(self) -> None:
        self._flush_now = True
        self._state_now = True
        self._log_wakeup.set()
        self._state_wakeup.set()

    def _log_due(self) -> float:
        """When the next periodic UpdateLog is due (inf: nothing to send)."""
        if not self._buffer.unsent:
            return math.inf
        settings = self._settings
        if self._flush_now or self._buffer.unsent >= settings.log_report_batch_size:
            due = -math.inf
        else:
            since = self._pending_since if self._pending_since is not None else -math.inf
            # A row waits at most max_latency, and one arriving after a quiet spell of
            # that length goes at once: the first rows of a task reach the UI at once.
            due = min(
                max(since, self._last_log_send + settings.log_report_max_latency),
                self._last_log_send + settings.log_report_interval,
            )
        return max(due, self._log_retry_at)

    async def _log_loop(self) -> None:
        while not self._stopping and self._buffer.is_open:
            self._log_wakeup = trio.Event()
            due = self._log_due()
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await self._log_wakeup.wait()
                continue
            if await self._send_log() in (_Outcome.RETRY, _Outcome.GIVE_UP):
                self._log_retry_at = trio.current_time() + self._settings.log_report_interval

    async def _send_log(self, *, final: bool = False) -> _Outcome:
        """One UpdateLog from ``offset`` with everything buffered (up to the size cap).

        ``final`` seals the log when the batch holds every remaining row.
        """
        buffer = self._buffer
        started = trio.current_time()
        index = buffer.offset
        rows = buffer.take()
        no_more = final and buffer.unsent == 0
        self._no_more_sent |= no_more
        # Rows left out by the size cap mean the log is behind: send again at once.
        self._flush_now = buffer.unsent > 0
        if not self._flush_now:
            self._pending_since = None
        self._last_log_send = started
        request = UpdateLogRequest(task_id=self.task_id, index=index, rows=rows, no_more=no_more)
        answer: UpdateLogResponse | None = None
        failure: ConnectError | None = None
        try:
            answer = await self._client.update_log(request)
        except ConnectError as error:
            failure = error
        finally:
            if answer is None:
                buffer.settle(None)
                self._mark_pending(started)
        if answer is None:
            assert failure is not None
            shape = f"index {index}, {len(rows)} rows, no_more {no_more}"
            return self._on_error(_UPDATE_LOG, failure, shape)
        self._recovered(_UPDATE_LOG)
        try:
            acked = buffer.settle(answer.ack_index)
        except LogLostError:
            logger.error(
                "task %d: the server acknowledged %d log rows after %d; rows it had stored "
                "are lost, so no more rows are sent for this task",
                self.task_id,
                answer.ack_index,
                index,
            )
            buffer.close()
            return _Outcome.GIVE_UP
        self._mark_pending(started)
        if acked < len(rows):
            return _Outcome.PROGRESS if acked else _Outcome.RETRY
        if no_more:
            self._log_sealed = True
            buffer.close()
        return _Outcome.DONE

    def _mark_pending(self, since: float) -> None:
        if self._buffer.unsent:
            pending = self._pending_since
            self._pending_since = since if pending is None else min(pending, since)

    # State reports.

    async def _state_loop(self) -> None:
        interval = self._settings.state_report_interval
        while not self._stopping and self._task_open:
            self._state_wakeup = trio.Event()
            due = -math.inf if self._state_now else self._last_state_attempt + interval
            due = max(due, self._state_retry_at)
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await self._state_wakeup.wait()
                continue
            self._state_now = False
            self._last_state_attempt = trio.current_time()
            if await self._send_state(final=False) in (_Outcome.RETRY, _Outcome.GIVE_UP):
                self._state_retry_at = trio.current_time() + interval

    def _task_state(self, result: Result) -> TaskState:
        appended = self._buffer.appended
        return TaskState(
            id=self.task_id,
            result=result.value,
            started_at=self._started_at,
            stopped_at=self._stopped_at if result is not Result.UNSPECIFIED else None,
            steps=[step.state(index, appended) for index, step in enumerate(self._steps)],
        )

    async def _send_state(self, *, final: bool) -> _Outcome:
        result = self._final_result if final and self._final_result else Result.UNSPECIFIED
        outputs = {k: v for k, v in self._outputs.items() if k not in self._sent_outputs}
        request = UpdateTaskRequest(state=self._task_state(result), outputs=outputs)
        try:
            answer = await self._client.update_task(request)
        except ConnectError as error:
            shape = f"result {result.value}, {len(self._steps)} steps, {len(outputs)} outputs"
            return self._on_error(_UPDATE_TASK, error, shape)
        self._recovered(_UPDATE_TASK)
        self._sent_outputs.update(answer.sent_outputs)
        if not final and answer.state is not None:
            self._note_server_result(answer.state.result_enum)
        return _Outcome.DONE if self._sent_outputs.issuperset(self._outputs) else _Outcome.RETRY

    def _note_server_result(self, result: Result) -> None:
        if result is Result.UNSPECIFIED or self._server_result is not None:
            return
        self._server_result = result
        self.record_cancel(CancelCause.SERVER)
        logger.info("task %d: the server ended the task (%s)", self.task_id, result.word)
        self._on_server_result(result)

    # Failures (runner-protocol 14).

    def _on_error(self, call: str, error: ConnectError, shape: str) -> _Outcome:
        if error.is_unregistered:
            if not self._runner_unregistered:
                self._runner_unregistered = True
                logger.error(
                    "task %d: %s: the server no longer knows this runner (%s); reporting stops",
                    self.task_id,
                    call,
                    error,
                )
                self._stop_reporting()
                if self._on_unregistered is not None:
                    self._on_unregistered()
            return _Outcome.GIVE_UP
        if error.is_task_rejected:
            logger.error(
                "task %d: %s: the server rejects the task (%s); it is no longer reported",
                self.task_id,
                call,
                error,
            )
            self._stop_reporting()
            return _Outcome.GIVE_UP
        if call == _UPDATE_LOG and error.is_log_archived:
            logger.error(
                "task %d: the log is already sealed on the server; %d rows cannot be stored",
                self.task_id,
                self._buffer.buffered,
            )
            self._buffer.close()
            return _Outcome.GIVE_UP
        if call not in self._failing:
            self._failing.add(call)
            if error.effective_code == "invalid_argument":
                # A request this runner encoded badly: say what it looked like.
                logger.error("task %d: %s refused (%s): %s", self.task_id, call, shape, error)
            else:
                logger.warning("task %d: %s failed, will retry: %s", self.task_id, call, error)
        return _Outcome.RETRY if error.is_transient else _Outcome.GIVE_UP

    def _recovered(self, call: str) -> None:
        if call in self._failing:
            self._failing.discard(call)
            logger.info("task %d: %s works again", self.task_id, call)

    def _stop_reporting(self) -> None:
        self._task_open = False
        self._buffer.close()
        self._log_wakeup.set()
        self._state_wakeup.set()

    # The final flush (runner-protocol 13.4).

    def _conclusion(self) -> tuple[Result, str | None]:
        """The final result and the text of the last log rows, if any."""
        job, server, cause = self._job_result, self._server_result, self._cancel_cause
        error = self._error or None
        if server is not None:
            return server, error or (ENDED_BY_SERVER_TEXT if job is None else None)
        if job is not None:
            if cause is CancelCause.TIMEOUT and job is Result.CANCELLED:
                job = Result.FAILURE
            return job, error
        if cause is CancelCause.TIMEOUT:
            return Result.FAILURE, error or TIMED_OUT_TEXT
        if cause is not None or self._job_cancelled:
            return Result.CANCELLED, error or CANCELLED_TEXT
        return Result.FAILURE, error or EARLY_TERMINATION_TEXT

    def _close_steps(self, now: datetime) -> None:
        fill = Result.SKIPPED if self._job_skipped else Result.CANCELLED
        appended = self._buffer.appended
        for step in self._steps:
            if step.result is not Result.UNSPECIFIED:
                continue
            if step.running:
                step.log_length = appended - step.log_index
                step.running = False
            else:
                step.log_index = appended
            step.result = fill
            step.stopped_at = now

    async def _final_flush(self) -> None:
        now = datetime.now(UTC)
        result, last_words = self._conclusion()
        self._final_result = result
        self._close_steps(now)
        if last_words is not None:
            self._append(last_words.splitlines() or [""], now)
        self._stopped_at = now
        if self._buffer.is_open:
            await self._within_budget(_UPDATE_LOG, self._final_log_attempt)
        if self._task_open:
            await self._within_budget(_UPDATE_TASK, lambda: self._send_state(final=True))

    async def _final_log_attempt(self) -> _Outcome:
        # Older Gitea ignores ``no_more`` in a batch without rows it lacks (10.3). So
        # after a lost answer a plain batch first learns what the server holds (a lost
        # final batch is simply repeated), and an empty final batch gets one empty row.
        buffer = self._buffer
        if buffer.unconfirmed and not self._no_more_sent:
            outcome = await self._send_log()
            return _Outcome.PROGRESS if outcome is _Outcome.DONE else outcome
        if not buffer.buffered:
            self._append([""], datetime.now(UTC))
        outcome = await self._send_log(final=True)
        if outcome is _Outcome.DONE and not self._log_sealed:
            return _Outcome.PROGRESS
        return outcome

    async def _within_budget(self, call: str, attempt: Callable[[], Awaitable[_Outcome]]) -> None:
        """Retry ``attempt`` with backoff for 3 x report_close_timeout, each attempt bounded."""
        timeout = self._close_timeout
        delay = min(_FIRST_RETRY_DELAY, timeout)
        with trio.move_on_after(3 * timeout):
            while True:
                outcome = _Outcome.RETRY
                with trio.move_on_after(timeout) as attempt_scope:
                    outcome = await attempt()
                if attempt_scope.cancelled_caught and call not in self._failing:
                    self._failing.add(call)
                    logger.warning(
                        "task %d: %s got no answer within %g s, will retry",
                        self.task_id,
                        call,
                        timeout,
                    )
                if outcome in (_Outcome.DONE, _Outcome.GIVE_UP):
                    return
                if outcome is _Outcome.PROGRESS:
                    delay = min(_FIRST_RETRY_DELAY, timeout)
                    continue
                await trio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY, timeout)
        logger.error(
            "task %d: gave up the final %s after %g s", self.task_id, call, 3 * self._close_timeout
        )
