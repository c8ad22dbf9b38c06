"""``uses`` steps: resolve, fetch and prepare actions; run node, go, composite and docker ones.

Resolution follows workflow-execution 3.5 (``docker://``, ``./path``, URLs,
``owner/repo[/path]@ref``, ``$/path``); remote actions come from the on-disk action
cache (``action_cache``) and are copied into ``<R>/actions/<sha256>/`` before they run.
Inputs become ``INPUT_*`` variables (3.8); node actions run ``node`` with pre, main and
post phases sharing their ``STATE_*`` (3.9, 2.9); go actions likewise, each phase's file
built with ``go build`` in the action dir first (3.12); composite actions run their steps in a
scope of their own (3.11); docker actions go to the environment's ``ContainerSteps``
(3.10). ``exec`` may replace ``actions/checkout`` by a copy of the local directory (1.5).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shlex
import subprocess
import tarfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import trio

from trio_runner.backends.base import ContainerStep, ContainerSteps, OutputHandler
from trio_runner.config import Config
from trio_runner.errors import RunnerError
from trio_runner.executor.action_cache import (
    ActionFetchError,
    CloneSettings,
    clone_action,
    patch_file,
    url_host,
)
from trio_runner.executor.commands import error_row, group_row, warning_row
from trio_runner.executor.sink import Conclusion
from trio_runner.executor.steps import (
    EVALUATION_ERRORS,
    ActionEnv,
    CompositeStatus,
    PhaseResult,
    Scope,
    Start,
    StepCall,
    StepError,
)
from trio_runner.workflow.expressions import ExpressionError, interpolate, to_string
from trio_runner.workflow.model import (
    ActionMetadata,
    ActionRuns,
    Step,
    WorkflowError,
    load_action,
    step_keys,
)

if TYPE_CHECKING:
    from trio_runner.executor.steps import StepRunner

__all__ = [
    "ActionSteps",
    "DockerRef",
    "LocalRef",
    "RemoteRef",
    "always_copied_checkout",
    "checkout_files",
    "default_actions_host",
    "input_env_name",
    "job_settings",
    "parse_uses",
]

GITHUB = "https://github.com"
_REMOTE = re.compile(r"^([^/@]+)/([^/@]+)(/([^@]*))?@(.+)$")
_URL = re.compile(r"^(https?|ssh)://([^/]+)/(.*)$")
_METADATA_FILES = ("action.yml", "action.yaml")
#: Actions whose ``runs.main``/``pre``/``post`` name files run by a tool on the job PATH.
_SCRIPT_KINDS = ("node", "go")
_RUNTIME_HINTS = {
    "node": "node is required to run JavaScript actions",
    "go": "go is required to build and run Go actions",
}
_CHECKOUT = "actions/checkout@"


def job_settings(config: Config, cache_dir: str = "") -> dict[str, Any]:
    """The JobRequest fields that come from the configuration: actions and hooks (1.4).

    ``cache_dir`` replaces ``host.workdir_parent`` as the action cache (exec's
    ``--workdir-parent``).
    """
    runner = config.runner
    return {
        "action_cache_dir": cache_dir or config.host.workdir_parent,
        "github_mirror": runner.github_mirror,
        "action_shallow_clone": runner.action_shallow_clone,
        "actions_offline": config.cache.offline_mode,
        "patch_actions": runner.patch_actions,
        "insecure": runner.insecure,
        "hook_job_started": runner.hooks.job_started
        or os.environ.get("ACTIONS_RUNNER_HOOK_JOB_STARTED", ""),
        "hook_job_completed": runner.hooks.job_completed
        or os.environ.get("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", ""),
    }


def always_copied_checkout(step: Step) -> bool:
    """exec: an ``actions/checkout`` step that is replaced by a copy of the local directory
    whatever the contexts hold, because it names no other ``repository`` or ``ref`` (1.5)."""
    uses = (step.uses or "").lower()
    return uses.startswith(_CHECKOUT) and not {"repository", "ref"} & step.with_.keys()


# --- uses references (3.5) -------------------------------------------------------------


@dataclass(frozen=True)
class DockerRef:
    image: str


@dataclass(frozen=True)
class LocalRef:
    path: str


@dataclass(frozen=True)
class RemoteRef:
    """``[<base>/]<owner>/<repo>[/<path>]@<ref>``; ``base`` empty means the default host."""

    owner: str
    repo: str
    path: str
    ref: str
    base: str = ""

    @property
    def repository(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def display(self) -> str:
        path = f"/{self.path}" if self.path else ""
        return f"{self.owner}/{self.repo}{path}@{self.ref}"

    def clone_url(self, default_host: str) -> str:
        base = (self.base or default_host).rstrip("/")
        if "://" not in base:
            base = "https://" + base
        return f"{base}/{self.owner}/{self.repo}"


ActionRef = DockerRef | LocalRef | RemoteRef


def _format_error(uses: str) -> StepError:
    return StepError(
        "Expected format {org}/{repo}[/path]@ref or $/{path}. "
        f"Actual '{uses}' Input string was not in a correct format"
    )


def parse_uses(uses: str, *, self_repository: RemoteRef | None = None) -> ActionRef:
    """What an evaluated ``uses`` refers to; ``self_repository`` resolves ``$/`` paths."""
    if uses.startswith("docker://"):
        return DockerRef(uses.removeprefix("docker://"))
    if uses.startswith("./"):
        return LocalRef(uses[2:].strip("/"))
    if uses.startswith("$/"):
        path = PurePosixPath(uses[2:])
        if self_repository is None or "@" in uses or ".." in path.parts:
            raise _format_error(uses)
        return RemoteRef(
            self_repository.owner,
            self_repository.repo,
            str(path).strip("/.") if str(path) != "." else "",
            self_repository.ref,
            self_repository.base,
        )
    base, rest = "", uses
    if url := _URL.match(uses):
        base, rest = f"{url[1]}://{url[2]}", url[3]
    match = _REMOTE.match(rest)
    if match is None:
        raise _format_error(uses)
    return RemoteRef(match[1], match[2], (match[4] or "").strip("/"), match[5], base)


def default_actions_host(context_url: str, github_mirror: str, instance: str) -> str:
    """Where ``owner/repo@ref`` actions come from (9.3)."""
    context_url = context_url.rstrip("/")
    if github_mirror and context_url == GITHUB:
        return github_mirror.rstrip("/")
    return context_url or instance.rstrip("/") or GITHUB


def clone_settings(
    *,
    context_url: str,
    github_mirror: str,
    instance: str,
    token: str,
    shallow: bool,
    offline: bool,
    insecure: bool,
) -> tuple[str, CloneSettings]:
    """The default actions host and how clones are made (3.6): the token goes only to the
    Gitea instance and to a default host of its own, never to GitHub or its mirror; TLS
    checks are skipped only towards the instance, and only when the runner is insecure."""
    default_host = default_actions_host(context_url, github_mirror, instance)
    instance_host = url_host(_with_scheme(instance)) if instance else ""
    auth_hosts = {instance_host} if instance_host else set()
    if context_url and context_url.rstrip("/") != GITHUB:
        auth_hosts.add(url_host(_with_scheme(context_url)))
    auth_hosts.discard("github.com")
    if github_mirror:
        auth_hosts.discard(url_host(_with_scheme(github_mirror)))
    settings = CloneSettings(
        shallow=shallow,
        offline=offline,
        token=token,
        auth_hosts=frozenset(auth_hosts),
        insecure_hosts=frozenset({instance_host} if insecure and instance_host else ()),
    )
    return default_host, settings


def cache_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- inputs (3.8) ----------------------------------------------------------------------


def input_env_name(name: str) -> str:
    """``INPUT_`` + the id with spaces as ``_``, upper-cased (dashes stay)."""
    return "INPUT_" + name.replace(" ", "_").upper()


@dataclass
class Inputs:
    """A step's evaluated inputs: the ``inputs`` context, the env, warnings, shown values."""

    context: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


