"""Exec-mode planning: which workflows and jobs run, in which order, with which inputs.

Owns everything ``trio-runner exec`` decides before and between jobs (workflow-execution
1.5 and 5.12): finding and loading workflow files, picking the event, selecting jobs,
ordering them in dependency stages, expanding matrices into the single-job workflows
Gitea would send, the ``github`` context of a local checkout, ``inputs`` and the
``needs`` entry a finished job leaves for its dependants. Pure and synchronous apart
from reading files and asking ``git``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from trio_runner.errors import ConfigError
from trio_runner.workflow.expressions import (
    ExpressionError,
    FixedStatus,
    check_templates,
    evaluate_condition,
    interpolate,
    render_template,
    to_string,
)
from trio_runner.workflow.model import (
    Job,
    Mark,
    RunsOn,
    Strategy,
    Workflow,
    WorkflowError,
    WorkflowInput,
    load_workflow,
)

#: GitHub's limit on the number of combinations of one matrix.
MAX_COMBINATIONS = 256
#: act_runner's ``max-parallel`` when the workflow sets none.
DEFAULT_MAX_PARALLEL = 4
#: The event when nothing else decides.
DEFAULT_EVENT = "push"
WORKFLOW_SUFFIXES = (".yml", ".yaml")

RESULT_SUCCESS = "success"
RESULT_FAILURE = "failure"
RESULT_CANCELLED = "cancelled"
RESULT_SKIPPED = "skipped"


class PlanError(ConfigError):
    """The workflows cannot be planned (dependency graph, selection, inputs)."""


# --- finding and loading workflows ------------------------------------------------------


def default_workflows_path(directory: Path) -> Path:
    """``.gitea/workflows`` of the checkout, else ``.github/workflows`` when only it exists."""
    gitea = directory / ".gitea" / "workflows"
    github = directory / ".github" / "workflows"
    return github if not gitea.exists() and github.exists() else gitea


def workflow_files(path: Path, *, recurse: bool = True) -> list[Path]:
    """Every ``*.yml``/``*.yaml`` file under ``path`` (sorted), or ``path`` itself."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PlanError(f"workflow path {path} does not exist")
    candidates = path.rglob("*") if recurse else path.iterdir()
    return sorted(p for p in candidates if p.suffix in WORKFLOW_SUFFIXES and p.is_file())


def load_workflows(files: Sequence[Path], base: Path) -> list[Workflow]:
    """Load every file; all problems together are one :class:`PlanError` (file:line: why)."""
    workflows: list[Workflow] = []
    problems: list[str] = []
    for path in files:
        shown = display_path(path, base)
        try:
            text = path.read_bytes()
        except OSError as exc:
            problems.append(f"{shown}: cannot read: {exc.strerror}")
            continue
        try:
            workflows.append(load_workflow(text, shown))
        except WorkflowError as exc:
            problems.append(str(exc) if exc.mark is not None else f"{shown}: {exc}")
    if problems:
        raise PlanError("invalid workflow:\n" + "\n".join(problems))
    return workflows


def display_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside, else as given."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def workflow_label(workflow: Workflow) -> str:
    """The workflow part of a job's log prefix: its ``name``, else its file name."""
    return workflow.name or Path(workflow.file).name


# --- events and job selection -----------------------------------------------------------


def detect_event(workflows: Sequence[Workflow], explicit: str | None, *, detect: bool) -> str:
    """``--event``; else the only event declared; else (``detect``) the first one; else push.

    ``workflow_call`` counts only when no workflow declares another event.
    """
    if explicit:
        return explicit
    events = sorted({event for workflow in workflows for event in workflow.on})
    if len(events) > 1 and "workflow_call" in events:
        # Called workflows sit next to their callers; their trigger is the call.
        events.remove("workflow_call")
    if len(events) == 1:
        return events[0]
    if detect and events:
        return events[0]
    return DEFAULT_EVENT


@dataclass(frozen=True)
class PlannedJob:
    """One job of one workflow, before matrix expansion."""

    workflow: Workflow
    job_id: str

    @property
    def job(self) -> Job:
        return self.workflow.jobs[self.job_id]

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow.file, self.job_id)

    @property
    def label(self) -> str:
        return f"{workflow_label(self.workflow)}/{self.job_id}"


