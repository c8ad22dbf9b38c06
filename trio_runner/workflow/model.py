"""Workflow, job, step and action metadata (``action.yml``) as typed Structs.

Loading validates shape the way GitHub does (unknown keys, wrong types, ``run``/``uses``
exclusivity, step ids) and every problem is a :class:`WorkflowError` naming file, line
and column. Values that are templates stay strings here; the executor evaluates them.
Scalars read as strings keep their literal source text (``3.10`` stays ``"3.10"``);
matrix values, ``with`` of reusable-workflow jobs and input defaults stay typed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from trio_runner.workflow.yamlload import (
    Mark,
    Scalar,
    WorkflowError,
    YMap,
    YNode,
    YScalar,
    YSeq,
    load_yaml,
    to_python,
)

__all__ = [
    "ActionInput",
    "ActionMetadata",
    "ActionOutput",
    "ActionRuns",
    "Container",
    "Credentials",
    "Job",
    "Mark",
    "RunDefaults",
    "RunsOn",
    "Step",
    "Strategy",
    "Workflow",
    "WorkflowCallOutput",
    "WorkflowCallSecret",
    "WorkflowError",
    "WorkflowInput",
    "load_action",
    "load_task_payload",
    "load_workflow",
    "single_job",
    "step_display_name",
    "step_keys",
]

ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NODE_RUNTIMES = frozenset({"node12", "node16", "node20", "node24"})
RUNS_USING = ("node12", "node16", "node20", "node24", "docker", "composite", "go")

Template = str
"""A string that may contain ``${{ }}`` and is evaluated by the executor."""


class RunDefaults(msgspec.Struct, frozen=True):
    """``defaults.run`` of a workflow or job."""

    shell: Template | None = None
    working_directory: Template | None = None


class WorkflowInput(msgspec.Struct, frozen=True):
    """A declared ``workflow_dispatch`` or ``workflow_call`` input."""

    type: str = "string"
    description: str = ""
    required: bool = False
    default: Scalar = None
    options: list[str] = []


class WorkflowCallSecret(msgspec.Struct, frozen=True):
    """``on.workflow_call.secrets.<name>``: a secret the called workflow declares."""

    description: str = ""
    required: bool = False


class WorkflowCallOutput(msgspec.Struct, frozen=True):
    """``on.workflow_call.outputs.<id>``; ``value`` reads the called workflow's ``jobs``."""

    value: Template
    description: str = ""


class Step(msgspec.Struct, frozen=True):
    """One entry of ``steps`` (of a job or of a composite action)."""

    index: int
    mark: Mark
    id: str | None = None
    name: Template | None = None
    if_: Template | None = None
    run: Template | None = None
    uses: str | None = None
    with_: dict[str, Template] = {}
    env: dict[str, Template] | Template = {}
    shell: Template | None = None
    working_directory: Template | None = None
    continue_on_error: bool | Template = False
    timeout_minutes: int | float | Template | None = None


class RunsOn(msgspec.Struct, frozen=True):
    """``runs-on`` in any of its forms: a label, a list of labels, or ``{group, labels}``."""

    labels: list[Template] = []
    group: Template | None = None


class Strategy(msgspec.Struct, frozen=True):
    """``strategy``; ``matrix`` is typed data or a template producing it."""

    matrix: dict[str, Any] | Template | None = None
    fail_fast: bool | Template | None = None
    max_parallel: int | Template | None = None
    job_index: int | None = None
    job_total: int | None = None


class Credentials(msgspec.Struct, frozen=True):
    """Registry credentials of a job or service container."""

    username: Template | None = None
    password: Template | None = None


class Container(msgspec.Struct, frozen=True):
    """The job container or a service container."""

    image: Template
    mark: Mark
    options: Template = ""
    env: dict[str, Template] = {}
    ports: list[Template] = []
    volumes: list[Template] = []
    credentials: Credentials | None = None
    entrypoint: Template | None = None
    command: Template | None = None


