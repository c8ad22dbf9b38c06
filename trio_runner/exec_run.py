"""One ``trio-runner exec`` run: stages, jobs, matrix legs, fail-fast and Ctrl-C.

Stages run one after another; the jobs of a stage run concurrently (at most one per
CPU), the legs of a job up to its ``max-parallel``. Each leg is an ordinary executor
job (``JobRun``) on a single-job workflow shaped like Gitea's task payload, so a local
run behaves like the daemon. A finished job's result and outputs become the ``needs``
of its dependants (workflow-execution 1.5).

A job that calls a reusable workflow runs no environment itself: each of its legs runs
the called workflow's stages the same way (nested calls included), with the inputs and
secrets of the call; the called jobs' results make the leg's result and the workflow's
``on.workflow_call.outputs`` its outputs.

When a job of the run has a ``uses:`` step (an action may use the Actions cache, e.g.
``setup-node`` with ``cache:``), the run serves the cache for its jobs (1.5): each job
gets a fresh ``ACTIONS_RUNTIME_TOKEN``, accepted by the cache while the job runs. The
server is imported only then, so a run of plain scripts does not pay for loading it.

Interruption: the first SIGINT cancels every running leg through its ``JobControl``
(steps whose condition still holds keep running, post steps run) and starts nothing
new; the second cancels the run's scope and kills the legs' processes at once. Each
job environment removes its processes and directories (or containers, networks and
volumes) on the way out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from trio_runner.backends.select import RunnerSide, TaskIdentity, environment_opener
from trio_runner.config import Config
from trio_runner.errors import RunnerError
from trio_runner.exec_command import RUNNER_NAME, ExecPlan
from trio_runner.exec_output import ExecOutput, JobSummary
from trio_runner.executor.actions import always_copied_checkout, job_settings
from trio_runner.executor.job import JobControl, JobRequest, JobRun, Need
from trio_runner.executor.runner_env import CacheAccess, cache_variables, proxy_passwords
from trio_runner.executor.sink import Conclusion
from trio_runner.labels import Platform
from trio_runner.workflow import planner, reusable
from trio_runner.workflow.contexts import jobs_context, strategy_context
from trio_runner.workflow.expressions import ExpressionError, render_template
from trio_runner.workflow.model import Job, Workflow, WorkflowError, step_display_name

if TYPE_CHECKING:
    from trio_runner.cache.server import CacheService
    from trio_runner.cache.settings import CacheSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
LOOPBACK = "127.0.0.1"


def needs_cache(plan: ExecPlan) -> bool:
    """Whether a job of the run may use the Actions cache: the cache is enabled and some
    step runs an action. A checkout that is replaced by a copy of the local directory
    runs none."""
    if not plan.config.cache.enabled:
        return False
    return any(
        step.uses is not None and (plan.no_skip_checkout or not always_copied_checkout(step))
        for planned in plan.all_jobs()
        for step in planned.job.steps
    )


def reaches_containers(plan: ExecPlan, platform: Platform) -> bool:
    """Whether a job of the run may run in a container (``--image``, or its own
    ``container:``), which must then reach the cache from outside this machine's
    loopback."""
    if not platform.is_host:
        return True
    return any(planned.job.container is not None for planned in plan.all_jobs())


def cache_settings(config: Config, *, containers: bool) -> CacheSettings:
    """The run's cache server: ``cache.dir`` and the eviction policy of the config, on a
    free port (a daemon with the same config may hold ``cache.port``). Jobs on this
    machine reach it on the loopback; containers the way the daemon's jobs do, at
    ``cache.host`` or the outbound address, with the server listening everywhere."""
    from trio_runner.cache.settings import settings_from_config

    if containers:
        settings = settings_from_config(config)
    else:
        settings = settings_from_config(config, bind_host=LOOPBACK)
        settings = dataclasses.replace(settings, host=LOOPBACK)
    return dataclasses.replace(settings, port=0)


@dataclass
class _LegGroup:
    """The legs of one job: their results (completion order) and fail-fast state."""

    fail_fast: bool
    results: list[str] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    controls: set[JobControl] = field(default_factory=set)
    tripped: bool = False

    def trip(self) -> None:
        self.tripped = True
        for control in list(self.controls):
            control.cancel()


@dataclass
class _Frame:
    """One workflow run: the top of the run, or one call of a reusable workflow.

    The jobs of a call are labelled ``<caller label> / <name>`` (GitHub's display name
    behind act's ``workflow/`` prefix), see the caller's ``github`` context, the inputs
    and secrets of the call, and each other's results as ``needs``. A calling leg's
    fail-fast group covers every job it runs, however deeply nested.
    """

    secrets: dict[str, str]
    needs: dict[tuple[str, str], Need] = field(default_factory=dict)
    #: The top-level workflow whose call this is; None at the top.
    caller_workflow: Workflow | None = None
    #: The calling leg's label and job-id path (``call`` or ``call/inner``); empty at the top.
    label: str = ""
    path: str = ""
    order: tuple[int, ...] = ()
    inputs: dict[str, Any] | None = None
    groups: tuple[_LegGroup, ...] = ()

    @property
    def tripped(self) -> bool:
        return any(group.tripped for group in self.groups)

    def job_label(self, planned: planner.PlannedJob, name: str) -> str:
        if not self.label:
            return f"{planner.workflow_label(planned.workflow)}/{name}"
        return f"{self.label} / {name}"

    def job_path(self, planned: planner.PlannedJob) -> str:
        return f"{self.path}/{planned.job_id}" if self.path else planned.job_id

    def workflow(self, planned: planner.PlannedJob) -> Workflow:
        """The workflow ``github`` speaks of: the top-level caller's."""
        return self.caller_workflow or planned.workflow


@dataclass(frozen=True)
class _LegRun:
    """One leg about to run: its job, where it sits, and the contexts its job saw."""

    planned: planner.PlannedJob
    leg: planner.Leg
    position: tuple[int, ...]
    group: _LegGroup
    frame: _Frame
    contexts: dict[str, Any]


class ExecRun:
    """Runs an :class:`ExecPlan` and reports it to an :class:`ExecOutput`."""

    def __init__(
        self, plan: ExecPlan, output: ExecOutput, workdir_parent: str, platform: Platform
    ) -> None:
        self.plan = plan
        self.output = output
        # Owner label of this run's containers, networks and volumes.
        self.runner = RunnerSide(
            config=plan.config,
            runner_uuid=f"exec-{secrets.token_hex(8)}",
            platform=platform,
            host_workdir=workdir_parent,
        )
        self.top = _Frame(secrets=dict(plan.secrets))
        self.summaries: list[tuple[tuple[int, ...], JobSummary]] = []
        self.controls: set[JobControl] = set()
        self.interrupts = 0
        self.failed = False
        self.scope = trio.CancelScope()
        self.cache: CacheService | None = None

    def start(self) -> int:
        """Run to the end and return the exit status."""
        trio.run(self.run)
        if self.interrupts:
            result, code = planner.RESULT_CANCELLED, EXIT_INTERRUPTED
        elif self.failed:
            result, code = planner.RESULT_FAILURE, EXIT_FAILED
        else:
            result, code = planner.RESULT_SUCCESS, EXIT_OK
        self.output.summary([summary for _, summary in sorted(self.summaries)], result, code)
        return code

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_interrupts, interrupts, nursery)
                with self.scope:
                    await self._start_cache(nursery)
                    limiter = trio.CapacityLimiter(os.cpu_count() or 1)
                    await self._run_stages(self.plan.stages, self.top, limiter)
                nursery.cancel_scope.cancel()

    async def _start_cache(self, nursery: trio.Nursery) -> None:
        """Serve the cache in ``nursery`` for the rest of the run, when a job may use it.
        A server that cannot start costs the jobs their cache, not their run."""
        if not needs_cache(self.plan):
            return
        from trio_runner.cache.server import run_cache_server

        platform = self.runner.platform or Platform(None)
        try:
            settings = cache_settings(
                self.plan.config, containers=reaches_containers(self.plan, platform)
            )
            self.cache = await nursery.start(run_cache_server, settings)
        except (OSError, RunnerError) as exc:
            self.output.message("exec", f"Warning: the jobs of this run get no cache: {exc}")

    async def _watch_interrupts(
        self, interrupts: AsyncIterator[int], nursery: trio.Nursery
    ) -> None:
        async for _ in interrupts:
            self.interrupts += 1
            if self.interrupts == 1:
                self.output.message("exec", "Cancelling the run (Ctrl-C again to stop at once)")
                for control in list(self.controls):
                    control.cancel()
                continue
            self.output.message("exec", "Stopping now")
            self.scope.cancel()
            # Kill what is left of the steps without the grace periods.
            for control in list(self.controls):
                nursery.start_soon(control.kill)

    async def _run_stages(
        self,
        stages: list[list[planner.PlannedJob]],
        frame: _Frame,
        limiter: trio.CapacityLimiter,
    ) -> None:
        for stage_number, stage in enumerate(stages):
            async with trio.open_nursery() as nursery:
                for job_number, planned in enumerate(stage):
                    order = (*frame.order, stage_number, job_number)
                    nursery.start_soon(self._run_job, planned, order, limiter, frame)

    # -- one job -----------------------------------------------------------------------

    async def _run_job(
        self,
        planned: planner.PlannedJob,
        order: tuple[int, ...],
        limiter: trio.CapacityLimiter,
        frame: _Frame,
    ) -> None:
        # A calling job runs nothing itself; its called jobs take the CPU slots.
        slot = contextlib.nullcontext() if planned.job.uses is not None else limiter
        label = frame.job_label(planned, planned.job_id)
        async with slot:
            if self.interrupts or frame.tripped:
                self._unrun(planned, label, order, frame, planner.RESULT_CANCELLED)
                return
            needs = {
                need: {"result": entry.result, "outputs": dict(entry.outputs)}
                for need, entry in self._needs_of(planned, frame).items()
            }
            contexts = self.plan.contexts(planned, needs, frame.inputs, frame.workflow(planned))
            try:
                if not planner.job_condition(planned.job, contexts):
                    self._skip(planned, label, order, frame, contexts)
                    return
                leg_plan = planner.plan_legs(planned, contexts, self._filters(frame))
            except (WorkflowError, ExpressionError) as exc:
                self.output.message(label, f"Error: {exc}", error=True)
                self._unrun(planned, label, order, frame, planner.RESULT_FAILURE)
                self.failed = True
                return
            if not leg_plan.legs:
                self.output.message(label, "Skipped: no matrix combination matches --matrix")
                self._unrun(planned, label, order, frame, planner.RESULT_SKIPPED)
                return
            group = _LegGroup(fail_fast=leg_plan.fail_fast)
            leg_limiter = trio.CapacityLimiter(leg_plan.max_parallel)
            run_leg = self._run_call if planned.job.uses is not None else self._run_leg
            async with trio.open_nursery() as nursery:
                for leg in leg_plan.legs:
                    leg_run = _LegRun(planned, leg, (*order, leg.index), group, frame, contexts)
                    # Slots are taken here, so legs start in matrix order under max-parallel.
                    taken = (leg_limiter, object())
                    await leg_limiter.acquire_on_behalf_of(taken[1])
                    nursery.start_soon(self._in_slot, run_leg, leg_run, taken, limiter)
            result, outputs = planner.aggregate_results(group.results, group.outputs)
            frame.needs[planned.key] = Need(result=result, outputs=outputs)

    def _filters(self, frame: _Frame) -> dict[str, set[str]]:
        """``--matrix`` picks legs of the selected jobs, not of the jobs they call."""
        return self.plan.matrix_filters if frame.caller_workflow is None else {}

    def _unrun(
        self,
        planned: planner.PlannedJob,
        label: str,
        order: tuple[int, ...],
        frame: _Frame,
        result: str,
    ) -> None:
        """A job that ran no leg: its result for dependants and the summary."""
        frame.needs[planned.key] = Need(result=result)
        self._record(planned, label, (*order, 0), frame, result, 0.0)

    def _skip(
        self,
        planned: planner.PlannedJob,
        label: str,
        order: tuple[int, ...],
        frame: _Frame,
        contexts: dict[str, Any],
    ) -> None:
        """A job whose ``if`` is false: reported like the daemon reports it (2.2), every
        step skipped, then recorded as skipped for dependants and the summary."""
        now = datetime.now(UTC)
        self.output.job_started(label, now)
        self.output.message(label, "Skipping job: the job condition is false")
        sink = self.output.job_sink(label, self._step_names(planned.job, {}, contexts))
        for index in range(len(planned.job.steps)):
            sink.step_finished(index, Conclusion.SKIPPED, now)
        self.output.job_finished(label, planner.RESULT_SKIPPED, 0.0)
        self._unrun(planned, label, order, frame, planner.RESULT_SKIPPED)

    def _record(
        self,
        planned: planner.PlannedJob,
        label: str,
        order: tuple[int, ...],
        frame: _Frame,
        result: str,
        duration: float,
    ) -> None:
        self.summaries.append(
            (
                order,
                JobSummary(
                    label=label,
                    workflow=planner.workflow_label(frame.workflow(planned)),
                    job_id=frame.job_path(planned),
                    result=result,
                    duration=duration,
                ),
            )
        )

    def _finish_leg(self, run: _LegRun, result: str, outputs: dict[str, str]) -> None:
        tolerated = result == planner.RESULT_FAILURE and run.leg.continue_on_error
        # A failed leg with continue-on-error is a success for its dependants, as on GitHub.
        run.group.results.append(planner.RESULT_SUCCESS if tolerated else result)
        run.group.outputs.append(outputs)
        if result == planner.RESULT_FAILURE and not tolerated:
            self.failed = True
            if run.group.fail_fast:
                run.group.trip()

    # -- one leg -----------------------------------------------------------------------

    async def _in_slot(
        self,
        run_leg: Callable[[_LegRun, trio.CapacityLimiter], Awaitable[None]],
        run: _LegRun,
        slot: tuple[trio.CapacityLimiter, object],
        cpus: trio.CapacityLimiter,
    ) -> None:
        """Run one leg in the max-parallel slot taken for it, and give the slot back."""
        slots, borrower = slot
        try:
            await run_leg(run, cpus)
        finally:
            slots.release_on_behalf_of(borrower)

    async def _run_leg(self, run: _LegRun, _cpus: trio.CapacityLimiter) -> None:
        planned, leg, frame, group = run.planned, run.leg, run.frame, run.group
        label = frame.job_label(planned, leg.name)
        if self.interrupts or group.tripped or frame.tripped:
            self._record(planned, label, run.position, frame, planner.RESULT_CANCELLED, 0.0)
            self._finish_leg(run, planner.RESULT_CANCELLED, {})
            return
        control = JobControl()
        groups = (group, *frame.groups)
        # Each job's own credential; useless once the job has ended.
        token = secrets.token_urlsafe(32)
        request = self._request(run, token)
        job_run = JobRun(
            request,
            self.output.job_sink(label, self._step_names(leg.job, leg.matrix, run.contexts)),
            control,
        )
        started = trio.current_time()
        result = planner.RESULT_CANCELLED
        outputs: dict[str, str] = {}
        self.controls.add(control)
        for member in groups:
            member.controls.add(control)
        self.output.job_started(label, datetime.now(UTC))
        try:
            task = TaskIdentity(0, self.plan.event)
            async with self._job_token(token):
                outcome = await job_run.run(environment_opener(job_run, self.runner, task))
            result, outputs = outcome.result.value, outcome.outputs
        except Exception as exc:  # a runner bug fails this job, not the run
            text = "".join(traceback.format_exception_only(exc)).strip()
            self.output.message(label, job_run.masker.mask(f"Runner error: {text}"), error=True)
            result = planner.RESULT_FAILURE
        finally:
            self.controls.discard(control)
            for member in groups:
                member.controls.discard(control)
            duration = trio.current_time() - started
            self.output.job_finished(label, result, duration)
            self._record(planned, label, run.position, frame, result, duration)
        self._finish_leg(run, result, outputs)

    async def _run_call(self, run: _LegRun, cpus: trio.CapacityLimiter) -> None:
        """One leg of a calling job: the called workflow's stages with the leg's inputs and
        secrets; its result is the called jobs' (1.5 step 4), its outputs the workflow's
        ``on.workflow_call.outputs``."""
        planned, leg, frame = run.planned, run.leg, run.frame
        label = frame.job_label(planned, leg.name)
        called = self.plan.calls[planned.key]
        if self.interrupts or run.group.tripped or frame.tripped:
            self._record(planned, label, run.position, frame, planner.RESULT_CANCELLED, 0.0)
            self._finish_leg(run, planner.RESULT_CANCELLED, {})
            return
        contexts = {
            **run.contexts,
            "matrix": leg.matrix,
            "strategy": strategy_context(leg.job.strategy_context),
        }
        try:
            inputs = reusable.call_inputs(planned, called.workflow, contexts)
            passed = reusable.call_secrets(
                planned.job, {**contexts, "secrets": frame.secrets}, frame.secrets
            )
        except (WorkflowError, ExpressionError) as exc:
            self.output.message(label, f"Error: {exc}", error=True)
            self._record(planned, label, run.position, frame, planner.RESULT_FAILURE, 0.0)
            self._finish_leg(run, planner.RESULT_FAILURE, {})
            return
        inner = _Frame(
            secrets=passed,
            caller_workflow=frame.workflow(planned),
            label=label,
            path=frame.job_path(planned),
            order=run.position,
            inputs=inputs,
            groups=(run.group, *frame.groups),
        )
        await self._run_stages(called.stages, inner, cpus)
        results = {key[1]: (need.result, need.outputs) for key, need in inner.needs.items()}
        result, _ = planner.aggregate_results([r for r, _ in results.values()], [])
        outputs_contexts = {
            "github": contexts["github"],
            "vars": self.plan.vars,
            "inputs": inputs,
            "jobs": jobs_context(results),
        }
        try:
            outputs = reusable.call_outputs(called.workflow, outputs_contexts)
        except ExpressionError as exc:
            self.output.message(label, f"Error: {exc}", error=True)
            result, outputs = planner.RESULT_FAILURE, {}
        self._finish_leg(run, result, outputs)

    def _job_token(self, token: str) -> contextlib.AbstractAsyncContextManager[str]:
        """The cache accepts ``token`` for the job's lifetime, when the run has a cache."""
        if self.cache is None:
            return contextlib.nullcontext("")
        return self.cache.job_token(token, str(self.plan.github.get("repository") or ""))

    def _request(self, run: _LegRun, token: str) -> JobRequest:
        plan = self.plan
        runner_env = dict(plan.job_env)
        masks = proxy_passwords(os.environ)
        if self.cache is not None:
            # No Gitea behind exec, so no results service to front: the cache speaks v1.
            runner_env.update(cache_variables(CacheAccess(self.cache.url), token))
            masks.append(token)
        workflow = run.leg.workflow
        if run.frame.caller_workflow is not None:
            # github.workflow of a called job names the caller (GitHub's rule).
            workflow = msgspec.structs.replace(workflow, name=run.frame.caller_workflow.name)
        return JobRequest(
            workflow=workflow,
            job_id=run.leg.job_id,
            task_context={
                **plan.github_for(run.frame.workflow(run.planned)),
                "workflow": run.frame.workflow(run.planned).file,
            },
            secrets=dict(run.frame.secrets),
            vars=dict(plan.vars),
            needs=self._needs_of(run.planned, run.frame),
            inputs=dict(run.contexts["inputs"]),
            runner_env=runner_env,
            masks=masks,
            runner_name=RUNNER_NAME,
            instance_url=plan.instance_url,
            timeout=plan.config.runner.timeout,
            **job_settings(plan.config, self.runner.host_workdir),
            checkout_source="" if plan.no_skip_checkout else str(plan.directory.resolve()),
        )

    def _needs_of(self, planned: planner.PlannedJob, frame: _Frame) -> dict[str, Need]:
        """The direct needs of a job; all of them finished in earlier stages."""
        return {need: frame.needs[(planned.workflow.file, need)] for need in planned.job.needs}

    def _step_names(self, job: Job, matrix: dict[str, Any], contexts: dict[str, Any]) -> list[str]:
        """Step names for the terminal; templates that need step state stay as written."""
        leg_contexts = {**contexts, "matrix": matrix}
        names = []
        for step in job.steps:
            name = step_display_name(step)
            if step.name and "${{" in step.name:
                with contextlib.suppress(ExpressionError):
                    name = render_template(step.name, leg_contexts)
            names.append(name)
        return names