def select_jobs(
    workflows: Sequence[Workflow], event: str, job_ids: Sequence[str] = ()
) -> list[PlannedJob]:
    """``job_ids`` and, transitively, what they need; else every job of workflows on ``event``."""
    if not job_ids:
        return [
            PlannedJob(workflow, job_id)
            for workflow in workflows
            if event in workflow.on
            for job_id in workflow.jobs
        ]
    selected: list[PlannedJob] = []
    for workflow in workflows:
        wanted: set[str] = set()
        pending = [job_id for job_id in job_ids if job_id in workflow.jobs]
        while pending:
            job_id = pending.pop()
            if job_id in wanted:
                continue
            wanted.add(job_id)
            job = workflow.jobs.get(job_id)
            if job is not None:
                pending.extend(job.needs)
        selected += [PlannedJob(workflow, job_id) for job_id in wanted]
    found = {planned.job_id for planned in selected}
    missing = [job_id for job_id in job_ids if job_id not in found]
    if missing:
        raise PlanError(f"no workflow has a job with id {', '.join(repr(j) for j in missing)}")
    return selected


def build_stages(jobs: Sequence[PlannedJob]) -> list[list[PlannedJob]]:
    """Stage *n* holds the jobs whose needs are all in earlier stages (per workflow;
    stage *n* of every workflow runs together). Workflow order, then job order, is kept."""
    by_workflow: dict[str, list[PlannedJob]] = {}
    for planned in jobs:
        by_workflow.setdefault(planned.workflow.file, []).append(planned)
    merged: list[list[PlannedJob]] = []
    for group in by_workflow.values():
        for index, stage in enumerate(_workflow_stages(group)):
            if index == len(merged):
                merged.append([])
            merged[index] += stage
    return merged


def _workflow_stages(jobs: list[PlannedJob]) -> list[list[PlannedJob]]:
    workflow = jobs[0].workflow
    order = {job_id: i for i, job_id in enumerate(workflow.jobs)}
    remaining = sorted(jobs, key=lambda planned: order[planned.job_id])
    for planned in remaining:
        for need in planned.job.needs:
            if need not in workflow.jobs:
                raise WorkflowError(
                    f"unable to build dependency graph: job '{planned.job_id}' needs "
                    f"unknown job '{need}'",
                    planned.job.mark,
                )
    done: set[str] = set()
    stages: list[list[PlannedJob]] = []
    while remaining:
        stage = [p for p in remaining if all(need in done for need in p.job.needs)]
        if not stage:
            cycle = ", ".join(p.job_id for p in remaining)
            raise WorkflowError(
                f"unable to build dependency graph: the needs of jobs {cycle} form a cycle",
                remaining[0].job.mark,
            )
        stages.append(stage)
        done.update(p.job_id for p in stage)
        remaining = [p for p in remaining if p.job_id not in done]
    return stages


# --- inputs -----------------------------------------------------------------------------


def declared_inputs(workflow: Workflow, event: str) -> dict[str, WorkflowInput]:
    if event == "workflow_dispatch":
        return workflow.dispatch_inputs
    if event == "workflow_call":
        return workflow.call_inputs
    return {}