async def evaluate_inputs(
    runner: StepRunner,
    with_: Mapping[str, str],
    metadata: ActionMetadata | None,
    contexts: dict[str, Any],
) -> Inputs:
    """``with`` values, else declared defaults (evaluated), else empty."""
    result = Inputs()
    given = {key: await runner.text(value, contexts) for key, value in with_.items()}
    declared = metadata.inputs if metadata is not None else {}
    by_lower = {name.lower(): name for name in declared}
    for key, value in given.items():
        result.env[input_env_name(key)] = value
        result.shown[key] = value
        name = by_lower.get(key.lower())
        if name is not None and declared[name].deprecation_message:
            result.warnings.append(
                f"Input '{name}' has been deprecated with message: "
                f"{declared[name].deprecation_message}"
            )
    given_lower = {key.lower(): value for key, value in given.items()}
    for name, spec in declared.items():
        if name.lower() in given_lower:
            value = given_lower[name.lower()]
        elif spec.default is not None:
            value = await runner.text(spec.default, contexts)
            result.shown[name] = value
        else:
            value = ""
        result.context[name] = value
        result.env.setdefault(input_env_name(name), value)
    unexpected = [key for key in given if key.lower() not in by_lower]
    if metadata is not None and unexpected:
        names = ", ".join(f"'{key}'" for key in unexpected)
        valid = ", ".join(f"'{name}'" for name in declared)
        result.warnings.append(f"Unexpected input(s) {names}, valid inputs are [{valid}]")
    return result


