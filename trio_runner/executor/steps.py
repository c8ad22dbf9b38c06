"""Step phases: condition, environment, ``run`` scripts, processes and file commands.

``uses`` steps are resolved and run by ``actions``; this module owns what every phase
shares: the scope a step list runs in (the job, or one composite action), registering
the step in the ``steps`` context, evaluating ``env``/``if``, running a process under
the step timeout and the job's cancellation, processing the file commands, reporting
the outcome, and the post phases and job hooks at the end.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from trio_runner.backends.base import Environment, OutputHandler
from trio_runner.executor.commands import (
    CommandProcessor,
    FileCommandError,
    accept_env,
    error_row,
    group_row,
    is_true,
    parse_key_value_file,
    parse_path_file,
    prepend_paths,
)
from trio_runner.executor.joblog import JobLog
from trio_runner.executor.sink import Conclusion
from trio_runner.masking import Masker
from trio_runner.workflow.contexts import JobPaths, RunnerInfo, default_env
from trio_runner.workflow.expressions import (
    ExpressionError,
    HashFilesHook,
    StatusFunctions,
    calls_hash_files,
    evaluate_condition,
    interpolate,
    render_template,
    to_string,
)
from trio_runner.workflow.model import Step, step_display_name

if TYPE_CHECKING:
    from trio_runner.executor.actions import ActionSteps
    from trio_runner.executor.job import JobRun

#: Shell templates of workflow-execution 3.4: command, script extension, wrapper.
_PWSH_WRAP = (
    "$ErrorActionPreference = 'stop'\n{script}\n"
    "if ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}"
)
SHELLS: dict[str, tuple[str, str, str]] = {
    "bash": ("bash --noprofile --norc -eo pipefail {0}", ".sh", "{script}"),
    "sh": ("sh -e {0}", ".sh", "{script}"),
    "python": ("python {0}", ".py", "{script}"),
    "pwsh": ("pwsh -command \". '{0}'\"", ".ps1", _PWSH_WRAP),
    "powershell": ("powershell -command \". '{0}'\"", ".ps1", _PWSH_WRAP),
}
INVALID_SHELL = (
    "Invalid shell option. Shell must be a valid built-in (bash, sh, cmd, powershell, pwsh) "
    "or a format string containing '{0}'"
)
#: Keys the ``env:`` block of a step's header leaves out (8.5).
_HIDDEN_ENV_PREFIXES = ("GITHUB_", "GITEA_", "RUNNER_", "INPUT_")
_HIDDEN_ENV_KEYS = ("PATH", "HOME", "CI")
#: Names of the file-command files inside ``<R>/workflow`` (2.4).
FILE_COMMANDS = {
    "ENV": "envs.txt",
    "OUTPUT": "outputcmd.txt",
    "STATE": "statecmd.txt",
    "PATH": "pathcmd.txt",
}
MAX_SCRIPT = 21000

_T = TypeVar("_T")


def start_failure(error: OSError) -> str:
    """The error row text for a process that could not be started at all."""
    reason = error.strerror or str(error)
    where = f": '{error.filename}'" if error.filename else ""
    return f"An error occurred trying to start the process: {reason}{where}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StepContext:
    """What every step of one job shares."""

    run: JobRun
    env: Environment
    paths: JobPaths
    github: dict[str, Any]
    runner: RunnerInfo
    base_contexts: dict[str, Any]
    job_env: dict[str, str]
    log: JobLog
    masker: Masker
    debug: bool
    #: Layer 4: values set by earlier steps through GITHUB_ENV.
    exported_env: dict[str, str] = field(default_factory=dict)
    #: GITHUB_PATH additions, most recent first.
    path_additions: list[str] = field(default_factory=list)
    #: Commands found on a PATH value, by (command, PATH). Only hits are kept: a step may
    #: install what an earlier lookup missed.
    found_commands: dict[tuple[str, str], str] = field(default_factory=dict)

    def add_paths(self, additions: list[str]) -> None:
        updated = prepend_paths(self.path_additions, additions)
        if updated != self.path_additions:
            # Lookups under the old PATH values will not be asked again.
            self.found_commands.clear()
        self.path_additions = updated


class StepError(Exception):
    """A step that cannot start; the message is written as the step's error."""


#: Errors an evaluation can raise: bad expressions and bad step values.
EVALUATION_ERRORS = (ExpressionError, StepError)


@dataclass
class PhaseResult:
    outcome: Conclusion
    outputs: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    job_timed_out: bool = False