class Job(msgspec.Struct, frozen=True):
    """One job. ``uses``/``with_``/``secrets`` describe a reusable-workflow call."""

    id: str
    mark: Mark
    name: Template | None = None
    runs_on: RunsOn | Template | None = None
    needs: list[str] = []
    if_: Template | None = None
    env: dict[str, Template] | Template = {}
    defaults: RunDefaults = RunDefaults()
    steps: list[Step] = []
    outputs: dict[str, Template] = {}
    strategy: Strategy | Template | None = None
    container: Container | None = None
    services: dict[str, Container] = {}
    timeout_minutes: int | float | Template | None = None
    continue_on_error: bool | Template = False
    environment: Any = None
    uses: str | None = None
    with_: dict[str, Any] = {}
    secrets: dict[str, Template] | str | None = None

    def display_name(self) -> str:
        """``name`` (Gitea sends it resolved, matrix suffix included), else the id."""
        return self.name or self.id

    @property
    def matrix_values(self) -> dict[str, Any]:
        """The ``matrix`` context of a resolved combination (one value per key)."""
        return _combination(self)

    @property
    def strategy_context(self) -> dict[str, Any]:
        """The ``strategy`` keys present (fail-fast, max-parallel, job-index, job-total)."""
        if not isinstance(self.strategy, Strategy):
            return {}
        pairs = {
            "fail-fast": self.strategy.fail_fast,
            "max-parallel": self.strategy.max_parallel,
            "job-index": self.strategy.job_index,
            "job-total": self.strategy.job_total,
        }
        return {key: value for key, value in pairs.items() if value is not None}


def _combination(job: Job) -> dict[str, Any]:
    matrix = job.strategy.matrix if isinstance(job.strategy, Strategy) else None
    if not isinstance(matrix, dict):
        return {}
    values: dict[str, Any] = {}
    for key, value in matrix.items():
        if not isinstance(value, list) or len(value) != 1:
            raise WorkflowError(
                f"jobs.{job.id}.strategy.matrix.{key}: expected exactly one value for this "
                "combination",
                job.mark,
            )
        values[key] = value[0]
    return values


class Workflow(msgspec.Struct, frozen=True):
    """A workflow file (or the single-job payload Gitea sends)."""

    file: str
    name: Template | None = None
    on: dict[str, Any] = {}
    dispatch_inputs: dict[str, WorkflowInput] = {}
    call_inputs: dict[str, WorkflowInput] = {}
    call_secrets: dict[str, WorkflowCallSecret] = {}
    call_outputs: dict[str, WorkflowCallOutput] = {}
    env: dict[str, Template] | Template = {}
    defaults: RunDefaults = RunDefaults()
    jobs: dict[str, Job] = {}


class ActionInput(msgspec.Struct, frozen=True):
    """``inputs.<id>`` of an action."""

    description: str = ""
    required: bool | str = False
    default: Template | None = None
    deprecation_message: str | None = None


class ActionOutput(msgspec.Struct, frozen=True):
    """``outputs.<id>`` of an action; ``value`` only for composite actions."""

    description: str = ""
    value: Template | None = None


class ActionRuns(msgspec.Struct, frozen=True):
    """``runs`` of an action; ``using`` is lower-cased."""

    using: str
    main: str | None = None
    pre: str | None = None
    post: str | None = None
    pre_if: Template | None = None
    post_if: Template | None = None
    image: str | None = None
    entrypoint: Template | None = None
    pre_entrypoint: Template | None = None
    post_entrypoint: Template | None = None
    args: list[Template] = []
    env: dict[str, Template] = {}
    steps: list[Step] = []

    @property
    def is_node(self) -> bool:
        return self.using in NODE_RUNTIMES


class ActionMetadata(msgspec.Struct, frozen=True):
    """An ``action.yml``."""

    file: str
    runs: ActionRuns
    name: str = ""
    description: str = ""
    author: str = ""
    inputs: dict[str, ActionInput] = {}
    outputs: dict[str, ActionOutput] = {}


# --- node readers ----------------------------------------------------------------------


def _fail(problem: str, node: YNode | YScalar | None, where: str) -> WorkflowError:
    return WorkflowError(f"{where}: {problem}", None if node is None else node.mark)


_NOWHERE = Mark("", 0, 0)