# --- prepared actions ------------------------------------------------------------------


@dataclass
class PreparedAction:
    """An action ready to run: its metadata and where its files are."""

    uses: str
    ref: ActionRef
    metadata: ActionMetadata | None
    #: The action dir inside the job environment.
    directory: str = ""
    #: Remote actions: the clone on the runner's machine, its sha, the copy's key.
    source: Path | None = None
    key: str = ""
    sha: str = ""
    copied: bool = False

    @property
    def action_env(self) -> ActionEnv:
        if isinstance(self.ref, RemoteRef):
            return ActionEnv(self.directory, self.ref.repository, self.ref.ref)
        return ActionEnv(self.directory)

    @property
    def kind(self) -> str:
        if self.metadata is None:
            return "docker"
        runs = self.metadata.runs
        return "node" if runs.is_node else runs.using


def _read_metadata(root: Path, subpath: str, where: str) -> ActionMetadata:
    """``action.yml``, ``action.yaml`` or a ``Dockerfile`` in a clone (3.6)."""
    directory = (root / subpath).resolve()
    if not directory.is_relative_to(root.resolve()):
        raise StepError(f"the path '{subpath}' of action '{where}' leaves its repository")
    for name in _METADATA_FILES:
        candidate = directory / name
        if candidate.is_file():
            resolved = candidate.resolve()
            if not resolved.is_relative_to(root.resolve()):
                raise StepError(f"'{name}' of action '{where}' links outside the action")
            return load_action(resolved.read_bytes(), f"{where}/{name}")
    if (directory / "Dockerfile").is_file():
        return ActionMetadata(
            file=f"{where}/Dockerfile", runs=ActionRuns("docker", image="Dockerfile")
        )
    raise StepError(
        f"failed to read 'action.yml' from action '{where}' with path '{subpath}': "
        "no action.yml, action.yaml or Dockerfile"
    )


