"""The fake Gitea's state and call semantics, independent of HTTP.

Runners, registration tokens, the task queue with its tasks version (spec 8.1), step and
output bookkeeping of UpdateTask (9.2-9.5), the log model of current Gitea's UpdateLog
(10.2), injected faults, recorded protocol violations, and bounded async waits for tests.
Everything runs on the trio loop of the test; control methods are plain calls.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from secrets import compare_digest, token_hex, token_urlsafe
from typing import Any

import trio
import yaml

from trio_runner.gitea.messages import (
    DeclareRequest,
    DeclareResponse,
    FetchTaskRequest,
    FetchTaskResponse,
    LogRow,
    PingRequest,
    PingResponse,
    RegisterRequest,
    RegisterResponse,
    Result,
    Runner,
    StepState,
    Task,
    TaskNeed,
    TaskState,
    UpdateLogRequest,
    UpdateLogResponse,
    UpdateTaskRequest,
    UpdateTaskResponse,
)

from .wire import grpc_error, plain_error

METHODS = ("Ping", "Register", "Declare", "FetchTask", "UpdateTask", "UpdateLog")
DEFAULT_WAIT = 30.0
MAX_ROW_BYTES = 64 * 1024
MAX_OUTPUT_KEY_BYTES = 255
MAX_OUTPUT_VALUE_BYTES = 1024 * 1024

Row = tuple[datetime, str]


class TaskStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self not in (TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.CANCELLING)

    @property
    def answer(self) -> Result:
        """The result UpdateTask answers with for this status (9.5)."""
        return _ANSWER_FOR_STATUS[self]


_ANSWER_FOR_STATUS = {
    TaskStatus.WAITING: Result.UNSPECIFIED,
    TaskStatus.RUNNING: Result.UNSPECIFIED,
    TaskStatus.CANCELLING: Result.CANCELLED,
    TaskStatus.CANCELLED: Result.CANCELLED,
    TaskStatus.SUCCESS: Result.SUCCESS,
    TaskStatus.FAILURE: Result.FAILURE,
    TaskStatus.SKIPPED: Result.SKIPPED,
}
_STATUS_FOR_RESULT = {
    Result.SUCCESS: TaskStatus.SUCCESS,
    Result.FAILURE: TaskStatus.FAILURE,
    Result.CANCELLED: TaskStatus.CANCELLED,
    Result.SKIPPED: TaskStatus.SKIPPED,
}


@dataclass
class RunnerRecord:
    id: int
    uuid: str
    token: str
    name: str
    version: str = ""
    labels: list[str] = field(default_factory=list)
    ephemeral: bool = False
    capabilities: list[str] = field(default_factory=list)
    declared: bool = False
    task_ids: list[int] = field(default_factory=list)
    deleted: bool = False
    # Some Gitea 1.2x versions answered "Runner is deleted" for a while after deletion.
    deleted_message: bool = False

    @property
    def cancelling(self) -> bool:
        return "cancelling" in self.capabilities


@dataclass
class StepRecord:
    """Gitea's view of one step: 'waiting', 'running' or a result word."""

    #: The display name Gitea gives the step from the payload (workflow-execution 3.2).
    name: str = ""
    status: str = "waiting"
    started: bool = False
    stopped: bool = False
    log_index: int = 0
    log_length: int = 0


@dataclass
class TaskRecord:
    id: int
    job_id: str
    workflow: str
    runs_on: list[str]
    context: dict[str, Any]
    secrets: dict[str, str]
    vars: dict[str, str]
    needs: dict[str, TaskNeed]
    token: str
    runtime_token: str
    status: TaskStatus = TaskStatus.WAITING
    runner_uuid: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    sealed: bool = False
    states: list[TaskState] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    log_calls: int = 0
    last_update: float = 0.0
    # Timing and batching, for benchmarks (trio.current_time() of the fake).
    handed_out_at: float | None = None
    first_row_at: float | None = None
    last_row_at: float | None = None
    rows_per_log_call: list[int] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status.is_final

    @property
    def result(self) -> Result | None:
        """The final result, or None while the task is not final."""
        return self.status.answer if self.final else None

    @property
    def contents(self) -> list[str]:
        return [content for _, content in self.rows]


@dataclass
class Fault:
    """What the next call of a method suffers.

    ``status``: answer with this HTTP status instead of handling the call (a Connect
    error body when ``connect_body``, else a proxy's HTML page); ``delay``: wait first
    (bounded by the client's Connect-Timeout-Ms); ``lose``: handle the call, then answer a
    bare 503 as if the answer was lost on the way back.
    """

    status: int | None = None
    connect_body: bool = True
    code: str | None = None
    message: str = "injected failure"
    delay: float = 0.0
    lose: bool = False