@dataclass(frozen=True)
class ActionEnv:
    """The action a phase belongs to, as ``github.action_*`` and ``GITHUB_ACTION_*`` say."""

    path: str = ""
    repository: str = ""
    ref: str = ""


class PostPhase(Protocol):
    """A phase to run after the main steps (post of an action, or of a composite)."""

    async def run(self) -> bool:
        """Run it if its condition holds; True when it failed."""
        ...


@dataclass
class Scope:
    """Where a list of steps runs: the job, or one composite action (3.11).

    ``overrides`` replaces contexts for this scope (``secrets``, ``inputs``, ``github``);
    ``env`` lies between the job's env and a step's own (a composite's outer step env);
    ``prefix`` starts the script names of its steps.
    """

    steps: dict[str, dict[str, Any]]
    status: StatusFunctions
    overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    action: ActionEnv = ActionEnv()
    prefix: str = ""
    composite: bool = False
    failed: bool = False
    posts: list[PostPhase] = field(default_factory=list)


class CompositeStatus:
    """Status functions inside a composite action: its own sub-steps decide (5.9)."""

    def __init__(self, run: JobRun, scope: Scope) -> None:
        self._run = run
        self._scope = scope

    def success(self) -> bool:
        return not self._scope.failed and not self._run.control.cancelled

    def failure(self) -> bool:
        return self._scope.failed

    def cancelled(self) -> bool:
        return self._run.control.cancelled

    def always(self) -> bool:
        return True


@dataclass(frozen=True)
class StepCall:
    """One step in its scope: ``key`` is GITHUB_ACTION, ``summary`` its summary file."""

    step: Step
    key: str
    scope: Scope
    summary: str

    @property
    def script_name(self) -> str:
        return f"{self.scope.prefix}{self.key}"


def render_text(
    value: Any, contexts: Mapping[str, Any], *, hash_files: HashFilesHook | None = None
) -> str:
    """A template where a string is required: an array or object from a single segment
    is an error (5.4), not ``Array``/``Object``."""
    if isinstance(value, str):
        return render_template(value, contexts, hash_files=hash_files)
    return to_string(value)


def evaluate_env(
    env: Mapping[str, str] | str,
    contexts: Mapping[str, Any],
    *,
    hash_files: HashFilesHook | None = None,
) -> dict[str, str]:
    """An ``env:`` mapping of templates, or one template yielding a mapping, as strings."""
    if isinstance(env, str):
        value = interpolate(env, contexts, hash_files=hash_files)
        if not isinstance(value, dict):
            raise StepError(f"env must evaluate to a mapping, got {to_string(value)!r}")
        return {str(k): to_string(v) for k, v in value.items()}
    return {k: render_text(v, contexts, hash_files=hash_files) for k, v in env.items()}


Start = Callable[[OutputHandler], Awaitable[int]]