def _tar_directory(root: Path, names: list[str] | None) -> bytes:
    """A tar of ``root`` (or of ``names`` in it), leaving out ``.git`` of actions."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if names is None:
            for entry in sorted(root.iterdir()):
                if entry.name not in (".git", ".gitignore"):
                    archive.add(entry, arcname=entry.name)
        else:
            for name in names:
                path = root / name
                if path.is_symlink() or path.exists():
                    archive.add(path, arcname=name, recursive=path.is_dir() and name == ".git")
    return buffer.getvalue()


def checkout_files(directory: Path) -> list[str] | None:
    """Files of a checkout honouring ``.gitignore`` (plus ``.git``); None: take all."""
    if not (directory / ".git").exists():
        return None
    done = subprocess.run(
        [
            "git",
            "-C",
            str(directory),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    names = [name for name in done.stdout.decode(errors="surrogateescape").split("\0") if name]
    return [".git", *names]


# --- the action steps of one job -------------------------------------------------------


class ActionSteps:
    """Resolves, prepares and runs the ``uses`` steps of one job."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self.ctx = runner.ctx
        request = runner.ctx.run.request
        self.request = request
        self.prepared: dict[str, PreparedAction] = {}
        #: STATE_* of each action step, by script name, from its earlier phases.
        self.states: dict[str, dict[str, str]] = {}
        self.default_host, self.settings = clone_settings(
            context_url=str(request.task_context.get("gitea_default_actions_url") or ""),
            github_mirror=request.github_mirror,
            instance=request.instance_url,
            token=str(runner.ctx.github.get("token") or ""),
            shallow=request.action_shallow_clone,
            offline=request.actions_offline,
            insecure=request.insecure,
        )
        self.cache_dir = Path(request.action_cache_dir or "~/.cache/act").expanduser()

    # -- resolution and download (phase 6) ------------------------------------------------

    def _self_repository(self, scope: Scope) -> RemoteRef | None:
        github = scope.overrides.get("github", self.ctx.github)
        repository = str(github.get("action_repository") or github.get("repository") or "")
        ref = str(github.get("action_ref") or github.get("sha") or "")
        owner, _, repo = repository.partition("/")
        if not owner or not repo or not ref:
            return None
        return RemoteRef(owner, repo, "", ref, str(self.ctx.github.get("server_url") or ""))

    async def prepare_all(self, steps: list[Step], contexts: dict[str, Any]) -> bool:
        """Download every top-level remote action before the first step; True on failure."""
        remote: list[tuple[str, RemoteRef]] = []
        for step in steps:
            if step.uses is None:
                continue
            try:
                uses = await self.runner.text(step.uses, contexts)
                if self._skips_checkout(uses, step, contexts):
                    continue
                ref = parse_uses(uses, self_repository=self._self_repository(self.runner.job_scope))
            except EVALUATION_ERRORS:
                continue  # the step reports the problem when it runs
            if isinstance(ref, RemoteRef):
                remote.append((uses, ref))
        if not remote:
            return False
        await self.ctx.log.write("Prepare all required actions")
        failed = False
        for uses, ref in remote:
            try:
                await self._prepare_remote(uses, ref)
            except (ActionFetchError, StepError, WorkflowError) as exc:
                await self.ctx.log.write(error_row(str(exc)))
                failed = True
        return failed

    async def resolve(self, uses: str, scope: Scope) -> PreparedAction:
        """The prepared action for an evaluated ``uses`` (local ones are read anew)."""
        ref = parse_uses(uses, self_repository=self._self_repository(scope))
        if isinstance(ref, DockerRef):
            return PreparedAction(uses, ref, None)
        if isinstance(ref, LocalRef):
            return await self._prepare_local(uses, ref)
        return await self._prepare_remote(uses, ref)

    async def _prepare_local(self, uses: str, ref: LocalRef) -> PreparedAction:
        directory = f"{self.ctx.paths.workspace}/{ref.path}".rstrip("/")
        env = self.ctx.env
        for name in _METADATA_FILES:
            try:
                text = await env.read_file(f"{directory}/{name}")
            except OSError:
                continue
            return PreparedAction(uses, ref, load_action(text, f"{uses}/{name}"), directory)
        try:
            await env.read_file(f"{directory}/Dockerfile")
        except OSError:
            raise StepError(
                f"failed to read 'action.yml' from action '{uses}' with path '{ref.path}': "
                "no action.yml, action.yaml or Dockerfile (is the repository checked out?)"
            ) from None
        runs = ActionRuns("docker", image="Dockerfile")
        return PreparedAction(
            uses, ref, ActionMetadata(file=f"{uses}/Dockerfile", runs=runs), directory
        )

    async def _prepare_remote(self, uses: str, ref: RemoteRef) -> PreparedAction:
        key = cache_key(uses if not uses.startswith("$/") else f"{ref.base}/{ref.display}")
        if (known := self.prepared.get(key)) is not None:
            return known
        metadata: list[ActionMetadata] = []
        warnings: list[str] = []
        patch = self.request.patch_actions

        def inspect(root: Path) -> None:
            found = _read_metadata(root, ref.path, ref.display)
            metadata.append(found)
            if patch and found.runs.is_node:
                for script in (found.runs.pre, found.runs.main, found.runs.post):
                    if script:
                        patch_file(root / ref.path, script, warnings.append)

        url = ref.clone_url(self.default_host)
        try:
            fetched = await clone_action(
                self.cache_dir / key, url, ref.ref, self.settings,
                redact=self.ctx.masker.mask, after_checkout=inspect,
            )  # fmt: skip
        except ActionFetchError as exc:
            raise ActionFetchError(
                f"Unable to fetch action '{ref.display}' from {url}: {exc}"
            ) from None
        await self.ctx.log.write(f"Download action repository '{ref.display}' (SHA:{fetched.sha})")
        for text in warnings:
            await self.ctx.log.write(warning_row(text))
        base = f"{self.ctx.paths.runner_dir}/actions/{key}"
        prepared = PreparedAction(
            uses,
            ref,
            metadata[0],
            f"{base}/{ref.path}" if ref.path else base,
            source=fetched.directory,
            key=key,
            sha=fetched.sha,
        )
        self.prepared[key] = prepared
        if metadata[0].runs.using == "composite":
            await self._prepare_nested(metadata[0].runs.steps)
        return prepared

    async def _prepare_nested(self, steps: list[Step]) -> None:
        """Remote actions a composite action uses, when their ``uses`` is literal."""
        for step in steps:
            if step.uses is None or "${{" in step.uses:
                continue
            ref = (
                parse_uses(step.uses, self_repository=None)
                if not step.uses.startswith("$/")
                else None
            )
            if isinstance(ref, RemoteRef):
                await self._prepare_remote(step.uses, ref)

    async def _copy_in(self, prepared: PreparedAction) -> None:
        """Copy a remote action's repository into ``<R>/actions/<key>/`` once per job."""
        if prepared.copied or prepared.source is None:
            return
        target = f"{self.ctx.paths.runner_dir}/actions/{prepared.key}"
        data = await trio.to_thread.run_sync(_tar_directory, prepared.source, None)
        await self.extract(data, target)
        prepared.copied = True

    async def extract(self, archive: bytes, target: str) -> None:
        """Unpack a tar archive into a directory of the job environment."""
        env = self.ctx.env
        tar_path = f"{self.ctx.paths.runner_dir}/copy-{secrets.token_hex(6)}.tar"
        await env.write_file(tar_path, archive)
        messages: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            messages.append(chunk)

        script = 'mkdir -p "$1" && tar -xf "$2" -C "$1"; status=$?; rm -f "$2"; exit $status'
        code = await env.exec(
            ["sh", "-c", script, "sh", target, tar_path], env={}, cwd="/", output=collect
        )
        if code != 0:
            text = b"".join(messages).decode(errors="replace").strip()
            raise StepError(f"unable to copy files to {target}: {text}")

    # -- pre phases (phase 7) -----------------------------------------------------------

    async def run_pres(self, steps: list[Step], keys: list[str], deadline: float) -> bool:
        """Pre phases of the downloaded actions, in step order; True when one failed."""
        failed = False
        scope = self.runner.job_scope
        for index, (step, key) in enumerate(zip(steps, keys, strict=True)):
            if step.uses is None:
                continue
            call = StepCall(step, key, scope, self.runner.summary_path(index))
            if await self._pre(call, deadline):
                failed = True
        return failed

    async def _pre(self, call: StepCall, deadline: float) -> bool:
        contexts = self.runner.contexts(self.runner.env_context(call.scope), call.scope, call)
        try:
            uses = await self.runner.text(call.step.uses, contexts)
            ref = parse_uses(uses, self_repository=self._self_repository(call.scope))
        except EVALUATION_ERRORS:
            return False
        if not isinstance(ref, RemoteRef):
            return False
        key = cache_key(uses if not uses.startswith("$/") else f"{ref.base}/{ref.display}")
        prepared = self.prepared.get(key)
        if prepared is None or prepared.metadata is None:
            return False
        runs = prepared.metadata.runs
        if prepared.kind == "composite":
            return await self._composite_pres(call, prepared, deadline)
        if prepared.kind not in _SCRIPT_KINDS or not runs.pre:
            return False
        await self.runner.ensure_summary(call.summary)
        try:
            step_env = await self.runner.step_env(call.step.env, contexts)
            contexts["env"] = {**contexts["env"], **step_env}
            inputs = await evaluate_inputs(
                self.runner, call.step.with_, prepared.metadata, contexts
            )
            holds = await self._phase_condition(runs.pre_if, contexts, prepared, inputs)
        except EVALUATION_ERRORS as exc:
            await self.ctx.log.write(error_row(str(exc)))
            return True
        if not holds:
            return False
        await self.ctx.log.write(f"{group_row(f'Pre Run {uses}')}\n::endgroup::")
        result = await self._script(
            call, prepared, runs.pre, step_env, inputs, deadline, lambda: True
        )
        return result.outcome is Conclusion.FAILURE

    async def _composite_pres(
        self, call: StepCall, prepared: PreparedAction, deadline: float
    ) -> bool:
        assert prepared.metadata is not None
        scope = self._composite_scope(call, prepared, {}, {})
        failed = False
        sub_steps = prepared.metadata.runs.steps
        for sub, key in zip(sub_steps, step_keys(sub_steps), strict=True):
            if sub.uses is not None and await self._pre(
                StepCall(sub, key, scope, call.summary), deadline
            ):
                failed = True
        return failed

    async def _phase_condition(
        self,
        condition: str | None,
        contexts: dict[str, Any],
        prepared: PreparedAction,
        inputs: Inputs,
    ) -> bool:
        """``pre-if``/``post-if``: default ``always()``, no default status check (2.9)."""
        contexts = {**contexts, "inputs": inputs.context}
        return await self.runner.condition(
            condition or "always()", contexts, self.ctx.run, default_check=False
        )

    # -- main phase ---------------------------------------------------------------------

    def _skips_checkout(self, uses: str, step: Step, contexts: dict[str, Any]) -> bool:
        """exec: ``actions/checkout`` of this repository and ref is replaced by a copy."""
        if not self.request.checkout_source or not uses.lower().startswith(_CHECKOUT):
            return False
        github = self.ctx.github
        try:
            repository = to_string(interpolate(step.with_.get("repository", ""), contexts))
            ref = to_string(interpolate(step.with_.get("ref", ""), contexts))
        except ExpressionError:
            return False
        return repository in ("", github.get("repository")) and ref in ("", github.get("ref"))

    async def run_main(
        self, call: StepCall, step_env: dict[str, str], contexts: dict[str, Any], deadline: float
    ) -> PhaseResult:
        step = call.step
        assert step.uses is not None
        uses = await self.runner.text(step.uses, contexts)
        if call.scope is self.runner.job_scope and self._skips_checkout(uses, step, contexts):
            return await self._copy_checkout(call, uses, contexts)
        try:
            prepared = await self.resolve(uses, call.scope)
        except (ActionFetchError, WorkflowError) as exc:
            raise StepError(str(exc)) from None
        inputs = await evaluate_inputs(self.runner, step.with_, prepared.metadata, contexts)
        shown = [f"  {name}: {value}" for name, value in sorted(inputs.shown.items())]
        await self.runner.write_header(f"Run {uses}", ["with:", *shown] if shown else [], step_env)
        for text in inputs.warnings:
            await self.ctx.log.write(warning_row(text))
        kind = prepared.kind
        if kind in _SCRIPT_KINDS:
            assert prepared.metadata is not None and prepared.metadata.runs.main
            result = await self._script(
                call, prepared, prepared.metadata.runs.main, step_env, inputs, deadline,
                self.runner.still_holds(call, contexts),
                await self.runner.step_timeout(call, contexts),
            )  # fmt: skip
        elif kind == "composite":
            result = await self._composite(call, prepared, step_env, inputs, deadline)
        else:
            result = await self._docker(
                call, prepared, step_env, inputs, contexts, deadline, "main"
            )
        self._register_post(call, prepared, step_env, inputs)
        return result

    async def _script(
        self,
        call: StepCall,
        prepared: PreparedAction,
        script: str,
        step_env: dict[str, str],
        inputs: Inputs,
        deadline: float,
        still_holds: Callable[[], bool],
        limit: float | None = None,
    ) -> PhaseResult:
        """One phase of a node (3.9) or go (3.12) action; ``script`` is its main/pre/post.

        Go actions are built first, in the action dir: ``go build -o <script>.out
        <script>``; then the binary runs like a node script, from the workspace.
        """
        runner, env_ = self.runner, self.ctx.env
        await self._copy_in(prepared)
        state = self.states.setdefault(call.script_name, {})
        layer = {**step_env, **inputs.env, **{f"STATE_{k}": v for k, v in state.items()}}
        action = ActionEnv("", *_repository_and_ref(prepared))
        env = runner.process_env(layer, call.key, call.summary, call.scope, action)
        path = env.get("PATH") or env_.default_path
        tool = prepared.kind
        if not await runner.which(tool, path):
            await self.ctx.log.write(
                "\n".join(
                    [error_row(f"Cannot find: {tool} in PATH"), error_row(_RUNTIME_HINTS[tool])]
                )
            )
            return PhaseResult(Conclusion.FAILURE)
        name = call.step.name or call.key

        def process(argv: list[str], cwd: str) -> Start:
            return lambda output: env_.exec(argv, env=env, cwd=cwd, output=output)

        directory = prepared.directory
        if tool == "go":
            binary = f"{script}.out"
            build = process(["go", "build", "-o", binary, script], directory)
            built = await runner.execute(build, env, still_holds, limit, deadline, name)
            if built.outcome is not Conclusion.SUCCESS:
                await self.ctx.log.write(
                    error_row(f"Unable to build '{script}' of the Go action '{prepared.uses}'")
                )
                return built
            argv = [f"{directory}/{binary}"]
        else:
            argv = ["node", f"{directory}/{script}"]
        result = await runner.execute(
            process(argv, self.ctx.paths.workspace), env, still_holds, limit, deadline, name
        )
        state.update(result.state)
        return result

    # -- composite actions (3.11) -------------------------------------------------------

    def _composite_scope(
        self,
        call: StepCall,
        prepared: PreparedAction,
        step_env: dict[str, str],
        inputs: dict[str, str],
    ) -> Scope:
        action = prepared.action_env
        github = {
            **call.scope.overrides.get("github", self.ctx.github),
            "action_path": action.path,
            "action_repository": action.repository,
            "action_ref": action.ref,
        }
        outer = {**call.scope.env, **step_env}
        scope = Scope(
            steps={},
            status=self.ctx.run,
            overrides={"secrets": {}, "inputs": inputs, "github": github, "gitea": github},
            env={k: v for k, v in outer.items() if not k.startswith("INPUT_")},
            action=action,
            prefix=f"{call.script_name}-composite-",
            composite=True,
        )
        scope.status = CompositeStatus(self.ctx.run, scope)
        return scope

    async def _composite(
        self,
        call: StepCall,
        prepared: PreparedAction,
        step_env: dict[str, str],
        inputs: Inputs,
        deadline: float,
    ) -> PhaseResult:
        assert prepared.metadata is not None
        await self._copy_in(prepared)
        scope = self._composite_scope(call, prepared, step_env, inputs.context)
        sub_steps = prepared.metadata.runs.steps
        result = PhaseResult(Conclusion.SUCCESS)
        for sub, key in zip(sub_steps, step_keys(sub_steps), strict=True):
            sub_result, conclusion = await self.runner.run_registered(
                StepCall(sub, key, scope, call.summary), deadline
            )
            if conclusion is Conclusion.FAILURE:
                scope.failed = True
            if sub_result.job_timed_out:
                result.job_timed_out = True
                break
        contexts = self.runner.contexts(self.runner.env_context(scope), scope)
        for name, output in prepared.metadata.outputs.items():
            if output.value is None:
                continue
            try:
                result.outputs[name] = await self.runner.text(output.value, contexts)
            except ExpressionError as exc:
                await self.ctx.log.write(error_row(f"outputs.{name}: {exc}"))
                scope.failed = True
        if scope.posts:
            call.scope.posts.append(_CompositePost(scope))
        if scope.failed:
            result.outcome = Conclusion.FAILURE
        return result

    # -- docker actions (3.10): the environment's ContainerSteps ----------------------------

    async def _docker(
        self,
        call: StepCall,
        prepared: PreparedAction,
        step_env: dict[str, str],
        inputs: Inputs,
        contexts: dict[str, Any],
        deadline: float,
        phase: str,
    ) -> PhaseResult:
        env_ = self.ctx.env
        if not isinstance(env_, ContainerSteps):
            raise StepError(
                f"'{prepared.uses}' is a docker action; this job environment cannot run containers"
            )
        spec = await self._container_step(call, prepared, step_env, inputs, contexts, phase)

        def start(output: OutputHandler) -> Awaitable[int]:
            return env_.run_container_step(spec, output=output)

        still_holds = self.runner.still_holds(call, contexts) if phase == "main" else (lambda: True)
        timeout = await self.runner.step_timeout(call, contexts) if phase == "main" else None
        try:
            result = await self.runner.execute(
                start, spec.env, still_holds, timeout, deadline, call.step.name or call.key
            )
        except RunnerError as exc:
            # No engine answered, or it refused the image or the container.
            raise StepError(
                f"'{prepared.uses}' is a docker action and could not run: {exc}"
            ) from None
        self.states.setdefault(call.script_name, {}).update(result.state)
        return result

    async def _container_step(
        self,
        call: StepCall,
        prepared: PreparedAction,
        step_env: dict[str, str],
        inputs: Inputs,
        contexts: dict[str, Any],
        phase: str,
    ) -> ContainerStep:
        runner, with_ = self.runner, inputs.shown
        action_contexts = {**contexts, "inputs": inputs.context}
        runs = prepared.metadata.runs if prepared.metadata is not None else None
        entry: list[str] | None = None
        if phase == "main" and with_.get("entrypoint"):
            entry = [with_["entrypoint"]]
        elif runs is not None:
            raw = {
                "main": runs.entrypoint,
                "pre": runs.pre_entrypoint,
                "post": runs.post_entrypoint,
            }[phase]
            if raw:
                entry = shlex.split(await runner.text(raw, action_contexts))
        if with_.get("args"):
            args = shlex.split(with_["args"])
        elif runs is not None:
            args = [await runner.text(arg, action_contexts) for arg in runs.args]
        else:
            args = []
        runs_env = await runner.step_env(runs.env, action_contexts) if runs is not None else {}
        state = self.states.get(call.script_name, {})
        layer = {
            **step_env,
            **inputs.env,
            **runs_env,
            **{f"STATE_{k}": v for k, v in state.items()},
        }
        action = ActionEnv("", *_repository_and_ref(prepared))
        env = runner.process_env(layer, call.key, call.summary, call.scope, action)
        if isinstance(prepared.ref, DockerRef):
            return ContainerStep(
                call.key, env, image=prepared.ref.image, entrypoint=entry, args=args
            )
        assert runs is not None and runs.image
        if runs.image.startswith("docker://"):
            return ContainerStep(
                call.key,
                env,
                image=runs.image.removeprefix("docker://"),
                entrypoint=entry,
                args=args,
            )
        return self._build_step(call.key, env, prepared, runs.image, entry, args)

    def _build_step(
        self,
        key: str,
        env: dict[str, str],
        prepared: PreparedAction,
        dockerfile: str,
        entry: list[str] | None,
        args: list[str],
    ) -> ContainerStep:
        ref = prepared.ref
        if isinstance(ref, RemoteRef) and prepared.source is not None:
            context_dir = (prepared.source / ref.path / dockerfile).parent
            name = f"{prepared.key}/{ref.path}" if ref.path else prepared.key
            local = True
        else:
            path = ref.path if isinstance(ref, LocalRef) else ""
            repository = str(self.ctx.github.get("repository") or "")
            digest = hashlib.sha256(f"{repository}\0{path}".encode()).hexdigest()[:12]
            name = f"{repository}/{path}-{digest}"
            context_dir = Path(f"{prepared.directory}/{dockerfile}").parent
            local = False
        tag = "act-" + re.sub(r"[^A-Za-z0-9]", "-", name).lower() + "-dockeraction:latest"
        return ContainerStep(
            key, env, dockerfile=f"{context_dir}/{PurePosixPath(dockerfile).name}",
            build_context=str(context_dir), context_is_local=local, tag=tag,
            entrypoint=entry, args=args,
        )  # fmt: skip

    # -- post phases (2.9) --------------------------------------------------------------

    def _register_post(
        self, call: StepCall, prepared: PreparedAction, step_env: dict[str, str], inputs: Inputs
    ) -> None:
        runs = prepared.metadata.runs if prepared.metadata is not None else None
        if runs is None:
            return
        if (prepared.kind in _SCRIPT_KINDS and runs.post) or (
            prepared.kind == "docker" and runs.post_entrypoint
        ):
            call.scope.posts.append(_ActionPost(self, call, prepared, step_env, inputs))

    async def run_post(
        self, call: StepCall, prepared: PreparedAction, step_env: dict[str, str], inputs: Inputs
    ) -> bool:
        assert prepared.metadata is not None
        runs = prepared.metadata.runs
        contexts = self.runner.contexts(
            {**self.runner.env_context(call.scope), **step_env}, call.scope, call
        )
        try:
            holds = await self._phase_condition(runs.post_if, contexts, prepared, inputs)
        except ExpressionError as exc:
            await self.ctx.log.write(
                error_row(f'post-if "{runs.post_if}" evaluation failed: {exc}')
            )
            return True
        if not holds:
            return False
        await self.ctx.log.write(f"{group_row(f'Post Run {prepared.uses}')}\n::endgroup::")
        deadline = trio.current_time() + _POST_BUDGET
        try:
            if prepared.kind in _SCRIPT_KINDS:
                assert runs.post
                result = await self._script(
                    call, prepared, runs.post, step_env, inputs, deadline, lambda: True
                )
            else:
                result = await self._docker(
                    call, prepared, step_env, inputs, contexts, deadline, "post"
                )
        except EVALUATION_ERRORS as exc:
            await self.ctx.log.write(error_row(str(exc)))
            return True
        return result.outcome is not Conclusion.SUCCESS

    # -- exec: checkout skip (1.5) ------------------------------------------------------

    async def _copy_checkout(
        self, call: StepCall, uses: str, contexts: dict[str, Any]
    ) -> PhaseResult:
        source = Path(self.request.checkout_source)
        path = await self.runner.text(call.step.with_.get("path", ""), contexts)
        target = (
            f"{self.ctx.paths.workspace}/{path}".rstrip("/") if path else self.ctx.paths.workspace
        )
        await self.runner.write_header(f"Run {uses}", [], {})
        await self.ctx.log.write(
            f"Skipping {uses}: copying the local directory {source} to {target}"
        )

        def archive() -> bytes:
            return _tar_directory(source, checkout_files(source))

        await self.extract(await trio.to_thread.run_sync(archive), target)
        self.ctx.exported_env["ACT_SKIP_CHECKOUT"] = "true"
        return PhaseResult(Conclusion.SUCCESS)


#: A post phase's own budget; the job's cleanup budget bounds all of them.
_POST_BUDGET = 5 * 60.0


@dataclass
class _ActionPost:
    actions: ActionSteps
    call: StepCall
    prepared: PreparedAction
    step_env: dict[str, str]
    inputs: Inputs

    async def run(self) -> bool:
        return await self.actions.run_post(self.call, self.prepared, self.step_env, self.inputs)


@dataclass
class _CompositePost:
    """The post phase of a composite action: its sub-steps' posts, reverse order."""

    scope: Scope

    async def run(self) -> bool:
        failed = False
        for post in reversed(self.scope.posts):
            if await post.run():
                failed = True
        return failed


def _repository_and_ref(prepared: PreparedAction) -> tuple[str, str]:
    if isinstance(prepared.ref, RemoteRef):
        return prepared.ref.repository, prepared.ref.ref
    return "", ""


def _with_scheme(url: str) -> str:
    return url if "://" in url else "https://" + url