def _mapping(node: YNode | None, where: str) -> YMap:
    """A mapping; an absent or null value reads as an empty one."""
    if isinstance(node, YMap):
        return node
    if node is None:
        return YMap({}, _NOWHERE)
    if isinstance(node, YScalar) and node.value is None:
        return YMap({}, node.mark)
    raise _fail("expected a mapping", node, where)


def _check_keys(mapping: YMap, allowed: frozenset[str], where: str) -> None:
    for key, (key_node, _) in mapping.items.items():
        if key not in allowed:
            raise _fail(f"unexpected key '{key}'", key_node, where)


def _string(node: YNode | None, where: str) -> str:
    """The literal text of a scalar; null reads as the empty string."""
    if isinstance(node, YScalar):
        return "" if node.value is None else node.text
    raise _fail("expected a string", node, where)


def _opt_string(mapping: YMap, key: str, where: str) -> str | None:
    node = mapping.get(key)
    return None if node is None else _string(node, f"{where}.{key}")


def _nonempty(node: YNode | None, where: str) -> str:
    text = _string(node, where)
    if not text:
        raise _fail("must not be empty", node, where)
    return text


def _string_list(node: YNode | None, where: str, *, single: bool = True) -> list[str]:
    """A sequence of non-empty strings, or (``single``) one string standing for a list."""
    if isinstance(node, YSeq):
        return [_nonempty(item, f"{where}[{i}]") for i, item in enumerate(node.items)]
    if single and isinstance(node, YScalar) and node.value is not None:
        return [_nonempty(node, where)]
    raise _fail("expected a list of strings", node, where)


def _string_map(node: YNode | None, where: str) -> dict[str, str]:
    mapping = _mapping(node, where)
    result: dict[str, str] = {}
    for key, (key_node, value) in mapping.items.items():
        if not key:
            raise _fail("keys must not be empty", key_node, where)
        result[key] = _string(value, f"{where}.{key}")
    return result


def _is_template(node: YNode | None) -> bool:
    return isinstance(node, YScalar) and isinstance(node.value, str) and "${{" in node.value


def _env(node: YNode | None, where: str) -> dict[str, str] | str:
    """A map of templates, or one template that produces the map."""
    if _is_template(node):
        return _string(node, where)
    return _string_map(node, where)


def _bool_or_template(node: YNode | None, where: str) -> bool | str:
    if isinstance(node, YScalar) and isinstance(node.value, bool):
        return node.value
    if _is_template(node):
        return _string(node, where)
    raise _fail("expected a boolean or an expression", node, where)


def _number_or_template(node: YNode | None, where: str) -> int | float | str:
    if isinstance(node, YScalar):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if _is_template(node):
            return node.text
    raise _fail("expected a number or an expression", node, where)


def _int_or_template(node: YNode | None, where: str) -> int | str:
    value = _number_or_template(node, where)
    if isinstance(value, float):
        if not value.is_integer():
            raise _fail("expected a whole number", node, where)
        return int(value)
    return value


def _check_id(key_node: YScalar | YNode, text: str, where: str) -> None:
    if not ID_PATTERN.fullmatch(text):
        raise _fail(
            f"invalid id '{text}': it must start with a letter or '_' and contain only "
            "letters, digits, '-' and '_'",
            key_node,
            where,
        )


# --- steps -----------------------------------------------------------------------------

_STEP_KEYS = frozenset(
    {
        "id",
        "name",
        "if",
        "run",
        "uses",
        "with",
        "env",
        "shell",
        "working-directory",
        "continue-on-error",
        "timeout-minutes",
    }
)
_COMPOSITE_STEP_KEYS = _STEP_KEYS - {"timeout-minutes"}