class StepRunner:
    """Runs a job's steps: main phases in order, then the post phases."""

    def __init__(self, ctx: StepContext) -> None:
        # actions builds on this module's types, so it is imported when a job starts.
        from trio_runner.executor.actions import ActionSteps

        self.ctx = ctx
        self.job_scope = Scope(steps=ctx.run.steps_ctx, status=ctx.run)
        self.actions: ActionSteps = ActionSteps(self)
        self._summaries: set[str] = set()
        # File-command files that may not exist or may hold something, so the next
        # phase must get a fresh empty one. A file read back empty after a phase is
        # still in place and empty: most steps write none, so most phases write nothing.
        self._stale_command_files: set[str] = set(FILE_COMMANDS)

    # -- contexts, evaluation and environment -------------------------------------------

    def env_context(self, scope: Scope | None = None) -> dict[str, str]:
        """Layers 2-4 (and a composite's outer step env) as the ``env`` context shows them."""
        extra = scope.env if scope is not None else {}
        return {**self.ctx.job_env, **self.ctx.exported_env, **extra}

    def contexts(
        self, env_ctx: Mapping[str, str], scope: Scope | None = None, call: StepCall | None = None
    ) -> dict[str, Any]:
        """The contexts of an evaluation point; with ``call``, ``github`` also names the
        step (``github.action``) and its file-command files (4.1)."""
        scope = scope or self.job_scope
        base = self.ctx.base_contexts
        job = {**base["job"], "status": self.ctx.run.status.value}
        contexts = {
            **base,
            **scope.overrides,
            "job": job,
            "env": dict(env_ctx),
            "steps": scope.steps,
        }
        if call is not None:
            github = {
                **contexts["github"],
                "action": call.key,
                "env": self.file_path("ENV"),
                "output": self.file_path("OUTPUT"),
                "state": self.file_path("STATE"),
                "path": self.file_path("PATH"),
                "step_summary": call.summary,
            }
            contexts["github"] = contexts["gitea"] = github
        return contexts

    async def evaluate(
        self,
        function: Callable[..., _T],
        value: Any,
        *args: Any,
        condition: bool = False,
        **kw: Any,
    ) -> _T:
        """``function(value, *args, **kw)``; in a worker thread when it may hash files."""
        if not calls_hash_files(value, condition=condition):
            return function(value, *args, **kw)
        environment = self.ctx.env

        def hook(arguments: Sequence[str]) -> str:
            # The evaluation runs in a worker thread; the environment reads its files on Trio.
            return trio.from_thread.run(environment.hash_files, arguments)

        return await trio.to_thread.run_sync(lambda: function(value, *args, hash_files=hook, **kw))

    async def condition(
        self, text: str | None, contexts: Mapping[str, Any], status: StatusFunctions, *,
        default_check: bool = True,
    ) -> bool:  # fmt: skip
        return await self.evaluate(
            evaluate_condition, text, contexts, status=status, default_check=default_check,
            condition=True,
        )  # fmt: skip

    async def template(self, value: Any, contexts: Mapping[str, Any]) -> Any:
        return await self.evaluate(interpolate, value, contexts)

    async def text(self, value: Any, contexts: Mapping[str, Any]) -> str:
        """A template of a string field (``run``, ``shell``, ``with`` values, ...)."""
        return await self.evaluate(render_text, value, contexts)

    async def step_env(
        self, value: Mapping[str, str] | str, contexts: Mapping[str, Any]
    ) -> dict[str, str]:
        return await self.evaluate(evaluate_env, value, contexts)

    def process_env(
        self,
        step_env: Mapping[str, str],
        key: str,
        summary: str,
        scope: Scope | None = None,
        action: ActionEnv | None = None,
    ) -> dict[str, str]:
        """Layers 2-6 plus PATH: the environment a step's process gets."""
        files = {name: self.file_path(name) for name in FILE_COMMANDS}
        files["STEP_SUMMARY"] = summary
        env = {**self.env_context(scope), **step_env}
        ci = env.get("CI", "true")
        action = action or (scope.action if scope else ActionEnv())
        env.update(
            default_env(
                self.ctx.github, self.ctx.runner, self.ctx.paths, files,
                action=key, action_path=action.path,
                action_repository=action.repository, action_ref=action.ref,
            )
        )  # fmt: skip
        env["CI"] = ci
        if self.ctx.path_additions:
            base_path = env.get("PATH") or self.ctx.env.default_path
            env["PATH"] = ":".join([*self.ctx.path_additions, base_path])
        return env

    def file_path(self, name: str) -> str:
        return f"{self.ctx.paths.workflow_dir}/{FILE_COMMANDS[name]}"

    def summary_path(self, index: int) -> str:
        return f"{self.ctx.paths.workflow_dir}/step-summary-{index}.md"

    async def which(self, command: str, path: str) -> str | None:
        """``Environment.which``, remembered for the job while the PATH value stays."""
        found = self.ctx.found_commands.get((command, path))
        if found is None:
            found = await self.ctx.env.which(command, path)
            if found is not None:
                self.ctx.found_commands[command, path] = found
        return found

    async def ensure_summary(self, path: str) -> None:
        """Create a top-level step's summary file once; all its phases append to it."""
        if path not in self._summaries:
            self._summaries.add(path)
            await self.ctx.env.write_file(path, b"")

    # -- main phases --------------------------------------------------------------------

    async def run_main(self, index: int, step: Step, key: str, deadline: float) -> bool:
        """Run one job step's main phase; True when the job's deadline cut it short."""
        run = self.ctx.run
        run.sink.step_started(index, _now())
        call = StepCall(step, key, self.job_scope, self.summary_path(index))
        await self.ensure_summary(call.summary)
        result, conclusion = await self.run_registered(call, deadline)
        if conclusion is Conclusion.FAILURE:
            run.failed = True
        run.sink.step_finished(index, result.outcome, _now())
        return result.job_timed_out

    async def run_registered(
        self, call: StepCall, deadline: float
    ) -> tuple[PhaseResult, Conclusion]:
        """The main phase with its ``steps`` entry and ``continue-on-error`` (3.3)."""
        step, steps = call.step, call.scope.steps
        if step.id:
            steps[step.id] = {
                "outputs": {},
                "outcome": Conclusion.SUCCESS.value,
                "conclusion": Conclusion.SUCCESS.value,
            }
        result = await self._main(call, deadline)
        conclusion = result.outcome
        if result.outcome is Conclusion.FAILURE and await self._continue_on_error(call):
            conclusion = Conclusion.SUCCESS
            await self.ctx.log.write("Failed but continue next step")
        if step.id:
            steps[step.id] = {
                "outputs": result.outputs,
                "outcome": result.outcome.value,
                "conclusion": conclusion.value,
            }
        return result, conclusion

    async def _main(self, call: StepCall, deadline: float) -> PhaseResult:
        log, step, scope = self.ctx.log, call.step, call.scope
        env_ctx = self.env_context(scope)
        try:
            contexts = self.contexts(env_ctx, scope, call)
            step_env = await self.step_env(step.env, contexts)
            contexts["env"] = {**env_ctx, **step_env}
        except EVALUATION_ERRORS as exc:
            await log.write(error_row(str(exc)))
            return PhaseResult(Conclusion.FAILURE)
        try:
            holds = await self.condition(step.if_, contexts, scope.status)
        except ExpressionError as exc:
            await log.write(error_row(f'if-expression "{step.if_}" evaluation failed: {exc}'))
            return PhaseResult(Conclusion.FAILURE)
        if not holds:
            return PhaseResult(Conclusion.SKIPPED)
        try:
            if step.run is None:
                return await self.actions.run_main(call, step_env, contexts, deadline)
            return await self._run_script(call, step_env, contexts, deadline)
        except EVALUATION_ERRORS as exc:
            await log.write(error_row(str(exc)))
            return PhaseResult(Conclusion.FAILURE)

    async def _continue_on_error(self, call: StepCall) -> bool:
        value = call.step.continue_on_error
        if value is None or value is False:
            return False
        if value is True:
            return True
        contexts = self.contexts(self.env_context(call.scope), call.scope, call)
        try:
            return await self.condition(
                str(value), contexts, call.scope.status, default_check=False
            )
        except ExpressionError as exc:
            await self.ctx.log.write(error_row(str(exc)))
            return False

    def still_holds(self, call: StepCall, contexts: dict[str, Any]) -> Callable[[], bool]:
        """Re-evaluates the step's condition when the job is cancelled while it runs."""

        def check() -> bool:
            try:
                return evaluate_condition(call.step.if_, contexts, status=call.scope.status)
            except ExpressionError:
                return False

        return check

    # -- run steps ----------------------------------------------------------------------

    async def _run_script(
        self, call: StepCall, step_env: dict[str, str], contexts: dict[str, Any], deadline: float
    ) -> PhaseResult:
        ctx, step = self.ctx, call.step
        script = await self.text(step.run, contexts)
        if len(script) > MAX_SCRIPT:
            raise StepError(
                f"the script of step '{call.key}' is {len(script)} characters long after "
                f"evaluation; the limit is {MAX_SCRIPT}"
            )
        shell_value = await self._shell(call, contexts)
        env = self.process_env(step_env, call.key, call.summary, call.scope)
        command, ext, wrapper = await self._shell_template(shell_value, env)
        script_path = f"{ctx.paths.workflow_dir}/{call.script_name}{ext}"
        await ctx.env.write_file(script_path, wrapper.format(script=script).encode(), 0o755)
        argv = [part.replace("{0}", script_path) for part in shlex.split(command)]
        cwd = await self._working_directory(call, contexts)
        first = next((line.strip() for line in script.splitlines() if line.strip()), "")
        title = first or step.name or step.id or call.key
        lines = [*script.rstrip("\n").split("\n"), f"shell: {command}"]
        await self.write_header(f"Run {title}", lines, step_env)
        timeout = await self.step_timeout(call, contexts)
        path = env.get("PATH") or ctx.env.default_path
        if "/" not in argv[0] and not await self.which(argv[0], path):
            await ctx.log.write(error_row(f"Cannot find: {argv[0]} in PATH"))
            return PhaseResult(Conclusion.FAILURE)

        def start(output: OutputHandler) -> Awaitable[int]:
            return ctx.env.exec(argv, env=env, cwd=cwd, output=output)

        return await self.execute(
            start, env, self.still_holds(call, contexts), timeout, deadline, step.name or call.key
        )

    async def _shell(self, call: StepCall, contexts: Mapping[str, Any]) -> str:
        if call.step.shell:
            return (await self.text(call.step.shell, contexts)).strip()
        if call.scope.composite:
            return ""
        # Job defaults are templates; workflow defaults are taken literally (3.4).
        job_shell = self.ctx.run.job.defaults.shell
        if job_shell:
            return (await self.text(job_shell, contexts)).strip()
        return (self.ctx.run.request.workflow.defaults.shell or "").strip()

    def _in_job_container(self) -> bool:
        """The job runs in the image of its own ``container:`` key (not a label's)."""
        container = self.ctx.base_contexts["job"].get("container") or {}
        return self.ctx.run.job.container is not None and bool(container.get("id"))

    async def _shell_template(self, shell: str, env: Mapping[str, str]) -> tuple[str, str, str]:
        if not shell:
            if self._in_job_container():
                # GitHub runs `container:` jobs with sh, whatever the image has (3.4).
                return SHELLS["sh"]
            path = env.get("PATH") or self.ctx.env.default_path
            if await self.which("bash", path):
                return ("bash -e {0}", ".sh", "{script}")
            return SHELLS["sh"]
        if shell in SHELLS:
            return SHELLS[shell]
        if "{0}" not in shell:
            raise StepError(INVALID_SHELL)
        return (shell, "", "{script}")

    async def _working_directory(self, call: StepCall, contexts: Mapping[str, Any]) -> str:
        value = call.step.working_directory
        if not value and not call.scope.composite:
            value = (
                self.ctx.run.job.defaults.working_directory
                or self.ctx.run.request.workflow.defaults.working_directory
            )
        if not value:
            return self.ctx.paths.workspace
        path = await self.text(value, contexts)
        if path.startswith("/"):
            return path
        return f"{self.ctx.paths.workspace}/{path}"

    async def step_timeout(self, call: StepCall, contexts: Mapping[str, Any]) -> float | None:
        step = call.step
        if step.timeout_minutes is None:
            return None
        value = await self.template(step.timeout_minutes, contexts)
        try:
            minutes = float(value)
        except (TypeError, ValueError) as exc:
            raise StepError(
                f"timeout-minutes of step '{step.id or step.name or ''}' is not a number: "
                f"{to_string(value)!r}"
            ) from exc
        return minutes * 60.0 if minutes > 0 else None

    async def write_header(self, title: str, lines: list[str], step_env: Mapping[str, str]) -> None:
        """The ``Run …`` group of 8.5: its lines, then the step's own env."""
        rows = [group_row(title), *lines]
        shown = [
            (k, v)
            for k, v in step_env.items()
            if k not in _HIDDEN_ENV_KEYS and not k.startswith(_HIDDEN_ENV_PREFIXES)
        ]
        if shown:
            rows.append("env:")
            for k, v in shown:
                value_lines = v.split("\n")
                rows.append(f"  {k}: {value_lines[0]}")
                rows.extend(f"    {extra}" for extra in value_lines[1:])
        rows.append("::endgroup::")
        await self.ctx.log.write("\n".join(rows))

    # -- one process --------------------------------------------------------------------

    async def execute(
        self,
        start: Start,
        env: Mapping[str, str],
        still_holds: Callable[[], bool],
        limit: float | None,
        deadline: float,
        name: str,
    ) -> PhaseResult:
        """Run one phase's process with its file commands (3.3 steps 4-8).

        ``still_holds`` decides whether the process survives a job cancellation;
        ``name`` is what a step-timeout error calls the step.
        """
        ctx = self.ctx
        await self._reset_command_files()
        processor = CommandProcessor(
            ctx.masker,
            debug=ctx.debug,
            allow_unsecure_commands=is_true(env.get("ACTIONS_ALLOW_UNSECURE_COMMANDS")),
            allow_unsecure_stop_tokens=is_true(
                env.get("ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS")
            ),
        )
        output = ctx.log.output(processor.feed)
        code: int | None = None
        start_error: OSError | None = None

        def on_cancel() -> None:
            if not still_holds():
                cancel_scope.cancel()

        with trio.CancelScope() as cancel_scope, ctx.run.control.on_cancel(on_cancel):
            if ctx.run.control.cancelled:
                on_cancel()
            with (
                trio.move_on_at(deadline) as job_deadline,
                trio.move_on_after(limit if limit is not None else float("inf")) as step_deadline,
            ):
                try:
                    code = await start(output.feed)
                except OSError as exc:
                    # A missing working directory or executable fails the phase, not the job.
                    start_error = exc
            await output.close()
        result = PhaseResult(Conclusion.SUCCESS)
        if start_error is not None:
            await ctx.log.write(error_row(start_failure(start_error)))
            result.outcome = Conclusion.FAILURE
        elif cancel_scope.cancelled_caught:
            result.outcome = Conclusion.CANCELLED
        elif job_deadline.cancelled_caught:
            result.outcome = Conclusion.FAILURE
            result.job_timed_out = True
        elif step_deadline.cancelled_caught:
            assert limit is not None
            await ctx.log.write(
                error_row(f"The action '{name}' has timed out after {limit / 60:g} minutes.")
            )
            result.outcome = Conclusion.FAILURE
        elif code != 0:
            await ctx.log.write(error_row(f"Process completed with exit code {code}."))
            result.outcome = Conclusion.FAILURE
        commands = processor.result
        if commands.failed:
            result.outcome = Conclusion.FAILURE
        ctx.exported_env.update(commands.env)
        ctx.add_paths(commands.path)
        result.outputs.update(commands.outputs)
        result.state.update(commands.state)
        if not await self._file_commands(result):
            result.outcome = Conclusion.FAILURE
        return result

    async def _reset_command_files(self) -> None:
        """Give the coming phase empty file-command files; from here on the phase's
        process may write any of them."""
        for name in FILE_COMMANDS:
            if name in self._stale_command_files:
                await self.ctx.env.write_file(self.file_path(name), b"")
        self._stale_command_files.update(FILE_COMMANDS)

    async def _read_command_file(self, name: str) -> bytes:
        """What the phase wrote to one file; a file the phase removed holds nothing."""
        try:
            data = await self.ctx.env.read_file(self.file_path(name))
        except FileNotFoundError:
            return b""
        if not data:
            self._stale_command_files.discard(name)
        return data

    async def _file_commands(self, result: PhaseResult) -> bool:
        """GITHUB_ENV, GITHUB_STATE, GITHUB_OUTPUT, GITHUB_PATH, in that order (3.3);
        False when one was malformed. As in GitHub's runner, a malformed file does not
        stop the others, and the pairs before its bad line still take effect."""
        ctx = self.ctx
        valid = True

        async def pairs(name: str, command: str) -> dict[str, str]:
            nonlocal valid
            try:
                return parse_key_value_file(await self._read_command_file(name), command)
            except FileCommandError as exc:
                await ctx.log.write("\n".join(exc.rows()))
                valid = False
                return exc.pairs

        exported, refused = accept_env(await pairs("ENV", "env"))
        if refused:
            await ctx.log.write("\n".join(refused))
        ctx.exported_env.update(exported)
        result.state.update(await pairs("STATE", "state"))
        result.outputs.update(await pairs("OUTPUT", "output"))
        ctx.add_paths(parse_path_file(await self._read_command_file("PATH")))
        return valid

    # -- hooks and post phases ----------------------------------------------------------

    async def run_hook(self, path: str, which: str, deadline: float) -> bool:
        """A job hook script (2.9); True when it failed. ``which``: started/completed."""
        ctx = self.ctx
        if path.endswith(".sh"):
            argv = ["bash", "-e", path]
        elif path.endswith(".ps1"):
            argv = ["pwsh", "-command", f". '{path}'"]
        else:
            argv = [path]
        await ctx.log.write(
            f"{group_row(f'Run {path!r}')}\n"
            f"A job {which} hook has been configured by the runner administrator"
        )
        env = self.process_env({}, "", f"{ctx.paths.workflow_dir}/step-summary-hook.md")

        def start(output: OutputHandler) -> Awaitable[int]:
            return ctx.env.exec(argv, env=env, cwd=ctx.paths.workspace, output=output)

        result = await self.execute(start, env, lambda: True, None, deadline, path)
        await ctx.log.write("::endgroup::")
        return result.outcome is not Conclusion.SUCCESS

    async def run_posts(self) -> bool:
        """Run post phases in reverse order; True when one failed. Every one runs."""
        failed = False
        for post in reversed(self.job_scope.posts):
            if await post.run():
                failed = True
        return failed


__all__ = [
    "ActionEnv",
    "CompositeStatus",
    "PhaseResult",
    "PostPhase",
    "Scope",
    "Start",
    "StepCall",
    "StepContext",
    "StepError",
    "StepRunner",
    "evaluate_env",
    "render_text",
    "start_failure",
    "step_display_name",
]
