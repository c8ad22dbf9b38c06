"""Reusable workflows in exec mode: ``jobs.<id>.uses`` calls, resolved, checked and evaluated.

Before anything runs, :func:`resolve_calls` follows every calling job to the workflow it
calls (a file of the repository the calling workflow belongs to, ``./.github/workflows/…``
or ``./.gitea/workflows/…``, or ``owner/repo/.github/workflows/…@ref`` cloned from the
default actions host), loads it, checks the call against ``on.workflow_call`` (inputs
known, required inputs and secrets given, literal values of the right type) and plans the
called workflow's own dependency stages, recursively, up to GitHub's nesting limit and
with cycles rejected. At run time :func:`call_inputs`, :func:`call_secrets` and
:func:`call_outputs` compute what crosses one call: the ``inputs`` and ``secrets`` the
called jobs see and the outputs the calling job leaves for its dependants.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from trio_runner.workflow.expressions import evaluate_template, interpolate, render_template
from trio_runner.workflow.model import Job, Workflow, WorkflowError, WorkflowInput, load_workflow
from trio_runner.workflow.planner import (
    PlanError,
    PlannedJob,
    build_stages,
    coerce_input,
    display_path,
    has_templates,
    validate_jobs,
)

#: Workflows in one chain of calls, the calling workflow at the top included.
MAX_DEPTH = 10
WORKFLOW_DIRECTORIES = (".github/workflows/", ".gitea/workflows/")
#: Secrets every called workflow gets, as GitHub passes its token to every call.
TOKEN_SECRETS = ("GITHUB_TOKEN", "GITEA_TOKEN")

_REMOTE = re.compile(
    r"^(?:(?P<scheme>https?)://(?P<host>[^/]+)/)?(?P<owner>[^/@]+)/(?P<repo>[^/@]+)/"
    r"(?P<path>\.(?:github|gitea)/workflows/[^@]+)@(?P<ref>.+)$"
)
_FORMAT = (
    "expected ./.github/workflows/<file>, ./.gitea/workflows/<file> or "
    "[https://host/]<owner>/<repo>/.github/workflows/<file>@<ref>"
)


@dataclass(frozen=True)
class RemoteWorkflowRef:
    """``[<base>/]<owner>/<repo>/<path>@<ref>``; ``base`` empty means the default host."""

    owner: str
    repo: str
    path: str
    ref: str
    base: str = ""

    @property
    def repository(self) -> str:
        """The repository part as an action reference to its root spells it."""
        prefix = f"{self.base}/" if self.base else ""
        return f"{prefix}{self.owner}/{self.repo}@{self.ref}"

    @property
    def cache_key(self) -> str:
        """The clone directory's name: the same as for an action at the repository root."""
        return hashlib.sha256(self.repository.encode()).hexdigest()

    def clone_url(self, default_host: str) -> str:
        base = (self.base or default_host).rstrip("/")
        if "://" not in base:
            base = "https://" + base
        return f"{base}/{self.owner}/{self.repo}"


#: Clones a remote workflow's repository and returns the checked-out directory.
FetchRepository = Callable[[RemoteWorkflowRef], Path]


@dataclass(frozen=True)
class Repository:
    """Where a workflow file lives: a directory, and how to name files in it."""

    directory: Path
    #: ``owner/repo`` (with the URL prefix) for a clone; empty for the local checkout.
    name: str = ""
    ref: str = ""

    def display(self, path: Path) -> str:
        relative = display_path(path, self.directory)
        return f"{self.name}/{relative}@{self.ref}" if self.name else relative


@dataclass(frozen=True)
class CalledWorkflow:
    """The workflow a calling job runs, loaded and planned."""

    uses: str
    workflow: Workflow
    repository: Repository
    stages: list[list[PlannedJob]]

    @property
    def jobs(self) -> list[PlannedJob]:
        return [planned for stage in self.stages for planned in stage]


#: (file of the calling workflow, calling job id) -> the workflow it calls.
Calls = dict[tuple[str, str], CalledWorkflow]


def parse_reference(uses: str) -> str | RemoteWorkflowRef:
    """A local path (``.github/workflows/x.yml``) or a remote reference; ValueError if
    ``uses`` is neither."""
    if "${{" in uses:
        raise ValueError("expressions are not allowed in the 'uses' of a job")
    if uses.startswith("./"):
        path = PurePosixPath(uses[2:])
        text = str(path)
        if "@" in uses or ".." in path.parts or not text.startswith(WORKFLOW_DIRECTORIES):
            raise ValueError(_FORMAT)
        return text
    match = _REMOTE.match(uses)
    if match is None or ".." in PurePosixPath(match["path"]).parts:
        raise ValueError(_FORMAT)
    base = f"{match['scheme']}://{match['host']}" if match["scheme"] else ""
    return RemoteWorkflowRef(match["owner"], match["repo"], match["path"], match["ref"], base)