def _step(node: YNode, index: int, where: str, *, composite: bool) -> Step:
    m = _mapping(node, where)
    _check_keys(m, _COMPOSITE_STEP_KEYS if composite else _STEP_KEYS, where)
    run_node, uses_node = m.get("run"), m.get("uses")
    if (run_node is None) == (uses_node is None):
        raise _fail("a step must have exactly one of 'run' and 'uses'", m, where)
    step_id = _opt_string(m, "id", where)
    if step_id is not None:
        _check_id(m.items["id"][1], step_id, f"{where}.id")
    shell = _opt_string(m, "shell", where)
    if composite and run_node is not None and not shell:
        raise _fail("Required property is missing: shell", m, where)
    uses = None if uses_node is None else _nonempty(uses_node, f"{where}.uses")
    coe, timeout = m.get("continue-on-error"), m.get("timeout-minutes")
    return Step(
        index=index,
        mark=m.mark,
        id=step_id,
        name=_opt_string(m, "name", where),
        if_=_opt_string(m, "if", where),
        run=None if run_node is None else _string(run_node, f"{where}.run"),
        uses=uses,
        with_=_string_map(m.get("with"), f"{where}.with"),
        env=_env(m.get("env"), f"{where}.env"),
        shell=shell,
        working_directory=_opt_string(m, "working-directory", where),
        continue_on_error=False
        if coe is None
        else _bool_or_template(coe, f"{where}.continue-on-error"),
        timeout_minutes=None
        if timeout is None
        else _number_or_template(timeout, f"{where}.timeout-minutes"),
    )


def _steps(node: YNode | None, where: str, *, composite: bool) -> list[Step]:
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return []
    if not isinstance(node, YSeq):
        raise _fail("expected a list of steps", node, where)
    steps = [
        _step(item, i, f"{where}[{i}]", composite=composite) for i, item in enumerate(node.items)
    ]
    seen: set[str] = set()
    for step in steps:
        if step.id is None:
            continue
        if step.id in seen:
            raise WorkflowError(f"{where}[{step.index}]: duplicate step id '{step.id}'", step.mark)
        seen.add(step.id)
    return steps


# --- jobs ------------------------------------------------------------------------------

_JOB_KEYS = frozenset(
    {
        "name",
        "needs",
        "if",
        "strategy",
        "runs-on",
        "timeout-minutes",
        "cancel-timeout-minutes",
        "continue-on-error",
        "container",
        "services",
        "env",
        "environment",
        "permissions",
        "concurrency",
        "outputs",
        "defaults",
        "steps",
        "snapshot",
    }
)
_CALL_JOB_KEYS = frozenset(
    {"name", "uses", "with", "secrets", "needs", "if", "permissions", "concurrency", "strategy"}
)
_CONTAINER_KEYS = frozenset({"image", "options", "env", "ports", "volumes", "credentials"})
_SERVICE_KEYS = _CONTAINER_KEYS | {"entrypoint", "command"}
_STRATEGY_KEYS = frozenset({"matrix", "fail-fast", "max-parallel", "job-index", "job-total"})


def _defaults(node: YNode | None, where: str) -> RunDefaults:
    if node is None:
        return RunDefaults()
    m = _mapping(node, where)
    _check_keys(m, frozenset({"run"}), where)
    run = _mapping(m.get("run"), f"{where}.run")
    _check_keys(run, frozenset({"shell", "working-directory"}), f"{where}.run")
    return RunDefaults(
        shell=_opt_string(run, "shell", f"{where}.run"),
        working_directory=_opt_string(run, "working-directory", f"{where}.run"),
    )


def _runs_on(node: YNode, where: str) -> RunsOn | str:
    if isinstance(node, YMap):
        _check_keys(node, frozenset({"group", "labels"}), where)
        labels = node.get("labels")
        return RunsOn(
            labels=[] if labels is None else _string_list(labels, f"{where}.labels"),
            group=_opt_string(node, "group", where),
        )
    if _is_template(node):
        return _string(node, where)
    return RunsOn(labels=_string_list(node, where))


def _matrix(node: YNode, where: str) -> dict[str, Any] | str:
    if _is_template(node):
        return _string(node, where)
    m = _mapping(node, where)
    for key, (key_node, value) in m.items.items():
        if not key:
            raise _fail("matrix keys must not be empty", key_node, where)
        if key in ("include", "exclude"):
            if _is_template(value):
                continue
            if not isinstance(value, YSeq) or not all(isinstance(i, YMap) for i in value.items):
                raise _fail("expected a list of mappings", value, f"{where}.{key}")
        elif not isinstance(value, YSeq) and not _is_template(value):
            raise _fail("expected a list of values or an expression", value, f"{where}.{key}")
    result: dict[str, Any] = to_python(m)
    return result