def _elapsed(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _label_names_problem(labels: Sequence[str], call: str) -> str | None:
    with_schema = [label for label in labels if ":" in label]
    if with_schema:
        return f"{call} labels carry a schema (send names only): {with_schema}"
    return None


def _job_of(workflow: str) -> tuple[str, list[str], list[str]]:
    """Job id, runs-on labels and step display names of a one-job workflow."""
    doc = yaml.safe_load(workflow)
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not isinstance(jobs, dict) or len(jobs) != 1:
        raise ValueError("a task's workflow must hold exactly one job under 'jobs:'")
    job_id, job = next(iter(jobs.items()))
    job = job if isinstance(job, dict) else {}
    runs_on = job.get("runs-on", [])
    labels = [runs_on] if isinstance(runs_on, str) else [str(x) for x in runs_on or []]
    steps = job.get("steps") or []
    names = [_step_name(step) for step in steps] if isinstance(steps, list) else []
    return str(job_id), labels, names


def _step_name(step: object) -> str:
    """Gitea's name for a step: built from the payload, templates left as written (3.2)."""
    step = step if isinstance(step, dict) else {}
    if step.get("name"):
        return str(step["name"])
    if step.get("run") is not None:
        lines = str(step["run"]).strip().splitlines()
        return f"Run {lines[0] if lines else ''}".rstrip()
    return f"Run {step.get('uses') or step.get('id') or ''}".rstrip()


class FakeGitea:
    """A Gitea stand-in with one runner scope (the instance).

    ``url`` is set by the server once it listens (address with trailing slash).
    ``connect_codes`` makes errors travel with real Connect codes instead of Gitea's
    ``unknown`` + "rpc error" form. ``server_capabilities`` is the Declare answer header
    (None: no header, like servers older than the capability exchange).
    """

    def __init__(
        self, *, connect_codes: bool = False, server_capabilities: str | None = "job-summary"
    ) -> None:
        self.url = ""
        self.connect_codes = connect_codes
        self.server_capabilities = server_capabilities
        self.tasks_version = 0
        self.runners: dict[str, RunnerRecord] = {}
        self.tasks: dict[int, TaskRecord] = {}
        self.registration_tokens: dict[str, bool] = {}
        self.calls: Counter[str] = Counter()
        # Client address "host:port" -> calls: one entry per TCP connection used.
        self.peers: Counter[str] = Counter()
        self.violations: list[str] = []
        self.connect_timeouts: list[int | None] = []
        self._faults: dict[str, deque[Fault]] = {m: deque() for m in METHODS}
        self._queue: list[int] = []
        self._next_runner_id = 1
        self._next_task_id = 1
        self._in_flight: set[tuple[str, str | int]] = set()
        self._changed = trio.Event()

    # -- change notification and waits ---------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], within: float = DEFAULT_WAIT) -> None:
        """Wait until ``predicate()`` holds; raises trio.TooSlowError after ``within`` seconds."""
        with trio.fail_after(within):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    async def wait_task_final(self, task_id: int, within: float = DEFAULT_WAIT) -> Result:
        task = self.task(task_id)
        await self.wait_until(lambda: task.final, within)
        assert task.result is not None
        return task.result

    async def wait_task_assigned(self, task_id: int, within: float = DEFAULT_WAIT) -> None:
        task = self.task(task_id)
        await self.wait_until(lambda: task.runner_uuid is not None, within)

    async def wait_rows(
        self,
        task_id: int,
        predicate: Callable[[list[Row]], bool],
        within: float = DEFAULT_WAIT,
    ) -> list[Row]:
        task = self.task(task_id)
        await self.wait_until(lambda: predicate(task.rows), within)
        return task.rows

    async def wait_sealed(self, task_id: int, within: float = DEFAULT_WAIT) -> None:
        task = self.task(task_id)
        await self.wait_until(lambda: task.sealed, within)

    async def wait_calls(self, method: str, count: int, within: float = DEFAULT_WAIT) -> None:
        """Wait until ``method`` was received at least ``count`` times in total."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        await self.wait_until(lambda: self.calls[method] >= count, within)

    async def wait_fetch_count(self, count: int, within: float = DEFAULT_WAIT) -> None:
        await self.wait_calls("FetchTask", count, within)

    async def wait_update_tasks(
        self, task_id: int, count: int, within: float = DEFAULT_WAIT
    ) -> list[TaskState]:
        """Wait until at least ``count`` UpdateTask states were received for the task."""
        task = self.task(task_id)
        await self.wait_until(lambda: len(task.states) >= count, within)
        return task.states

    # -- control API ---------------------------------------------------------------------

    def add_registration_token(self, token: str | None = None) -> str:
        """Accept ``token`` (a fresh one when None) for Register; returns it."""
        token = token or token_hex(20)
        self.registration_tokens[token] = True
        return token

    def invalidate_registration_token(self, token: str) -> None:
        """As an administrator regenerating the token."""
        self.registration_tokens[token] = False

    def add_runner(
        self,
        name: str = "runner",
        labels: Sequence[str] = ("ubuntu-latest",),
        *,
        ephemeral: bool = False,
        capabilities: Sequence[str] = ("cancelling",),
        version: str = "",
    ) -> RunnerRecord:
        """A registered runner, as if Register had succeeded; the record holds uuid/token."""
        runner = RunnerRecord(
            id=self._next_runner_id,
            uuid=str(uuid.uuid4()),
            token=token_hex(20),
            name=name.encode()[:255].decode("utf-8", "ignore"),
            version=version,
            labels=list(labels),
            ephemeral=ephemeral,
            capabilities=list(capabilities),
        )
        self._next_runner_id += 1
        self.runners[runner.uuid] = runner
        self._notify()
        return runner

    def delete_runner(self, runner_uuid: str, *, deleted_message: bool = False) -> None:
        """Delete a runner as an administrator would. With ``deleted_message``, calls answer
        ``internal`` "Runner is deleted" like some Gitea 1.2x versions."""
        runner = self.runners[runner_uuid]
        runner.deleted = True
        runner.deleted_message = deleted_message
        self._notify()

    def queue_task(
        self,
        workflow: str,
        *,
        context: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
        vars: dict[str, str] | None = None,
        needs: dict[str, TaskNeed] | None = None,
        runs_on: Sequence[str] | None = None,
        workflow_file: str = "ci.yml",
    ) -> int:
        """Queue a one-job workflow (YAML text); returns the task id.

        ``context`` entries override the default github context; ``runs_on`` overrides the
        job's ``runs-on`` (for expressions the fake does not evaluate). The task token is
        added to the secrets as GITEA_TOKEN and GITHUB_TOKEN, like Gitea does.
        """
        job_id, labels, step_names = _job_of(workflow)
        task_id = self._next_task_id
        self._next_task_id += 1
        token = token_hex(20)
        runtime_token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + token_urlsafe(32)
        doc = yaml.safe_load(workflow)
        full_context = self._default_context(task_id, job_id, doc.get("name"), workflow_file)
        full_context["token"] = token
        full_context["gitea_runtime_token"] = runtime_token
        full_context.update(context or {})
        task = TaskRecord(
            id=task_id,
            job_id=job_id,
            workflow=workflow,
            runs_on=list(runs_on) if runs_on is not None else labels,
            context=full_context,
            secrets={**(secrets or {}), "GITEA_TOKEN": token, "GITHUB_TOKEN": token},
            vars=dict(vars or {}),
            needs=dict(needs or {}),
            token=token,
            runtime_token=runtime_token,
            steps=[StepRecord(name=name) for name in step_names],
        )
        self.tasks[task_id] = task
        self._queue.append(task_id)
        self._bump()
        return task_id

    def cancel_task(self, task_id: int) -> None:
        """Cancel as a user would (9.5): *cancelling* when the runner declared it."""
        task = self.task(task_id)
        if task.final:
            return
        runner = self.runners.get(task.runner_uuid or "")
        if task.status is TaskStatus.RUNNING and runner is not None and runner.cancelling:
            task.status = TaskStatus.CANCELLING
        else:
            task.status = TaskStatus.CANCELLED
        self._bump()

    def end_task(self, task_id: int, result: Result = Result.FAILURE) -> None:
        """End a task from the server side, as the zombie reaper or an administrator."""
        task = self.task(task_id)
        if not task.final:
            task.status = _STATUS_FOR_RESULT[result]
            self._bump()

    def task(self, task_id: int) -> TaskRecord:
        return self.tasks[task_id]

    def fail_next(
        self,
        method: str,
        *,
        count: int = 1,
        status: int = 503,
        connect_body: bool = True,
        code: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """The next ``count`` calls of ``method`` answer ``status`` without being handled."""
        fault = Fault(status=status, connect_body=connect_body, code=code, message=message)
        self._add_fault(method, fault, count)

    def delay_next(self, method: str, seconds: float, *, count: int = 1) -> None:
        self._add_fault(method, Fault(delay=seconds), count)

    def lose_next(self, method: str, *, count: int = 1) -> None:
        """The next calls are handled, but the client gets a bare 503."""
        self._add_fault(method, Fault(lose=True), count)

    def _add_fault(self, method: str, fault: Fault, count: int) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self._faults[method].extend([fault] * count)

    def take_fault(self, method: str) -> Fault | None:
        faults = self._faults[method]
        return faults.popleft() if faults else None

    def stats(self) -> list[dict[str, Any]]:
        """Per-task summary for the standalone server.

        Times are seconds: ``first_row_after`` from the hand-out of the task (its FetchTask
        answer) to the storing of its first row, ``rows_span`` from the first stored row
        to the last; ``rows_per_log_call`` counts the rows each UpdateLog carried.
        """
        return [
            {
                "task": task.id,
                "job": task.job_id,
                "status": task.status.value,
                "rows": len(task.rows),
                "sealed": task.sealed,
                "log_calls": task.log_calls,
                "rows_per_log_call": task.rows_per_log_call,
                "first_row_after": _elapsed(task.handed_out_at, task.first_row_at),
                "rows_span": _elapsed(task.first_row_at, task.last_row_at),
                "state_reports": len(task.states),
                "violations": task.violations,
            }
            for task in self.tasks.values()
        ]

    # -- helpers -------------------------------------------------------------------------

    def _bump(self) -> None:
        self.tasks_version += 1
        self._notify()

    def violation(self, text: str, task_id: int | None = None) -> None:
        self.violations.append(text if task_id is None else f"task {task_id}: {text}")
        task = self.tasks.get(task_id) if task_id is not None else None
        if task is not None:
            task.violations.append(text)
        self._notify()

    def record_call(self, method: str, peer: str) -> None:
        self.calls[method] += 1
        self.peers[peer] += 1
        self._notify()

    @property
    def in_flight_calls(self) -> frozenset[tuple[str, str | int]]:
        """(method, runner uuid or task id) of calls being handled right now."""
        return frozenset(self._in_flight)

    @contextmanager
    def in_flight(self, method: str, key: str | int | None, task_id: int | None) -> Iterator[None]:
        """Mark a call in progress; a second one for the same key is a violation."""
        if key is None:
            yield
            return
        slot = (method, key)
        if slot in self._in_flight:
            self.violation(f"two concurrent {method} calls for {key}", task_id)
            yield
            return
        self._in_flight.add(slot)
        self._notify()
        try:
            yield
        finally:
            self._in_flight.discard(slot)

    def _default_context(
        self, task_id: int, job_id: str, name: object, workflow_file: str
    ) -> dict[str, Any]:
        server = self.url or "http://127.0.0.1/"
        sha = token_hex(20)
        return {
            "action": "",
            "action_path": "",
            "action_ref": "",
            "action_repository": "",
            "action_status": "",
            "actor": "alice",
            "api_url": server + "api/v1",
            "base_ref": "",
            "env": "",
            "event": {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": sha,
                "repository": {
                    "name": "app",
                    "full_name": "alice/app",
                    "default_branch": "main",
                    "owner": {"login": "alice"},
                },
                "pusher": {"login": "alice"},
                "head_commit": {"id": sha, "message": "update"},
            },
            "event_name": "push",
            "event_path": "",
            "gitea_default_actions_url": "https://github.com",
            "graphql_url": "",
            "head_ref": "",
            "job": job_id,
            "path": "",
            "ref": "refs/heads/main",
            "ref_name": "main",
            "ref_protected": False,
            "ref_type": "branch",
            "repository": "alice/app",
            "repository_owner": "alice",
            "repositoryUrl": server + "alice/app",
            "retention_days": "",
            "run_attempt": "1",
            "run_id": str(task_id),
            "run_number": str(task_id),
            "secret_source": "Actions",
            "server_url": server,
            "sha": sha,
            "triggering_actor": "alice",
            "workflow": name if isinstance(name, str) else workflow_file,
            "workspace": "",
        }

    def authenticate(self, headers: dict[str, str]) -> RunnerRecord:
        runner = self.runners.get(headers.get("x-runner-uuid", ""))
        if runner is None or not compare_digest(runner.token, headers.get("x-runner-token", "")):
            raise grpc_error("unauthenticated", "unregistered runner")
        if runner.deleted:
            if runner.deleted_message:
                raise grpc_error("internal", "Runner is deleted")
            raise grpc_error("unauthenticated", "unregistered runner")
        return runner

    # -- the calls -----------------------------------------------------------------------

    def ping(self, request: PingRequest) -> PingResponse:
        return PingResponse(data=f"Hello, {request.data}!")

    def register(self, request: RegisterRequest) -> RegisterResponse:
        token, name = request.token.strip(), request.name
        if not token or not name:
            raise plain_error("missing runner token, name")
        active = self.registration_tokens.get(token)
        if active is None:
            raise plain_error("runner registration token not found")
        if not active:
            raise plain_error(
                "runner registration token has been invalidated, please use the latest one"
            )
        problem = _label_names_problem(request.labels, "Register")
        if problem:
            self.violation(problem)
        runner = self.add_runner(
            name,
            request.labels,
            ephemeral=request.ephemeral,
            capabilities=request.capabilities,
            version=request.version,
        )
        return RegisterResponse(
            runner=Runner(
                id=runner.id,
                uuid=runner.uuid,
                token=runner.token,
                name=runner.name,
                version=runner.version,
                labels=list(runner.labels),
                ephemeral=runner.ephemeral,
            )
        )

    def declare(self, runner: RunnerRecord, request: DeclareRequest) -> DeclareResponse:
        problem = _label_names_problem(request.labels, "Declare")
        if problem:
            self.violation(problem)
        runner.labels = list(request.labels)
        runner.version = request.version
        runner.capabilities = list(request.capabilities)
        runner.declared = True
        self._notify()
        return DeclareResponse(
            runner=Runner(
                id=runner.id,
                uuid=runner.uuid,
                name=runner.name,
                version=runner.version,
                labels=list(runner.labels),
            )
        )

    def fetch_task(self, runner: RunnerRecord, request: FetchTaskRequest) -> FetchTaskResponse:
        if self.tasks_version == 0:
            self.tasks_version = 1
        version = self.tasks_version
        if request.tasks_version == version:
            return FetchTaskResponse(tasks_version=version)
        if runner.ephemeral and runner.task_ids:
            if not self.task(runner.task_ids[-1]).final:
                return FetchTaskResponse(tasks_version=version)
            runner.deleted = True
            raise grpc_error("internal", "pick task: runner has been removed")
        for position, task_id in enumerate(self._queue):
            task = self.task(task_id)
            if all(label in runner.labels for label in task.runs_on):
                del self._queue[position]
                return FetchTaskResponse(task=self._assign(task, runner), tasks_version=version)
        return FetchTaskResponse(tasks_version=version)

    def _assign(self, task: TaskRecord, runner: RunnerRecord) -> Task:
        task.status = TaskStatus.RUNNING
        task.runner_uuid = runner.uuid
        task.last_update = task.handed_out_at = trio.current_time()
        runner.task_ids.append(task.id)
        self._notify()
        return Task(
            id=task.id,
            workflow_payload=task.workflow.encode(),
            context=task.context,
            secrets=dict(task.secrets),
            needs=dict(task.needs),
            vars=dict(task.vars),
        )

    def _owned_task(
        self, runner: RunnerRecord, task_id: int, missing: str, other: str
    ) -> TaskRecord:
        task = self.tasks.get(task_id)
        if task is None or task.runner_uuid is None:
            raise grpc_error("internal", missing)
        if task.runner_uuid != runner.uuid:
            raise grpc_error("internal", other)
        return task

    def update_task(self, runner: RunnerRecord, request: UpdateTaskRequest) -> UpdateTaskResponse:
        state = request.state
        task = self._owned_task(
            runner,
            state.id,
            "update task: resource does not exist",
            "update task: invalid runner for task",
        )
        task.states.append(state)
        self._store_outputs(task, request.outputs)
        result = Result.parse(state.result)
        if not task.final:
            self._apply_steps(task, state.steps, result)
            if result is Result.UNSPECIFIED:
                task.last_update = trio.current_time()
            else:
                self._finish(task, runner, result)
        self._notify()
        return UpdateTaskResponse(
            state=TaskState(id=task.id, result=task.status.answer.value),
            sent_outputs=list(task.outputs),
        )

    def _store_outputs(self, task: TaskRecord, outputs: dict[str, str]) -> None:
        for key, value in outputs.items():
            if len(key.encode()) > MAX_OUTPUT_KEY_BYTES:
                self.violation(f"output key over 255 bytes: {key[:40]!r}...", task.id)
            elif len(value.encode()) > MAX_OUTPUT_VALUE_BYTES:
                self.violation(f"output {key!r} over 1 MiB", task.id)
            else:
                task.outputs.setdefault(key, value)

    def _apply_steps(self, task: TaskRecord, states: list[StepState], result: Result) -> None:
        by_id = {step.id: step for step in states}
        for number, record in enumerate(task.steps):
            step = by_id.get(number)
            if step is None:
                if record.started:
                    self.violation(
                        f"step {number} had started but is missing from UpdateTask", task.id
                    )
                    record.status = "running"
                if result is not Result.UNSPECIFIED:
                    self.violation(f"final UpdateTask leaves step {number} out", task.id)
                continue
            record.log_index, record.log_length = step.log_index, step.log_length
            if step.started_at is not None and not record.started:
                record.started = True
            step_result = Result.parse(step.result)
            if step_result is not Result.UNSPECIFIED:
                record.status = step_result.word
                record.stopped = True
            elif record.started:
                record.status = "running"
            elif result is not Result.UNSPECIFIED:
                self.violation(f"final UpdateTask leaves step {number} without a result", task.id)

    def _finish(self, task: TaskRecord, runner: RunnerRecord, result: Result) -> None:
        if not task.sealed:
            self.violation("final UpdateTask before the log was sealed", task.id)
        end = 0
        for number, record in enumerate(task.steps):
            if record.log_length == 0:
                continue
            if record.log_index < end or record.log_index + record.log_length > len(task.rows):
                self.violation(
                    f"step {number} log range {record.log_index}+{record.log_length} overlaps "
                    f"the previous step or lies outside the log of {len(task.rows)} rows",
                    task.id,
                )
            end = record.log_index + record.log_length
        if task.status is TaskStatus.CANCELLING:
            task.status = TaskStatus.CANCELLED
        else:
            task.status = _STATUS_FOR_RESULT[result]
        if runner.ephemeral:
            runner.deleted = True
        self._bump()

    def update_log(self, runner: RunnerRecord, request: UpdateLogRequest) -> UpdateLogResponse:
        task = self._owned_task(
            runner,
            request.task_id,
            f"get task: task with id {request.task_id}: resource does not exist",
            "invalid runner for task",
        )
        task.log_calls += 1
        rows = request.rows
        task.rows_per_log_call.append(len(rows))
        index = request.index
        ack = len(task.rows)
        if index > ack:
            self.violation(f"UpdateLog batch starts at {index} beyond ack {ack} (a gap)", task.id)
        new = rows[ack - index :] if index <= ack < index + len(rows) else []
        if task.sealed:
            if new:
                raise grpc_error("already_exists", "log file has been archived")
            return UpdateLogResponse(ack_index=ack)
        if not new and (not request.no_more or index > ack):
            return UpdateLogResponse(ack_index=ack)
        if new:
            task.rows.extend(self._stored_rows(task, new))
            task.last_update = task.last_row_at = trio.current_time()
            if task.first_row_at is None:
                task.first_row_at = task.last_row_at
        if request.no_more:
            task.sealed = True
        self._notify()
        return UpdateLogResponse(ack_index=len(task.rows))

    def _stored_rows(self, task: TaskRecord, rows: list[LogRow]) -> list[Row]:
        contents = [row.content for row in rows]
        # Checking the joined contents runs in C; only a batch that may break a rule is
        # checked row by row (which names the row).
        joined = "".join(contents)
        long = len(joined) > MAX_ROW_BYTES // 4 and max(map(len, contents)) > MAX_ROW_BYTES // 4
        if long or "\n" in joined:
            return list(self._checked_rows(task, rows))
        return [(row.time, row.content) for row in rows]

    def _checked_rows(self, task: TaskRecord, rows: list[LogRow]) -> Iterator[Row]:
        for row in rows:
            content = row.content
            # A CR inside a line (a progress bar) is content; only LF ends a row (10.4).
            if "\n" in content:
                self.violation(f"multi-line row content: {content[:60]!r}", task.id)
            if len(content) > MAX_ROW_BYTES // 4 and len(content.encode()) > MAX_ROW_BYTES:
                self.violation("row content over 64 KiB (cut)", task.id)
                content = content.encode()[:MAX_ROW_BYTES].decode("utf-8", "replace")
            yield row.time, content
