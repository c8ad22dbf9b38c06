"""One job from start to result: set-up, main steps, post steps, outputs, teardown.

The executor is the same for the daemon and ``exec``: its caller supplies the job's
inputs (``JobRequest``), a way to open the job environment and a sink for its rows.
Cancellation of the job (server cancel, shutdown) goes through ``JobControl`` so that
steps whose condition still holds (``always()``, ``cancelled()``) keep running, as on
GitHub; a trio cancellation of the caller's scope stops everything at once.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio

from trio_runner import __version__
from trio_runner.backends.base import Environment
from trio_runner.executor.commands import error_row, warning_row
from trio_runner.executor.joblog import JobLog
from trio_runner.executor.sink import Conclusion, JobSink
from trio_runner.executor.steps import StepContext, StepRunner, evaluate_env
from trio_runner.executor.summaries import SUMMARY_BUDGET, SummaryTarget, publish_summaries
from trio_runner.masking import Masker
from trio_runner.workflow.contexts import (
    JobPaths,
    RunnerInfo,
    ServerUrls,
    github_context,
    strategy_context,
)
from trio_runner.workflow.expressions import (
    ExpressionError,
    evaluate_condition,
    interpolate,
)
from trio_runner.workflow.model import Job, Workflow, step_display_name, step_keys

#: GitHub's default job timeout when ``timeout-minutes`` is absent.
DEFAULT_JOB_TIMEOUT = 360 * 60.0
#: Budget for always()/failure() steps after a job timeout, and for post steps.
CLEANUP_BUDGET = 5 * 60.0
#: Gitea's limits on job outputs.
MAX_OUTPUT_KEY = 255
MAX_OUTPUT_VALUE = 1024 * 1024


@dataclass
class Need:
    """The outcome of a job this job needs."""

    result: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRequest:
    """Everything a job run needs besides its environment and its sink."""

    workflow: Workflow
    job_id: str
    task_context: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    needs: dict[str, Need] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    #: Layer 3 of the environment: runner.envs, env_file and the runner's job variables.
    runner_env: dict[str, str] = field(default_factory=dict)
    #: Values to mask besides the secrets (tokens the runner adds).
    masks: list[str] = field(default_factory=list)
    runner_name: str = "trio-runner"
    instance_url: str = ""
    #: runner.timeout: caps the job's own timeout.
    timeout: float = 3 * 3600.0
    labels_text: str = ""
    #: Problems found while preparing the task (e.g. the cache refused the job token),
    #: written as warnings in the set-up section.
    setup_warnings: list[str] = field(default_factory=list)
    #: Where remote actions are cloned (host.workdir_parent); empty: ~/.cache/act.
    action_cache_dir: str = ""
    #: runner.github_mirror: replaces https://github.com as the default action host.
    github_mirror: str = ""
    #: runner.action_shallow_clone.
    action_shallow_clone: bool = True
    #: cache.offline_mode: existing action clones are used without fetching.
    actions_offline: bool = False
    #: runner.patch_actions: toolkit patches of remote node actions.
    patch_actions: bool = True
    #: runner.insecure: no TLS verification when cloning actions from the Gitea host.
    insecure: bool = False
    #: runner.hooks.job_started / job_completed (or the ACTIONS_RUNNER_HOOK_JOB_* env).
    hook_job_started: str = ""
    hook_job_completed: str = ""
    #: exec: the local checkout copied instead of running actions/checkout (1.5).
    checkout_source: str = ""

    @property
    def job(self) -> Job:
        return self.workflow.jobs[self.job_id]


@dataclass
class JobOutcome:
    result: Conclusion
    outputs: dict[str, str]


OpenEnvironment = Callable[[], AbstractAsyncContextManager[Environment]]


class JobControl:
    """Lets the owner of a job cancel it gracefully, or kill its processes at once."""

    def __init__(self) -> None:
        self.cancelled = False
        self._listeners: list[Callable[[], None]] = []
        self.environment: Environment | None = None

    async def kill(self) -> None:
        """Kill every process of the job now (a second interrupt); cleanup still follows."""
        self.cancel()
        if self.environment is not None:
            await self.environment.kill()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            for listener in list(self._listeners):
                listener()

    @contextlib.contextmanager
    def on_cancel(self, listener: Callable[[], None]) -> Iterator[None]:
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)


def _now() -> datetime:
    return datetime.now(UTC)


class JobRun:
    """The state of one running job: contexts, step results, status."""

    def __init__(
        self,
        request: JobRequest,
        sink: JobSink,
        control: JobControl,
        masker: Masker | None = None,
    ) -> None:
        self.request = request
        self.sink = sink
        self.control = control
        self.masker = masker or Masker()
        for value in [*request.secrets.values(), *request.masks]:
            self.masker.add(value)
        self.log = JobLog(sink, self.masker)
        self.job = request.job
        self.failed = False
        self.steps_ctx: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, str] = {}
        self.debug = _debug_enabled(request)
        self._pending_warnings: list[str] = []

    # -- status functions (workflow-execution 2.12, 5.9) ------------------------------

    @property
    def status(self) -> Conclusion:
        if self.control.cancelled:
            return Conclusion.CANCELLED
        return Conclusion.FAILURE if self.failed else Conclusion.SUCCESS

    def success(self) -> bool:
        return self.status is Conclusion.SUCCESS

    def failure(self) -> bool:
        return self.status is Conclusion.FAILURE

    def cancelled(self) -> bool:
        return self.control.cancelled

    def always(self) -> bool:
        return True

    # -- the run ------------------------------------------------------------------------

    async def run(self, open_environment: OpenEnvironment) -> JobOutcome:
        steps = self.job.steps
        await self.log.write(f"{self.request.runner_name}(version:{__version__})")
        try:
            condition = self._job_condition()
        except ExpressionError as exc:
            await self.log.write(error_row(str(exc)))
            self._finish_unstarted(Conclusion.CANCELLED)
            return JobOutcome(Conclusion.FAILURE, {})
        if not condition:
            await self.log.write("Skipping job: the job condition is false")
            self._finish_unstarted(Conclusion.SKIPPED)
            return JobOutcome(Conclusion.SKIPPED, {})
        try:
            async with open_environment() as env:
                self.control.environment = env
                try:
                    return await self._run_in(env, steps)
                finally:
                    self.control.environment = None
        except SetupFailed:
            self._finish_unstarted(Conclusion.CANCELLED)
            await self.log.write("Job failed")
            return JobOutcome(Conclusion.FAILURE, {})

    def _job_condition(self) -> bool:
        contexts = {
            "github": self.request.task_context,
            "needs": self._needs_context(),
            "vars": self.request.vars,
            "inputs": self.request.inputs,
        }
        return evaluate_condition(self.job.if_, contexts, status=_NeedsStatus(self))

    def _needs_context(self) -> dict[str, Any]:
        return {
            job_id: {"result": need.result, "outputs": dict(need.outputs)}
            for job_id, need in self.request.needs.items()
        }

    def _finish_unstarted(self, result: Conclusion) -> None:
        now = _now()
        for index in range(len(self.job.steps)):
            self.sink.step_finished(index, result, now)

    async def _run_in(self, env: Environment, steps: list[Any]) -> JobOutcome:
        paths = JobPaths(env.workspace, env.runner_dir, env.temp_dir, env.tool_cache)
        request = self.request
        github = github_context(
            request.task_context,
            secrets=request.secrets,
            workflow_name=request.workflow.name or "",
            job_id=request.job_id,
            paths=paths,
            urls=ServerUrls(request.instance_url),
        )
        runner = RunnerInfo(
            name=request.runner_name,
            temp=paths.temp,
            tool_cache=paths.tool_cache,
            debug=self.debug,
        )
        base: dict[str, Any] = {
            "github": github,
            "gitea": github,
            "needs": self._needs_context(),
            "vars": request.vars,
            "secrets": request.secrets,
            "inputs": request.inputs,
            "strategy": strategy_context(self.job.strategy_context),
            "matrix": self.job.matrix_values,
            "runner": runner.context(),
            "job": {"status": "success", **env.job_context()},
            "steps": self.steps_ctx,
        }
        try:
            job_env = self._job_env(base)
        except ExpressionError as exc:
            await self.log.write(error_row(str(exc)))
            raise SetupFailed from exc
        await self._write_setup_rows(github)
        await env.write_file(paths.event_path, json.dumps(github["event"]).encode())
        ctx = StepContext(
            run=self,
            env=env,
            paths=paths,
            github=github,
            runner=runner,
            base_contexts=base,
            job_env=job_env,
            log=self.log,
            masker=self.masker,
            debug=self.debug,
        )
        runner_steps = StepRunner(ctx)
        keys = step_keys(steps)
        timeout = self._job_timeout(base)
        deadline = trio.current_time() + timeout
        await self._set_up_steps(runner_steps, steps, keys, deadline)
        await self.log.write(f"Complete job name: {self.job.display_name()}")
        await self._main_steps(runner_steps, steps, keys, deadline, timeout)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_BUDGET):
                if await runner_steps.run_posts():
                    self.failed = True
                hook = self.request.hook_job_completed
                if hook and await runner_steps.run_hook(hook, "completed", _budget()):
                    self.failed = True
                await self._evaluate_outputs(runner_steps, base)
            with trio.move_on_after(SUMMARY_BUDGET):
                await publish_summaries(
                    env, self.log, self.masker, runner_steps.summary_path, len(steps),
                    SummaryTarget.from_job(request.runner_env, github),
                )  # fmt: skip
        await self._finish_log()
        result = self.status
        return JobOutcome(result, dict(self.outputs))

    async def _set_up_steps(
        self, runner: StepRunner, steps: list[Any], keys: list[str], deadline: float
    ) -> None:
        """Phases 5-7: job-started hook, action downloads, pre phases (2.1)."""
        hook = self.request.hook_job_started
        if hook and await runner.run_hook(hook, "started", deadline):
            self.failed = True
            return
        contexts = runner.contexts(runner.env_context())
        with trio.move_on_at(deadline):
            if await runner.actions.prepare_all(steps, contexts):
                self.failed = True
                return
            if await runner.actions.run_pres(steps, keys, deadline):
                self.failed = True

    def _job_env(self, base: Mapping[str, Any]) -> dict[str, str]:
        """Layers 2 and 3 of 4.5, evaluated once at job start."""
        layers = (self.request.workflow.env, self.job.env)
        raw: dict[str, Any] = {}
        for layer in layers:
            if isinstance(layer, dict):
                raw.update(layer)
        raw.update(self.request.runner_env)
        contexts = {**base, "env": raw}
        env: dict[str, str] = {}
        for layer in layers:
            env.update(evaluate_env(layer, contexts))
        env.update(self.request.runner_env)
        return env

    async def _write_setup_rows(self, github: Mapping[str, Any]) -> None:
        lines = [
            "::group::Runner Information",
            f"Runner name: {self.request.runner_name}",
        ]
        if self.request.labels_text:
            lines.append(f"Runner labels: {self.request.labels_text}")
        lines += [
            f"Job: {self.request.job_id}",
            f"Repository: {github.get('repository', '')}",
            f"Event: {github.get('event_name', '')}",
            "::endgroup::",
        ]
        lines += [warning_row(text) for text in self.request.setup_warnings]
        await self.log.write("\n".join(lines))

    async def _main_steps(
        self,
        runner: StepRunner,
        steps: list[Any],
        keys: list[str],
        deadline: float,
        limit: float,
    ) -> None:
        """Main phases in order under the job timeout (workflow-execution 2.8)."""
        timed_out = False
        for index, step in enumerate(steps):
            if await runner.run_main(index, step, keys[index], deadline) and not timed_out:
                timed_out = True
                self.failed = True
                await self.log.write(
                    error_row(
                        f"The job running on runner {self.request.runner_name} has exceeded "
                        f"the maximum execution time of {_minutes(limit)} minutes."
                    )
                )
                # always()/failure() steps still get a fresh budget.
                deadline = trio.current_time() + CLEANUP_BUDGET

    def _job_timeout(self, base: Mapping[str, Any]) -> float:
        limit = self.request.timeout
        raw = self.job.timeout_minutes
        if raw is None:
            return min(DEFAULT_JOB_TIMEOUT, limit)
        value = interpolate(raw, base)
        try:
            minutes = float(value)
        except (TypeError, ValueError):
            return min(DEFAULT_JOB_TIMEOUT, limit)
        if not math.isfinite(minutes) or minutes <= 0:
            return min(DEFAULT_JOB_TIMEOUT, limit)
        return min(minutes * 60.0, limit)

    async def _evaluate_outputs(self, runner: StepRunner, base: Mapping[str, Any]) -> None:
        contexts = {**base, "job": {**base["job"], "status": self.status.value}}
        for name, template in self.job.outputs.items():
            try:
                value = await runner.text(template, contexts)
            except ExpressionError as exc:
                await self.log.write(error_row(f"outputs.{name}: {exc}"))
                self.failed = True
                continue
            if not value:
                continue
            if self.masker.mask(value) != value:
                self._pending_warnings.append(f"Skip output '{name}' since it may contain secret.")
                continue
            if len(name.encode()) > MAX_OUTPUT_KEY or len(value.encode()) > MAX_OUTPUT_VALUE:
                self._pending_warnings.append(
                    f"Ignore output '{name}' since it exceeds the size limits of Gitea."
                )
                continue
            self.outputs[name] = value

    async def _finish_log(self) -> None:
        for warning in self._pending_warnings:
            await self.log.write(warning_row(warning))
        words = {
            Conclusion.SUCCESS: "Job succeeded",
            Conclusion.FAILURE: "Job failed",
            Conclusion.CANCELLED: "Job cancelled",
        }
        await self.log.write(words.get(self.status, "Job failed"))


class SetupFailed(Exception):
    """The job environment or the job's own templates could not be set up."""


class _NeedsStatus:
    """Status functions at job level: they look at the results of ``needs``."""

    def __init__(self, run: JobRun) -> None:
        self._run = run

    def success(self) -> bool:
        return all(n.result == "success" for n in self._run.request.needs.values())

    def failure(self) -> bool:
        return any(n.result == "failure" for n in self._run.request.needs.values())

    def cancelled(self) -> bool:
        return self._run.control.cancelled

    def always(self) -> bool:
        return True


def _debug_enabled(request: JobRequest) -> bool:
    for source in (request.secrets, request.vars, request.runner_env):
        if str(source.get("ACTIONS_STEP_DEBUG", "")).lower() == "true":
            return True
    return False


def _budget() -> float:
    """A fresh cleanup deadline (posts and the completed hook run after a timeout too)."""
    return trio.current_time() + CLEANUP_BUDGET


def _minutes(seconds: float) -> str:
    minutes = seconds / 60.0
    return str(int(minutes)) if minutes.is_integer() else f"{minutes:g}"


__all__ = [
    "JobControl",
    "JobOutcome",
    "JobRequest",
    "JobRun",
    "Need",
    "OpenEnvironment",
    "SetupFailed",
    "step_display_name",
]