def _strategy(node: YNode, where: str) -> Strategy | str:
    if _is_template(node):
        return _string(node, where)
    m = _mapping(node, where)
    _check_keys(m, _STRATEGY_KEYS, where)

    def opt(key: str, read: Any) -> Any:
        value = m.get(key)
        return None if value is None else read(value, f"{where}.{key}")

    index, total = opt("job-index", _int_or_template), opt("job-total", _int_or_template)
    for key, value in (("job-index", index), ("job-total", total)):
        if isinstance(value, str):
            raise _fail("expected a number", m.get(key), f"{where}.{key}")
    return Strategy(
        matrix=opt("matrix", _matrix),
        fail_fast=opt("fail-fast", _bool_or_template),
        max_parallel=opt("max-parallel", _int_or_template),
        job_index=index,
        job_total=total,
    )


def _container(node: YNode, where: str, *, service: bool) -> Container:
    if isinstance(node, YScalar):
        return Container(image=_nonempty(node, where), mark=node.mark)
    m = _mapping(node, where)
    _check_keys(m, _SERVICE_KEYS if service else _CONTAINER_KEYS, where)
    credentials = None
    cred_node = m.get("credentials")
    if cred_node is not None:
        cm = _mapping(cred_node, f"{where}.credentials")
        _check_keys(cm, frozenset({"username", "password"}), f"{where}.credentials")
        credentials = Credentials(
            username=_opt_string(cm, "username", f"{where}.credentials"),
            password=_opt_string(cm, "password", f"{where}.credentials"),
        )
    ports, volumes = m.get("ports"), m.get("volumes")
    return Container(
        image=_string(m.get("image"), f"{where}.image") if "image" in m.items else "",
        mark=m.mark,
        options=_opt_string(m, "options", where) or "",
        env=_string_map(m.get("env"), f"{where}.env"),
        ports=[] if ports is None else _string_list(ports, f"{where}.ports", single=False),
        volumes=[] if volumes is None else _string_list(volumes, f"{where}.volumes", single=False),
        credentials=credentials,
        entrypoint=_opt_string(m, "entrypoint", where),
        command=_opt_string(m, "command", where),
    )


def _job(job_id: str, node: YNode, where: str) -> Job:
    m = _mapping(node, where)
    uses = m.get("uses")
    _check_keys(m, _CALL_JOB_KEYS if uses is not None else _JOB_KEYS, where)
    if uses is None and m.get("runs-on") is None:
        raise _fail("'runs-on' is required", m, where)

    def opt(key: str, read: Any) -> Any:
        value = m.get(key)
        return None if value is None else read(value, f"{where}.{key}")

    services = _mapping(m.get("services"), f"{where}.services")
    secrets_node = m.get("secrets")
    secrets: dict[str, str] | str | None = None
    if isinstance(secrets_node, YScalar) and secrets_node.value == "inherit":
        secrets = "inherit"
    elif secrets_node is not None:
        secrets = _string_map(secrets_node, f"{where}.secrets")
    with_node = m.get("with")
    coe = m.get("continue-on-error")
    return Job(
        id=job_id,
        mark=m.mark,
        name=_opt_string(m, "name", where),
        runs_on=opt("runs-on", _runs_on),
        needs=opt("needs", _string_list) or [],
        if_=_opt_string(m, "if", where),
        env=_env(m.get("env"), f"{where}.env"),
        defaults=_defaults(m.get("defaults"), f"{where}.defaults"),
        steps=_steps(m.get("steps"), f"{where}.steps", composite=False),
        outputs=_string_map(m.get("outputs"), f"{where}.outputs"),
        strategy=opt("strategy", _strategy),
        container=opt("container", lambda n, w: _container(n, w, service=False)),
        services={
            sid: _container(value, f"{where}.services.{sid}", service=True)
            for sid, (_, value) in services.items.items()
        },
        timeout_minutes=opt("timeout-minutes", _number_or_template),
        continue_on_error=False
        if coe is None
        else _bool_or_template(coe, f"{where}.continue-on-error"),
        environment=to_python(m.get("environment")),
        uses=None if uses is None else _nonempty(uses, f"{where}.uses"),
        with_=to_python(_mapping(with_node, f"{where}.with")),
        secrets=secrets,
    )