def resolve_calls(
    jobs: Sequence[PlannedJob], repository: Repository, fetch: FetchRepository | None
) -> Calls:
    """Every call reachable from ``jobs``, loaded and checked; raises WorkflowError (at the
    calling job's position) for a call that cannot run. ``fetch`` clones remote
    repositories; without it a remote call is an error."""
    resolver = _Resolver(fetch)
    for planned in jobs:
        resolver.visit(planned, repository, (planned.workflow.file,))
    return resolver.calls


class _Resolver:
    def __init__(self, fetch: FetchRepository | None) -> None:
        self.fetch = fetch
        self.calls: Calls = {}
        self.loaded: dict[str, CalledWorkflow] = {}
        self.clones: dict[str, Repository] = {}

    def visit(self, planned: PlannedJob, repository: Repository, chain: tuple[str, ...]) -> None:
        job = planned.job
        if job.uses is None:
            return
        where = f"jobs.{planned.job_id}.uses"
        if len(chain) >= MAX_DEPTH:
            raise WorkflowError(
                f"{where}: reusable workflows are nested more than {MAX_DEPTH} levels deep "
                f"({' -> '.join(chain)} -> {job.uses})",
                job.mark,
            )
        called = self.load(planned, repository)
        file = called.workflow.file
        if file in chain:
            cycle = " -> ".join((*chain[chain.index(file) :], file))
            raise WorkflowError(
                f"{where}: reusable workflows call each other in a cycle: {cycle}", job.mark
            )
        check_call(planned, called.workflow)
        self.calls[planned.key] = called
        for inner in called.jobs:
            self.visit(inner, called.repository, (*chain, file))

    def load(self, planned: PlannedJob, repository: Repository) -> CalledWorkflow:
        job = planned.job
        uses = job.uses or ""
        where = f"jobs.{planned.job_id}.uses"
        try:
            reference = parse_reference(uses)
        except ValueError as exc:
            raise WorkflowError(f"{where}: '{uses}': {exc}", job.mark) from None
        if isinstance(reference, RemoteWorkflowRef):
            repository = self.clone(planned, reference)
            reference = reference.path
        path = repository.directory / reference
        shown = repository.display(path)
        if (known := self.loaded.get(shown)) is not None:
            return known
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise WorkflowError(
                f"{where}: cannot read the reusable workflow {shown}: {exc.strerror}", job.mark
            ) from None
        try:
            workflow = load_workflow(text, shown)
        except WorkflowError as exc:
            raise WorkflowError(f"{where}: invalid reusable workflow: {exc}", job.mark) from None
        if "workflow_call" not in workflow.on:
            raise WorkflowError(
                f"{where}: {shown} is not a reusable workflow (its 'on' has no workflow_call)",
                job.mark,
            )
        jobs = [PlannedJob(workflow, job_id) for job_id in workflow.jobs]
        if not jobs:
            raise WorkflowError(f"{where}: {shown} has no jobs", job.mark)
        called = CalledWorkflow(uses, workflow, repository, build_stages(jobs))
        validate_jobs(jobs)
        self.loaded[shown] = called
        return called

    def clone(self, planned: PlannedJob, reference: RemoteWorkflowRef) -> Repository:
        job = planned.job
        key = reference.repository
        if (known := self.clones.get(key)) is not None:
            return known
        where = f"jobs.{planned.job_id}.uses"
        if self.fetch is None:
            raise WorkflowError(
                f"{where}: '{job.uses}': remote workflows cannot be fetched", job.mark
            )
        try:
            directory = self.fetch(reference)
        except PlanError as exc:
            raise WorkflowError(f"{where}: cannot fetch '{job.uses}': {exc}", job.mark) from None
        prefix = f"{reference.base}/" if reference.base else ""
        cloned = Repository(directory, f"{prefix}{reference.owner}/{reference.repo}", reference.ref)
        self.clones[key] = cloned
        return cloned


# --- what the call passes ------------------------------------------------------------


def _declared(name: str, declared: Mapping[str, Any]) -> str | None:
    """The declared spelling of ``name`` (names are case-insensitive)."""
    lowered = name.lower()
    return next((key for key in declared if key.lower() == lowered), None)