def resolve_inputs(workflow: Workflow, event: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``inputs`` context: given values coerced by declared type, defaults applied.

    Values nobody declared are passed on as given (as act does).
    """
    declared = declared_inputs(workflow, event)
    result: dict[str, Any] = {k: v for k, v in given.items() if k not in declared}
    for name, spec in declared.items():
        where = f"{workflow.file}: on.{event}.inputs.{name}"
        if name in given:
            result[name] = coerce_input(spec, given[name], where)
        elif spec.default is not None:
            result[name] = spec.default
        elif spec.required:
            raise PlanError(f"{where}: required input '{name}' is missing (use --input)")
        else:
            result[name] = {"boolean": False, "number": 0}.get(spec.type, "")
    return result


def coerce_input(spec: WorkflowInput, value: Any, where: str) -> Any:
    """``value`` as the input's declared type; PlanError naming ``where`` if it is not one."""
    text = value if isinstance(value, str) else to_string(value)
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise PlanError(f"{where}: expected true or false, got {text!r}")
    if spec.type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        try:
            number = float(text)
        except ValueError:
            raise PlanError(f"{where}: expected a number, got {text!r}") from None
        return int(number) if number.is_integer() else number
    if spec.type == "choice" and spec.options and text not in spec.options:
        raise PlanError(f"{where}: {text!r} is not one of {', '.join(spec.options)}")
    return text


# --- the github context of a local checkout ---------------------------------------------


@dataclass(frozen=True)
class GitInfo:
    """What the local checkout says about itself; empty strings when unknown."""

    sha: str = ""
    ref: str = ""
    remote_url: str = ""
    user_name: str = ""


def read_git_info(directory: Path) -> GitInfo:
    """HEAD, the checked-out branch (or a tag at HEAD), ``origin``'s URL and user.name."""
    head = _git(directory, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD")
    config = _git(directory, "config", "--get-regexp", r"^(remote\.origin\.url|user\.name)$")
    head_lines = head.splitlines()
    sha = head_lines[0] if head_lines else ""
    ref = head_lines[1] if len(head_lines) > 1 and head_lines[1].startswith("refs/") else ""
    if sha and not ref:
        tags = _git(directory, "tag", "--points-at", "HEAD").split()
        ref = f"refs/tags/{tags[0]}" if tags else ""
    elif not sha:
        # A repository without commits still has a current branch.
        ref = _git(directory, "symbolic-ref", "-q", "HEAD").strip()
    settings = dict(line.partition(" ")[::2] for line in config.splitlines())
    return GitInfo(
        sha=sha,
        ref=ref,
        remote_url=settings.get("remote.origin.url", ""),
        user_name=settings.get("user.name", ""),
    )


def _git(directory: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"},
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


_REMOTE_PATH = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/]+/|[^@/:]+@[^:/]+:|[^:/]+:)?(.*?)/*$")


_REMOTE_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://(?:[^@/]*@)?([^/:]+)|[^@/:]+@([^:/]+):)")


def repository_url(remote: str, repository: str) -> str:
    """``github.repositoryUrl`` in GitHub's form, ``git://<host>/<owner>/<repo>.git``; empty
    without a host (a local path) or a repository."""
    match = _REMOTE_HOST.match(remote.strip())
    host = (match.group(1) or match.group(2)) if match else ""
    return f"git://{host}/{repository}.git" if host and repository else ""


def repository_from_remote(url: str) -> str:
    """``owner/repo`` of an https, ssh or scp-style remote URL; empty when there is none."""
    match = _REMOTE_PATH.match(url.strip())
    path = match.group(1) if match else ""
    parts = [p for p in path.removesuffix(".git").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def event_ref(event_name: str, event: Mapping[str, Any]) -> str:
    """``github.ref`` as the event defines it (1.5); empty when it does not."""
    if event_name in ("push", "create", "workflow_dispatch"):
        return _text(event.get("ref"))
    if event_name == "pull_request_target":
        base = _text(_dig(event, "pull_request", "base", "ref"))
        return f"refs/heads/{base}" if base else ""
    if event_name.startswith("pull_request"):
        number = event.get("number")
        return f"refs/pull/{number}/merge" if number is not None else ""
    if event_name == "release":
        tag = _text(_dig(event, "release", "tag_name"))
        return f"refs/tags/{tag}" if tag else ""
    if event_name == "deployment":
        return _text(_dig(event, "deployment", "ref"))
    branch = _text(_dig(event, "repository", "default_branch"))
    return f"refs/heads/{branch}" if branch else ""


def event_sha(event_name: str, event: Mapping[str, Any]) -> str:
    """``github.sha`` as the event defines it (1.5); empty when it does not."""
    if event_name == "push" and not event.get("deleted"):
        return _text(event.get("after"))
    if event_name == "pull_request_target":
        return _text(_dig(event, "pull_request", "base", "sha"))
    if event_name == "deployment":
        return _text(_dig(event, "deployment", "sha"))
    return ""


def ref_name_and_type(ref: str) -> tuple[str, str]:
    for prefix, kind in (
        ("refs/heads/", "branch"),
        ("refs/tags/", "tag"),
        ("refs/pull/", "branch"),
    ):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix), kind
    return ref, ""


def exec_github_context(
    event_name: str,
    event: Mapping[str, Any],
    git: GitInfo,
    *,
    actor_fallback: str = "",
) -> dict[str, Any]:
    """The task-context part of ``github`` for a local run (1.5); the executor adds the rest."""
    ref = event_ref(event_name, event) or git.ref
    ref_name, ref_type = ref_name_and_type(ref)
    repository = repository_from_remote(git.remote_url)
    actor = git.user_name or actor_fallback
    context: dict[str, Any] = {
        "event_name": event_name,
        "event": dict(event),
        "repository": repository,
        "repository_owner": repository.split("/", 1)[0] if repository else "",
        "repositoryUrl": repository_url(git.remote_url, repository),
        "ref": ref,
        "ref_name": ref_name,
        "ref_type": ref_type,
        "sha": event_sha(event_name, event) or git.sha,
        "head_ref": "",
        "base_ref": "",
        "run_id": "1",
        "run_number": "1",
        "run_attempt": "1",
        "actor": actor,
        "triggering_actor": actor,
    }
    if event_name.startswith("pull_request"):
        context["head_ref"] = _text(_dig(event, "pull_request", "head", "ref"))
        context["base_ref"] = _text(_dig(event, "pull_request", "base", "ref"))
    return context


# --- matrix expansion (5.12) ------------------------------------------------------------


def same_value(left: Any, right: Any) -> bool:
    """Deep equality of matrix values; booleans never equal numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return float(left) == float(right)
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_value, left, right))
    return type(left) is type(right) and bool(left == right)


def _entries(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise ValueError(f"{where}: expected a list of mappings")
    return value


def expand_matrix(
    matrix: Mapping[str, Any], where: str = "strategy.matrix"
) -> list[dict[str, Any]]:
    """The combinations of an evaluated matrix, in order (5.12).

    Raises ValueError naming the key for a matrix that breaks the rules.
    """
    dimensions: dict[str, list[Any]] = {}
    for key, value in matrix.items():
        if key in ("include", "exclude"):
            continue
        if isinstance(value, Mapping):
            raise ValueError(f"{where}.{key}: a matrix dimension must be a list, not a mapping")
        values = list(value) if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"{where}.{key}: Matrix vector '{key}' does not contain any values")
        dimensions[key] = values
    include = _entries(matrix.get("include"), f"{where}.include")
    exclude = _entries(matrix.get("exclude"), f"{where}.exclude")
    for entry in exclude:
        for key in entry:
            if key not in dimensions:
                raise ValueError(f"{where}.exclude: '{key}' is not a matrix dimension")
    combinations = (
        [
            dict(zip(dimensions, values, strict=True))
            for values in itertools.product(*dimensions.values())
        ]
        if dimensions
        else []
    )
    combinations = [
        combo
        for combo in combinations
        if not any(all(same_value(combo[k], v) for k, v in entry.items()) for entry in exclude)
    ]
    extra: list[dict[str, Any]] = []
    for entry in include:
        matched = False
        for combo in combinations:
            if all(k not in dimensions or same_value(combo[k], v) for k, v in entry.items()):
                combo.update(entry)
                matched = True
        if not matched:
            extra.append(dict(entry))
    result = combinations + extra
    if not dimensions and not include:
        result = [{}]
    if not result:
        raise ValueError(f"{where}: the matrix has no combinations left")
    if len(result) > MAX_COMBINATIONS:
        raise ValueError(
            f"{where}: the matrix has {len(result)} combinations, more than {MAX_COMBINATIONS}"
        )
    return result


def format_matrix_value(value: Any) -> str:
    """A matrix value as names and ``--matrix`` filters spell it."""
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return to_string(value)


def parse_matrix_filters(specs: Iterable[str]) -> dict[str, set[str]]:
    """``--matrix key:value`` options; several values of one key are alternatives."""
    filters: dict[str, set[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition(":")
        if not sep or not key:
            raise ConfigError(f"--matrix {spec!r}: expected KEY:VALUE")
        filters.setdefault(key, set()).add(value)
    return filters


def matrix_matches(combination: Mapping[str, Any], filters: Mapping[str, set[str]]) -> bool:
    """act's ``--matrix`` rule: every key the combination shares with a filter must match."""
    return all(
        format_matrix_value(value) in filters[key]
        for key, value in combination.items()
        if key in filters
    )


def matrix_display_name(name: str, combination: Mapping[str, Any]) -> str:
    """``name (v1, v2)``: values in key order as Gitea sorts them, empty ones left out."""
    values = [
        format_matrix_value(combination[key])
        for key in sorted(combination)
        if combination[key] is not None and combination[key] != ""
    ]
    return f"{name} ({', '.join(values)})" if values else name


# --- legs: one matrix combination of one job, as Gitea would send it --------------------


@dataclass(frozen=True)
class Leg:
    """One combination of a job: a single-job workflow shaped like Gitea's task payload."""

    workflow: Workflow
    job_id: str
    name: str
    matrix: dict[str, Any]
    index: int
    total: int
    continue_on_error: bool

    @property
    def job(self) -> Job:
        return self.workflow.jobs[self.job_id]


@dataclass(frozen=True)
class LegPlan:
    """The legs of a job that run, and how many may run at once."""

    legs: list[Leg]
    fail_fast: bool = True
    max_parallel: int = DEFAULT_MAX_PARALLEL


def job_condition(job: Job, contexts: Mapping[str, Any]) -> bool:
    """The job's ``if`` (2.2) with job-level status functions over ``contexts['needs']``.

    Evaluated before the matrix is expanded: a matrix may read outputs of needs that did
    not run, and a job that is skipped has no combinations.
    """
    needs: Mapping[str, Any] = contexts.get("needs", {})
    status = FixedStatus.for_needs(
        (str(entry.get("result", "")) for entry in needs.values()), cancelling=False
    )
    return evaluate_condition(job.if_, contexts, status=status)


def plan_legs(
    planned: PlannedJob,
    contexts: Mapping[str, Any],
    filters: Mapping[str, set[str]] | None = None,
) -> LegPlan:
    """Evaluate the job's strategy and expand its matrix (5.12) into legs.

    ``contexts`` holds ``github``, ``needs``, ``vars`` and ``inputs``; ``filters`` are
    ``--matrix`` options. Raises WorkflowError (at the job's position) or ExpressionError.
    """
    job = planned.job
    where = f"jobs.{planned.job_id}.strategy"
    strategy = job.strategy
    if isinstance(strategy, str):
        evaluated = interpolate(strategy, contexts)
        if not isinstance(evaluated, Mapping):
            raise WorkflowError(f"{where}: expected a mapping", job.mark)
        strategy = msgspec.convert({k.replace("-", "_"): v for k, v in evaluated.items()}, Strategy)
    matrix: Any = None
    fail_fast: Any = True
    max_parallel: Any = None
    if strategy is not None:
        matrix = interpolate(strategy.matrix, contexts)
        fail_fast = (
            True if strategy.fail_fast is None else interpolate(strategy.fail_fast, contexts)
        )
        max_parallel = interpolate(strategy.max_parallel, contexts)
    if matrix is not None and not isinstance(matrix, Mapping):
        raise WorkflowError(f"{where}.matrix: expected a mapping", job.mark)
    try:
        combinations = [{}] if matrix is None else expand_matrix(matrix, f"{where}.matrix")
    except ValueError as exc:
        raise WorkflowError(str(exc), job.mark) from None
    fail_fast_value = _strategy_bool(fail_fast, f"{where}.fail-fast", job)
    parallel = _strategy_int(max_parallel, f"{where}.max-parallel", job)
    total = len(combinations)
    legs = [
        _leg(planned, combination, index, total, fail_fast_value, parallel, contexts)
        for index, combination in enumerate(combinations)
        if not filters or matrix_matches(combination, filters)
    ]
    return LegPlan(legs=legs, fail_fast=fail_fast_value, max_parallel=parallel)


def _strategy_bool(value: Any, where: str, job: Job) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise WorkflowError(f"{where}: expected a boolean", job.mark)


def _strategy_int(value: Any, where: str, job: Job) -> int:
    if value is None:
        return DEFAULT_MAX_PARALLEL
    number: float
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise WorkflowError(f"{where}: expected a whole number of at least 1", job.mark)
    return int(number)


def _leg(
    planned: PlannedJob,
    combination: dict[str, Any],
    index: int,
    total: int,
    fail_fast: bool,
    max_parallel: int,
    contexts: Mapping[str, Any],
) -> Leg:
    job = planned.job
    strategy_ctx = {
        "fail-fast": fail_fast,
        "max-parallel": max_parallel,
        "job-index": index,
        "job-total": total,
    }
    leg_contexts = {**contexts, "matrix": combination, "strategy": strategy_ctx}
    where = f"jobs.{planned.job_id}"
    if job.name and "${{" in job.name:
        name = render_template(job.name, leg_contexts)
    else:
        name = matrix_display_name(job.name or planned.job_id, combination)
    continue_on_error = job.continue_on_error
    if isinstance(continue_on_error, str):
        continue_on_error = evaluate_condition(
            continue_on_error,
            leg_contexts,
            status=FixedStatus.for_job_status("success"),
            default_check=False,
        )
    resolved = msgspec.structs.replace(
        job,
        name=name,
        runs_on=_runs_on(job.runs_on, leg_contexts, f"{where}.runs-on", job),
        continue_on_error=continue_on_error,
        strategy=Strategy(
            matrix={key: [value] for key, value in combination.items()} or None,
            fail_fast=fail_fast,
            max_parallel=max_parallel,
            job_index=index if combination else None,
            job_total=total if combination else None,
        ),
    )
    workflow = msgspec.structs.replace(planned.workflow, jobs={planned.job_id: resolved})
    return Leg(
        workflow=workflow,
        job_id=planned.job_id,
        name=name,
        matrix=combination,
        index=index,
        total=total,
        continue_on_error=continue_on_error,
    )


def _runs_on(
    runs_on: RunsOn | str | None, contexts: Mapping[str, Any], where: str, job: Job
) -> RunsOn | None:
    """``runs-on`` evaluated to labels (2.3 step 1), as Gitea resolves it."""
    if runs_on is None:
        return None
    value = interpolate(runs_on if isinstance(runs_on, str) else runs_on.labels, contexts)
    group = interpolate(runs_on.group, contexts) if isinstance(runs_on, RunsOn) else None
    if isinstance(value, Mapping):
        group = value.get("group")
        value = value.get("labels", [])
    labels = [value] if isinstance(value, str) else value
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise WorkflowError(f"{where}: expected a label or a list of labels", job.mark)
    return RunsOn(labels=labels, group=None if group is None else to_string(group))


# --- results handed to dependants (1.5 step 4) ------------------------------------------


def aggregate_results(
    results: Sequence[str], outputs: Sequence[Mapping[str, str]]
) -> tuple[str, dict[str, str]]:
    """A job's ``needs`` entry (result, outputs) from its legs, in completion order.

    ``failure`` if any leg failed, else ``cancelled`` if any was, else ``skipped`` if all
    were, else ``success``. The last leg to write an output key wins.
    """
    if RESULT_FAILURE in results:
        result = RESULT_FAILURE
    elif RESULT_CANCELLED in results:
        result = RESULT_CANCELLED
    elif results and all(r == RESULT_SKIPPED for r in results):
        result = RESULT_SKIPPED
    else:
        result = RESULT_SUCCESS
    merged: dict[str, str] = {}
    for leg_outputs in outputs:
        merged.update(leg_outputs)
    return result, merged


def validate_jobs(jobs: Iterable[PlannedJob]) -> None:
    """Reject what cannot run before anything runs: template syntax (with the position of
    the job or step) and static matrices that break 5.12. Calls of reusable workflows are
    checked by ``reusable.resolve_calls``."""
    for planned in jobs:
        job = planned.job
        where = f"jobs.{planned.job_id}"
        _check(msgspec.structs.replace(job, steps=[]), job.if_, where, job.mark)
        for step in job.steps:
            _check(step, step.if_, f"{where}.steps[{step.index}]", step.mark)
        matrix = job.strategy.matrix if isinstance(job.strategy, Strategy) else None
        if isinstance(matrix, dict) and not has_templates(matrix):
            try:
                expand_matrix(matrix, f"{where}.strategy.matrix")
            except ValueError as exc:
                raise WorkflowError(str(exc), job.mark) from None


def _check(struct: msgspec.Struct, condition: str | None, where: str, mark: Mark) -> None:
    try:
        check_templates(msgspec.to_builtins(struct))
        if condition and "${{" not in condition:
            check_templates(f"${{{{ {condition} }}}}")
    except ExpressionError as exc:
        raise WorkflowError(f"{where}: {exc}", mark) from None


def has_templates(value: Any) -> bool:
    """Whether ``value`` holds a ``${{`` anywhere (it can only be expanded at run time)."""
    if isinstance(value, str):
        return "${{" in value
    if isinstance(value, Mapping):
        return any(has_templates(v) for v in value.values())
    if isinstance(value, list):
        return any(has_templates(v) for v in value)
    if isinstance(value, msgspec.Struct):
        return any(has_templates(getattr(value, f)) for f in value.__struct_fields__)
    return False


__all__ = [
    "DEFAULT_EVENT",
    "DEFAULT_MAX_PARALLEL",
    "MAX_COMBINATIONS",
    "GitInfo",
    "Leg",
    "LegPlan",
    "PlanError",
    "PlannedJob",
    "aggregate_results",
    "build_stages",
    "coerce_input",
    "declared_inputs",
    "default_workflows_path",
    "detect_event",
    "display_path",
    "event_ref",
    "event_sha",
    "exec_github_context",
    "expand_matrix",
    "format_matrix_value",
    "has_templates",
    "job_condition",
    "load_workflows",
    "matrix_display_name",
    "matrix_matches",
    "parse_matrix_filters",
    "plan_legs",
    "read_git_info",
    "ref_name_and_type",
    "repository_from_remote",
    "resolve_inputs",
    "same_value",
    "select_jobs",
    "validate_jobs",
    "workflow_files",
    "workflow_label",
]