# --- workflows -------------------------------------------------------------------------

_WORKFLOW_KEYS = frozenset(
    {
        "name",
        "description",
        "run-name",
        "on",
        "env",
        "defaults",
        "permissions",
        "concurrency",
        "jobs",
    }
)
_INPUT_TYPES = {
    "workflow_dispatch": frozenset({"string", "boolean", "number", "choice", "environment"}),
    "workflow_call": frozenset({"string", "boolean", "number"}),
}


def _on(node: YNode | None, where: str) -> dict[str, YNode | None]:
    """``on`` normalised to event name → configuration node."""
    if node is None:
        return {}
    if isinstance(node, YScalar):
        return {_nonempty(node, where): None}
    if isinstance(node, YSeq):
        return {name: None for name in _string_list(node, where)}
    return {key: value for key, (_, value) in node.items.items()}


def _input_default(type_: str, node: YNode, where: str) -> Scalar:
    if not isinstance(node, YScalar):
        raise _fail("expected a scalar", node, where)
    value = node.value
    if type_ == "boolean" and (isinstance(value, bool) or _is_template(node)):
        return value
    if type_ == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if type_ in ("boolean", "number") and not _is_template(node):
        raise _fail(f"expected a {type_}", node, where)
    return _string(node, where)


def _inputs(event: str, config: YNode | None, where: str) -> dict[str, WorkflowInput]:
    if config is None or (isinstance(config, YScalar) and config.value is None):
        return {}
    inputs_node = _mapping(config, where).get("inputs")
    if inputs_node is None:
        return {}
    result: dict[str, WorkflowInput] = {}
    for name, (_, spec_node) in _mapping(inputs_node, f"{where}.inputs").items.items():
        iw = f"{where}.inputs.{name}"
        spec = _mapping(spec_node, iw)
        type_ = _opt_string(spec, "type", iw) or "string"
        if type_ not in _INPUT_TYPES[event]:
            allowed = ", ".join(sorted(_INPUT_TYPES[event]))
            raise _fail(f"unknown input type '{type_}' (one of {allowed})", spec.get("type"), iw)
        required = spec.get("required")
        default = spec.get("default")
        options = spec.get("options")
        result[name] = WorkflowInput(
            type=type_,
            description=_opt_string(spec, "description", iw) or "",
            required=False if required is None else _bool(required, f"{iw}.required"),
            default=None if default is None else _input_default(type_, default, f"{iw}.default"),
            options=[] if options is None else _string_list(options, f"{iw}.options"),
        )
    return result


def _call_secrets(config: YNode | None, where: str) -> dict[str, WorkflowCallSecret]:
    secrets_node = _mapping(config, where).get("secrets")
    result: dict[str, WorkflowCallSecret] = {}
    for name, (key_node, spec_node) in _mapping(secrets_node, f"{where}.secrets").items.items():
        sw = f"{where}.secrets.{name}"
        _check_id(key_node, name, f"{where}.secrets")
        spec = _mapping(spec_node, sw)
        _check_keys(spec, frozenset({"description", "required"}), sw)
        required = spec.get("required")
        result[name] = WorkflowCallSecret(
            description=_opt_string(spec, "description", sw) or "",
            required=False if required is None else _bool(required, f"{sw}.required"),
        )
    return result


def _call_outputs(config: YNode | None, where: str) -> dict[str, WorkflowCallOutput]:
    outputs_node = _mapping(config, where).get("outputs")
    result: dict[str, WorkflowCallOutput] = {}
    for name, (key_node, spec_node) in _mapping(outputs_node, f"{where}.outputs").items.items():
        ow = f"{where}.outputs.{name}"
        _check_id(key_node, name, f"{where}.outputs")
        spec = _mapping(spec_node, ow)
        _check_keys(spec, frozenset({"description", "value"}), ow)
        if spec.get("value") is None:
            raise _fail("'value' is required", spec, ow)
        result[name] = WorkflowCallOutput(
            value=_string(spec.get("value"), f"{ow}.value"),
            description=_opt_string(spec, "description", ow) or "",
        )
    return result