def check_call(planned: PlannedJob, workflow: Workflow) -> None:
    """What can be checked before running: ``with`` names declared, required inputs
    given, literal values of the declared type, and the same for ``secrets``."""
    job = planned.job
    where = f"jobs.{planned.job_id}"
    shown = workflow.file
    given = set()
    for name, value in job.with_.items():
        declared = _declared(name, workflow.call_inputs)
        if declared is None:
            raise WorkflowError(
                f"{where}.with.{name}: input '{name}' is not defined in the reusable workflow "
                f"{shown}",
                job.mark,
            )
        given.add(declared)
        if not has_templates(value):
            _coerce(workflow.call_inputs[declared], value, f"{where}.with.{name}", job)
    for name, spec in workflow.call_inputs.items():
        if spec.required and name not in given:
            raise WorkflowError(
                f"{where}.with: input '{name}' is required by the reusable workflow {shown}",
                job.mark,
            )
    if not isinstance(job.secrets, dict):
        return
    passed = set()
    for name in job.secrets:
        declared = _declared(name, workflow.call_secrets)
        if declared is None:
            raise WorkflowError(
                f"{where}.secrets.{name}: secret '{name}' is not defined in the reusable "
                f"workflow {shown}",
                job.mark,
            )
        passed.add(declared)
    for name, secret in workflow.call_secrets.items():
        if secret.required and name not in passed:
            raise WorkflowError(
                f"{where}.secrets: secret '{name}' is required by the reusable workflow {shown}",
                job.mark,
            )


def _coerce(spec: WorkflowInput, value: Any, where: str, job: Job) -> Any:
    try:
        return coerce_input(spec, value, where)
    except PlanError as exc:
        raise WorkflowError(str(exc), job.mark) from None


def call_inputs(
    planned: PlannedJob, workflow: Workflow, contexts: Mapping[str, Any]
) -> dict[str, Any]:
    """The called workflow's ``inputs`` context: ``with`` evaluated in the calling job's
    ``contexts`` and coerced to the declared types, then the defaults (templates in a
    default see ``github``, ``vars`` and ``inputs`` given so far)."""
    job = planned.job
    where = f"jobs.{planned.job_id}.with"
    inputs: dict[str, Any] = {}
    for name, value in job.with_.items():
        declared = _declared(name, workflow.call_inputs) or name
        spec = workflow.call_inputs[declared]
        inputs[declared] = _coerce(spec, interpolate(value, contexts), f"{where}.{name}", job)
    for name, spec in workflow.call_inputs.items():
        if name in inputs:
            continue
        if spec.default is None:
            inputs[name] = {"boolean": False, "number": 0}.get(spec.type, "")
            continue
        default_contexts = {
            "github": contexts.get("github", {}),
            "vars": contexts.get("vars", {}),
            "inputs": inputs,
        }
        default = (
            evaluate_template(spec.default, default_contexts)
            if isinstance(spec.default, str)
            else spec.default
        )
        inputs[name] = _coerce(spec, default, f"on.workflow_call.inputs.{name}.default", job)
    return inputs


def call_secrets(
    job: Job, contexts: Mapping[str, Any], secrets: Mapping[str, str]
) -> dict[str, str]:
    """The called workflow's ``secrets``: all of ``secrets`` with ``inherit``, else the
    mapped ones (evaluated in ``contexts``, which hold the caller's ``secrets``) and the
    token."""
    if job.secrets == "inherit":
        return dict(secrets)
    passed = {name: secrets[name] for name in TOKEN_SECRETS if name in secrets}
    if isinstance(job.secrets, dict):
        for name, value in job.secrets.items():
            passed[name.upper()] = render_template(value, contexts)
    return passed


def call_outputs(workflow: Workflow, contexts: Mapping[str, Any]) -> dict[str, str]:
    """``on.workflow_call.outputs`` evaluated; ``contexts`` hold ``jobs`` (the called
    jobs' results and outputs), ``github``, ``inputs`` and ``vars``."""
    return {
        name: render_template(output.value, contexts)
        for name, output in workflow.call_outputs.items()
    }


__all__ = [
    "MAX_DEPTH",
    "CalledWorkflow",
    "Calls",
    "FetchRepository",
    "RemoteWorkflowRef",
    "Repository",
    "call_inputs",
    "call_outputs",
    "call_secrets",
    "check_call",
    "parse_reference",
    "resolve_calls",
]
