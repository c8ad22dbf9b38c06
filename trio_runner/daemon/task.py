"""One task's nursery: cache credential, reporter and job run, with one cancel cause.

Everything the task touches is acquired inside ``run_task`` with ``async with`` and
released on the way out, whatever ends the task: success, failure, a cancel from the
server, the job timeout, a shutdown or an exception in the runner itself (which becomes
a failed task with the error in its log, never a crashed daemon).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
import yaml

from trio_runner.backends.select import RunnerSide, TaskIdentity, environment_opener
from trio_runner.config import Config
from trio_runner.daemon.reporter import CancelCause, Reporter, ReporterSettings
from trio_runner.executor.actions import job_settings
from trio_runner.executor.job import (
    CLEANUP_BUDGET,
    JobControl,
    JobRequest,
    JobRun,
    Need,
    OpenEnvironment,
)
from trio_runner.executor.runner_env import CacheAccess, proxy_passwords, runner_variables
from trio_runner.executor.sink import Conclusion
from trio_runner.gitea.messages import Result, Task
from trio_runner.labels import Label
from trio_runner.workflow.contexts import inputs_context
from trio_runner.workflow.model import Workflow, WorkflowError, load_task_payload

log = logging.getLogger(__name__)


#: Time after runner.timeout for the always() steps, post steps and teardown the
#: executor still runs (each has its own budget) before the task is stopped outright.
HARD_LIMIT_GRACE = 2 * CLEANUP_BUDGET + 60.0


class JobToken(Protocol):
    """Registers a job's runtime token with the cache while the context is open.

    ``results`` is the Gitea address the cache forwards the job's artifact calls to
    (``insecure_tls``: without TLS verification). The context yields the job's
    ``ACTIONS_RESULTS_URL`` when the cache fronts the results service, else "".
    """

    def __call__(
        self,
        token: str,
        repository: str,
        *,
        results: str = "",
        insecure_tls: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> AbstractAsyncContextManager[str]: ...


@dataclass
class TaskEnvironment:
    """What every task of a daemon shares."""

    config: Config
    client: Any
    address: str
    runner_name: str
    labels: list[Label]
    #: The registered runner's uuid: the owner label of its containers, networks, volumes.
    runner_uuid: str = ""
    capabilities: str = ""
    cache_url: str = ""
    cache_v2: bool = False
    #: Registers a job's runtime token with the cache for the duration of the task.
    job_token: JobToken | None = None
    on_finished: Callable[[Conclusion, float], None] = lambda _result, _seconds: None
    #: Gitea no longer knows this runner: the daemon stops polling.
    on_unregistered: Callable[[], None] = lambda: None


@dataclass
class RunningTask:
    """A task as the daemon sees it while it runs, for shutdown and duplicate checks."""

    task_id: int
    control: JobControl = field(default_factory=JobControl)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    cause: CancelCause | None = None
    reporter: Reporter | None = None

    def cancel(self, cause: CancelCause, *, at_once: bool = False) -> None:
        """Cancel the job: gracefully (post steps still run), or ``at_once``.

        Either way the task still sends its final report. The first cause is the one
        recorded (ARCHITECTURE rule 4).
        """
        if self.cause is None:
            self.cause = cause
            if self.reporter is not None:
                self.reporter.record_cancel(cause)
        self.control.cancel()
        if at_once:
            self.scope.cancel()


def job_environment_variables(
    env: TaskEnvironment,
    context: dict[str, Any],
    secrets: dict[str, str],
    *,
    results_url: str = "",
) -> tuple[dict[str, str], list[str]]:
    """Layer 3 of the job env (runner-provided) and the tokens to mask (spec 4.4).

    ``results_url`` is what the job's cache registration yielded: the cache server's
    address when it fronts the results service (cache spec 12.3, 12.6), then also the
    one v2 is offered at; empty keeps the Gitea address.
    """
    cfg = env.config.runner
    token = secrets.get("GITEA_TOKEN") or secrets.get("GITHUB_TOKEN") or context.get("token", "")
    runtime_token = str(context.get("gitea_runtime_token") or token or "")
    cache = CacheAccess(env.cache_url, results_url, env.cache_v2) if env.cache_url else None
    variables = runner_variables(
        cfg, cfg.envs, gitea=env.address.rstrip("/"), runtime_token=runtime_token, cache=cache
    )
    if context.get("run_id"):
        variables["GITEA_RUN_ID"] = str(context["run_id"])
    if env.capabilities:
        variables["GITEA_ACTIONS_CAPABILITIES"] = env.capabilities
    masks = [runtime_token, str(token or ""), *proxy_passwords(os.environ)]
    oidc_url = context.get("actions_id_token_request_url")
    if oidc_url:
        oidc_token = str(context.get("actions_id_token_request_token", ""))
        variables["ACTIONS_ID_TOKEN_REQUEST_URL"] = str(oidc_url)
        variables["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = oidc_token
        masks.append(oidc_token)
    return variables, [m for m in masks if m]


def reporter_settings(config: Config) -> ReporterSettings:
    cfg = config.runner
    return ReporterSettings(
        log_report_interval=cfg.log_report_interval,
        log_report_max_latency=cfg.log_report_max_latency,
        log_report_batch_size=cfg.log_report_batch_size,
        state_report_interval=cfg.state_report_interval,
        report_close_timeout=cfg.report_close_timeout,
    )


async def run_task(task: Task, env: TaskEnvironment, running: RunningTask) -> Conclusion:
    """Run one task to its final report. Never raises for a failure of the job."""
    started = trio.current_time()
    workflow: Workflow | None = None
    try:
        workflow, job_id = load_task_payload(task.workflow_payload or b"")
        step_count = len(workflow.jobs[job_id].steps)
        setup_error = ""
    except WorkflowError as exc:
        job_id, setup_error = "", str(exc)
        step_count = _raw_step_count(task.workflow_payload or b"")

    def server_ended(result: Result) -> None:
        running.cancel(CancelCause.SERVER)

    reporter = Reporter(
        env.client,
        task.id,
        step_count,
        reporter_settings(env.config),
        server_ended,
        on_unregistered=env.on_unregistered,
    )
    running.reporter = reporter
    if running.cause is not None:
        reporter.record_cancel(running.cause)
    outcome = Conclusion.FAILURE
    async with reporter.running():
        if workflow is None:
            reporter.set_error(setup_error)
            return Conclusion.FAILURE
        context = dict(task.context or {})
        variables, masks = job_environment_variables(env, context, task.secrets)
        request = JobRequest(
            workflow=workflow,
            job_id=job_id,
            task_context=context,
            secrets=dict(task.secrets),
            vars=dict(task.vars),
            needs={
                k: Need(
                    result=n.result_enum.word if n.result_enum.word != "unspecified" else "success",
                    outputs=dict(n.outputs),
                )
                for k, n in task.needs.items()
            },
            inputs=inputs_context(
                str(context.get("event_name", "")),
                context.get("event"),
                workflow.dispatch_inputs,
                workflow.call_inputs,
            ),
            runner_env=variables,
            masks=masks,
            runner_name=env.runner_name,
            instance_url=env.address,
            timeout=env.config.runner.timeout,
            labels_text=", ".join(label.name for label in env.labels),
            **job_settings(env.config),
        )
        run = JobRun(request, reporter, running.control)
        try:
            token = variables["ACTIONS_RUNTIME_TOKEN"]
            async with _job_token(
                env, context, token, request.setup_warnings.append
            ) as results_url:
                if results_url:
                    # The cache fronts Gitea's results service for this job (cache spec 12.6).
                    fronted, _masks = job_environment_variables(
                        env, context, task.secrets, results_url=results_url
                    )
                    request.runner_env.update(fronted)
                # The executor enforces runner.timeout itself (always() steps and posts
                # still run); this bound only catches a job that overruns even that.
                hard_limit = env.config.runner.timeout + HARD_LIMIT_GRACE
                with running.scope, trio.move_on_after(hard_limit) as timeout:
                    job = await run.run(_open_environment(env, task, run))
                    outcome = job.result
                    reporter.set_outputs(job.outputs)
                if timeout.cancelled_caught:
                    running.cancel(CancelCause.TIMEOUT)
                    reporter.set_error(
                        f"The job did not stop within {HARD_LIMIT_GRACE:g}s after exceeding "
                        f"runner.timeout ({env.config.runner.timeout:g}s)"
                    )
                    outcome = Conclusion.FAILURE
                elif running.scope.cancelled_caught:
                    outcome = Conclusion.CANCELLED
        except Exception as exc:  # a runner bug must fail the task, not the daemon
            log.error("task %d failed in the runner: %s", task.id, type(exc).__name__)
            reporter.set_error(_describe_error(exc, run))
            outcome = Conclusion.FAILURE
        reporter.set_result(RESULTS[outcome])
    env.on_finished(outcome, trio.current_time() - started)
    return outcome


RESULTS = {
    Conclusion.SUCCESS: Result.SUCCESS,
    Conclusion.FAILURE: Result.FAILURE,
    Conclusion.CANCELLED: Result.CANCELLED,
    Conclusion.SKIPPED: Result.SKIPPED,
}


def _raw_step_count(payload: bytes) -> int:
    """How many steps Gitea made for a payload the runner cannot load, so that every one
    of them still gets a final result."""
    try:
        document = yaml.safe_load(payload)
        (job,) = document["jobs"].values()
        return len(job["steps"])
    except Exception:  # any shape we cannot read has no steps to report
        return 0


def _describe_error(exc: BaseException, run: JobRun) -> str:
    """The error text for the job log, with every secret masked."""
    text = "".join(traceback.format_exception_only(exc)).strip()
    return run.masker.mask(f"Runner error: {text}")


@asynccontextmanager
async def _job_token(
    env: TaskEnvironment, context: dict[str, Any], token: str, warn: Callable[[str], None]
) -> AsyncIterator[str]:
    """The job's cache credential; yields its ``ACTIONS_RESULTS_URL`` when the cache
    forwards its artifact calls to this runner's Gitea, else ""."""
    if env.job_token is None or not token:
        yield ""
        return
    async with env.job_token(
        token,
        str(context.get("repository", "")),
        results=env.address.rstrip("/"),
        insecure_tls=env.config.runner.insecure,
        warn=warn,
    ) as results_url:
        yield results_url


def _open_environment(env: TaskEnvironment, task: Task, run: JobRun) -> OpenEnvironment:
    """Host or container, as the job's labels and ``container`` say (spec 2.3)."""
    runner = RunnerSide(
        config=env.config,
        labels=env.labels,
        runner_uuid=env.runner_uuid,
        host_workdir=env.config.host.workdir_parent,
    )
    return environment_opener(run, runner, TaskIdentity(task.id, str(task.id)))