def _bool(node: YNode, where: str) -> bool:
    if isinstance(node, YScalar) and isinstance(node.value, bool):
        return node.value
    raise _fail("expected a boolean", node, where)


def load_workflow(text: str | bytes, file: str) -> Workflow:
    """Parse and validate a workflow file or a single-job payload."""
    root = load_yaml(text, file)
    if root is None:
        raise WorkflowError(f"{file}: the workflow is empty")
    m = _mapping(root, "workflow")
    _check_keys(m, _WORKFLOW_KEYS, "workflow")
    on = _on(m.get("on"), "on")
    jobs_node = _mapping(m.get("jobs"), "jobs")
    jobs: dict[str, Job] = {}
    for job_id, (key_node, job_node) in jobs_node.items.items():
        _check_id(key_node, job_id, "jobs")
        jobs[job_id] = _job(job_id, job_node, f"jobs.{job_id}")
    return Workflow(
        file=file,
        name=_opt_string(m, "name", "workflow"),
        on={event: to_python(config) for event, config in on.items()},
        dispatch_inputs=_inputs(
            "workflow_dispatch", on.get("workflow_dispatch"), "on.workflow_dispatch"
        ),
        call_inputs=_inputs("workflow_call", on.get("workflow_call"), "on.workflow_call"),
        call_secrets=_call_secrets(on.get("workflow_call"), "on.workflow_call"),
        call_outputs=_call_outputs(on.get("workflow_call"), "on.workflow_call"),
        env=_env(m.get("env"), "env"),
        defaults=_defaults(m.get("defaults"), "defaults"),
        jobs=jobs,
    )


def single_job(workflow: Workflow) -> Job:
    """The one job of a task payload; any other count is an error."""
    if not workflow.jobs:
        raise WorkflowError("no job found")
    if len(workflow.jobs) > 1:
        raise WorkflowError(f"multiple jobs found: [{' '.join(workflow.jobs)}]")
    return next(iter(workflow.jobs.values()))


def load_task_payload(payload: bytes, file: str = "workflow payload") -> tuple[Workflow, str]:
    """The workflow of a task and its only job's id, the matrix combination checked."""
    workflow = load_workflow(payload, file)
    job = single_job(workflow)
    _combination(job)
    return workflow, job.id


# --- actions ---------------------------------------------------------------------------


def _action_runs(node: YNode | None, where: str) -> ActionRuns:
    m = _mapping(node, where)
    using_node = m.get("using")
    using = _string(using_node, f"{where}.using").lower() if using_node is not None else ""
    if using not in RUNS_USING:
        raise _fail(
            f"The runs.using key must be one of: [{', '.join(RUNS_USING)}], got '{using}'",
            using_node or m,
            where,
        )
    args_node = m.get("args")
    args: list[str] = []
    if isinstance(args_node, YSeq):
        args = [_string(item, f"{where}.args[{i}]") for i, item in enumerate(args_node.items)]
    elif args_node is not None:
        raise _fail("expected a list of strings", args_node, f"{where}.args")
    runs = ActionRuns(
        using=using,
        main=_opt_string(m, "main", where),
        pre=_opt_string(m, "pre", where),
        post=_opt_string(m, "post", where),
        pre_if=_opt_string(m, "pre-if", where),
        post_if=_opt_string(m, "post-if", where),
        image=_opt_string(m, "image", where),
        entrypoint=_opt_string(m, "entrypoint", where),
        pre_entrypoint=_opt_string(m, "pre-entrypoint", where),
        post_entrypoint=_opt_string(m, "post-entrypoint", where),
        args=args,
        env=_string_map(m.get("env"), f"{where}.env"),
        steps=_steps(m.get("steps"), f"{where}.steps", composite=True),
    )
    required = {"docker": "image", "composite": "steps"}.get(using, "main")
    if m.get(required) is None:
        raise _fail(f"'{required}' is required for using: {using}", m, where)
    return runs


def load_action(text: str | bytes, file: str) -> ActionMetadata:
    """Parse and validate an ``action.yml``.

    Unknown keys are tolerated here, unlike in workflows: published actions carry
    extra keys that other runners ignore.
    """
    root = load_yaml(text, file)
    if root is None:
        raise WorkflowError(f"{file}: the action metadata is empty")
    m = _mapping(root, "action")
    inputs: dict[str, ActionInput] = {}
    for name, (_, spec_node) in _mapping(m.get("inputs"), "inputs").items.items():
        iw = f"inputs.{name}"
        spec = _mapping(spec_node, iw)
        required = spec.get("required")
        inputs[name] = ActionInput(
            description=_opt_string(spec, "description", iw) or "",
            required=False
            if required is None
            else (
                required.value
                if isinstance(required, YScalar) and isinstance(required.value, bool)
                else _string(required, f"{iw}.required")
            ),
            default=_opt_string(spec, "default", iw),
            deprecation_message=_opt_string(spec, "deprecationMessage", iw),
        )
    outputs: dict[str, ActionOutput] = {}
    for name, (_, spec_node) in _mapping(m.get("outputs"), "outputs").items.items():
        ow = f"outputs.{name}"
        spec = _mapping(spec_node, ow)
        outputs[name] = ActionOutput(
            description=_opt_string(spec, "description", ow) or "",
            value=_opt_string(spec, "value", ow),
        )
    if m.get("runs") is None:
        raise _fail("'runs' is required", m, "action")
    return ActionMetadata(
        file=file,
        runs=_action_runs(m.get("runs"), "runs"),
        name=_opt_string(m, "name", "action") or "",
        description=_opt_string(m, "description", "action") or "",
        author=_opt_string(m, "author", "action") or "",
        inputs=inputs,
        outputs=outputs,
    )


# --- names and keys --------------------------------------------------------------------


def step_display_name(step: Step) -> str:
    """The name Gitea shows for a step: ``name``, else ``Run <first line>``, ``Run <uses>``."""
    if step.name:
        return step.name
    if step.run is not None:
        script = step.run.strip()
        return f"Run {script.splitlines()[0] if script else ''}".rstrip()
    if step.uses:
        return f"Run {step.uses}"
    return f"Run {step.id or ''}".rstrip()


def _action_owner_repo(uses: str) -> tuple[str, str] | None:
    if uses.startswith(("./", "docker://")) or "@" not in uses:
        return None
    parts = uses.split("@", 1)[0].split("/")
    return (parts[0], parts[1]) if len(parts) >= 2 and parts[0] and parts[1] else None


_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def step_keys(steps: Sequence[Step]) -> list[str]:
    """The key of each step (``GITHUB_ACTION``, script file name): ``id``, else generated.

    Run steps get ``__run``, ``__run_2``, …; repository actions ``__<owner>_<repo>`` and,
    when repeated, ``<owner><repo><n>`` with special characters removed; local actions
    ``__self`` and ``docker://`` steps ``__docker`` (repeats add ``_<n>``). Generated keys
    never collide with an explicit id.
    """
    taken = {step.id for step in steps if step.id}
    counts: dict[str, int] = {}
    keys: list[str] = []
    for step in steps:
        if step.id:
            keys.append(step.id)
            continue
        uses = step.uses or ""
        owner_repo = _action_owner_repo(uses) if step.run is None else None
        if step.run is not None:
            base = "__run"
        elif owner_repo is not None:
            base = f"__{_NOT_ID_CHAR.sub('', owner_repo[0])}_{_NOT_ID_CHAR.sub('', owner_repo[1])}"
        else:
            base = "__docker" if uses.startswith("docker://") else "__self"
        while True:
            n = counts.get(base, 0) + 1
            counts[base] = n
            if n == 1:
                key = base
            elif owner_repo is not None:
                key = _NOT_ALNUM.sub("", "".join(owner_repo)) + str(n)
            else:
                key = f"{base}_{n}"
            if key not in taken:
                break
        taken.add(key)
        keys.append(key)
    return keys
