"""The main phase of each step: condition, environment, ``run`` scripts, file commands.

``uses`` steps are resolved and run by ``actions``; this module owns what every phase
shares: registering the step in the ``steps`` context, evaluating ``env``/``if``,
running a process under the step timeout and the job's cancellation, processing the
file commands and reporting the outcome.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from trio_runner.backends.base import Environment
from trio_runner.executor.commands import (
    CommandProcessor,
    FileCommandError,
    accept_env,
    error_row,
    group_row,
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
    evaluate_condition,
    interpolate,
    to_string,
)
from trio_runner.workflow.model import Step, step_display_name

if TYPE_CHECKING:
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
#: Keys the ``env:`` block of a run step's header leaves out (8.5).
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

    def add_paths(self, additions: list[str]) -> None:
        self.path_additions = prepend_paths(self.path_additions, additions)


class StepError(Exception):
    """A step that cannot start; the message is written as the step's error."""


@dataclass
class PhaseResult:
    outcome: Conclusion
    outputs: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    job_timed_out: bool = False


def evaluate_env(env: Mapping[str, str] | str, contexts: Mapping[str, Any]) -> dict[str, str]:
    """An ``env:`` mapping of templates, or one template yielding a mapping, as strings."""
    if isinstance(env, str):
        value = interpolate(env, contexts)
        if not isinstance(value, dict):
            raise StepError(f"env must evaluate to a mapping, got {to_string(value)!r}")
        return {str(k): to_string(v) for k, v in value.items()}
    return {k: to_string(interpolate(v, contexts)) for k, v in env.items()}


class StepRunner:
    """Runs the main phases of a job's steps and, at the end, their post phases."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.run_count = 0

    # -- contexts and environment -------------------------------------------------------

    def env_context(self) -> dict[str, str]:
        """Layers 2-4 as the ``env`` context shows them."""
        return {**self.ctx.job_env, **self.ctx.exported_env}

    def contexts(self, env_ctx: Mapping[str, str]) -> dict[str, Any]:
        base = self.ctx.base_contexts
        job = {**base["job"], "status": self.ctx.run.status.value}
        return {**base, "job": job, "env": dict(env_ctx)}

    def process_env(self, step_env: Mapping[str, str], key: str) -> dict[str, str]:
        """Layers 2-6 plus PATH: the environment a step's process gets."""
        files = {name: self.file_path(name) for name in FILE_COMMANDS}
        files["STEP_SUMMARY"] = f"{self.ctx.paths.workflow_dir}/step-summary-{key}.md"
        env = {**self.env_context(), **step_env}
        ci = env.get("CI", "true")
        env.update(default_env(self.ctx.github, self.ctx.runner, self.ctx.paths, files, action=key))
        env["CI"] = ci
        if self.ctx.path_additions:
            base_path = env.get("PATH") or self.ctx.env.default_path
            env["PATH"] = ":".join([*self.ctx.path_additions, base_path])
        return env

    def file_path(self, name: str) -> str:
        return f"{self.ctx.paths.workflow_dir}/{FILE_COMMANDS[name]}"

    # -- main phase ---------------------------------------------------------------------

    async def run_main(self, index: int, step: Step, key: str, deadline: float) -> bool:
        """Run one step's main phase; True when the job's deadline cut it short."""
        run = self.ctx.run
        run.sink.step_started(index, _now())
        if step.id:
            run.steps_ctx[step.id] = {
                "outputs": {},
                "outcome": Conclusion.SUCCESS.value,
                "conclusion": Conclusion.SUCCESS.value,
            }
        result = await self._main(step, key, deadline)
        conclusion = result.outcome
        if result.outcome is Conclusion.FAILURE:
            if await self._continue_on_error(step):
                conclusion = Conclusion.SUCCESS
                await self.ctx.log.write("Failed but continue next step")
            else:
                run.failed = True
        if step.id:
            run.steps_ctx[step.id] = {
                "outputs": result.outputs,
                "outcome": result.outcome.value,
                "conclusion": conclusion.value,
            }
        run.sink.step_finished(index, result.outcome, _now())
        return result.job_timed_out

    async def _main(self, step: Step, key: str, deadline: float) -> PhaseResult:
        log = self.ctx.log
        env_ctx = self.env_context()
        try:
            contexts = self.contexts(env_ctx)
            step_env = evaluate_env(step.env, contexts)
            contexts["env"] = {**env_ctx, **step_env}
        except (ExpressionError, StepError) as exc:
            await log.write(error_row(str(exc)))
            return PhaseResult(Conclusion.FAILURE)
        try:
            holds = evaluate_condition(step.if_, contexts, status=self.ctx.run)
        except ExpressionError as exc:
            await log.write(error_row(f'if-expression "{step.if_}" evaluation failed: {exc}'))
            return PhaseResult(Conclusion.FAILURE)
        if not holds:
            return PhaseResult(Conclusion.SKIPPED)
        if step.run is None:
            await log.write(error_row(f"actions are not supported yet: {step.uses}"))
            return PhaseResult(Conclusion.FAILURE)
        try:
            return await self._run_script(step, key, step_env, contexts, deadline)
        except (ExpressionError, StepError) as exc:
            await log.write(error_row(str(exc)))
            return PhaseResult(Conclusion.FAILURE)

    async def _continue_on_error(self, step: Step) -> bool:
        value = step.continue_on_error
        if value is None or value is False:
            return False
        if value is True:
            return True
        contexts = self.contexts(self.env_context())
        try:
            return evaluate_condition(
                str(value), contexts, status=self.ctx.run, default_check=False
            )
        except ExpressionError as exc:
            await self.ctx.log.write(error_row(str(exc)))
            return False

    # -- run steps ----------------------------------------------------------------------

    async def _run_script(
        self,
        step: Step,
        key: str,
        step_env: dict[str, str],
        contexts: dict[str, Any],
        deadline: float,
    ) -> PhaseResult:
        ctx = self.ctx
        script = to_string(interpolate(step.run, contexts))
        if len(script) > MAX_SCRIPT:
            raise StepError(
                f"the script of step '{key}' is {len(script)} characters long after "
                f"evaluation; the limit is {MAX_SCRIPT}"
            )
        shell_value = self._shell(step, contexts)
        env = self.process_env(step_env, key)
        command, ext, wrapper = await self._shell_template(shell_value, env)
        script_path = f"{ctx.paths.workflow_dir}/{key}{ext}"
        await ctx.env.write_file(script_path, wrapper.format(script=script).encode(), 0o755)
        argv = [part.replace("{0}", script_path) for part in shlex.split(command)]
        cwd = self._working_directory(step, contexts)
        await self._write_header(step, key, script, command, step_env)
        timeout = self._step_timeout(step, contexts)
        return await self._exec(step, key, argv, env, cwd, timeout, deadline, contexts)

    def _shell(self, step: Step, contexts: Mapping[str, Any]) -> str:
        if step.shell:
            return to_string(interpolate(step.shell, contexts)).strip()
        # Job defaults are templates; workflow defaults are taken literally (3.4).
        job_shell = self.ctx.run.job.defaults.shell
        if job_shell:
            return to_string(interpolate(job_shell, contexts)).strip()
        return (self.ctx.run.request.workflow.defaults.shell or "").strip()

    async def _shell_template(self, shell: str, env: Mapping[str, str]) -> tuple[str, str, str]:
        if not shell:
            path = env.get("PATH") or self.ctx.env.default_path
            if await self.ctx.env.which("bash", path):
                return ("bash -e {0}", ".sh", "{script}")
            return SHELLS["sh"]
        if shell in SHELLS:
            return SHELLS[shell]
        if "{0}" not in shell:
            raise StepError(INVALID_SHELL)
        return (shell, "", "{script}")

    def _working_directory(self, step: Step, contexts: Mapping[str, Any]) -> str:
        value = (
            step.working_directory
            or self.ctx.run.job.defaults.working_directory
            or self.ctx.run.request.workflow.defaults.working_directory
        )
        if not value:
            return self.ctx.paths.workspace
        path = to_string(interpolate(value, contexts))
        if path.startswith("/"):
            return path
        return f"{self.ctx.paths.workspace}/{path}"

    def _step_timeout(self, step: Step, contexts: Mapping[str, Any]) -> float | None:
        if step.timeout_minutes is None:
            return None
        value = interpolate(step.timeout_minutes, contexts)
        try:
            minutes = float(value)
        except (TypeError, ValueError) as exc:
            raise StepError(
                f"timeout-minutes of step '{step.id or step.name or ''}' is not a number: "
                f"{to_string(value)!r}"
            ) from exc
        return minutes * 60.0 if minutes > 0 else None

    async def _write_header(
        self, step: Step, key: str, script: str, command: str, step_env: Mapping[str, str]
    ) -> None:
        first = next((line.strip() for line in script.splitlines() if line.strip()), "")
        title = first or step.name or step.id or key
        lines = [group_row(f"Run {title}"), *script.rstrip("\n").split("\n"), f"shell: {command}"]
        shown = [
            (k, v)
            for k, v in step_env.items()
            if k not in _HIDDEN_ENV_KEYS and not k.startswith(_HIDDEN_ENV_PREFIXES)
        ]
        if shown:
            lines.append("env:")
            for k, v in shown:
                value_lines = v.split("\n")
                lines.append(f"  {k}: {value_lines[0]}")
                lines.extend(f"    {extra}" for extra in value_lines[1:])
        lines.append("::endgroup::")
        await self.ctx.log.write("\n".join(lines))

    async def _exec(
        self,
        step: Step,
        key: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        timeout: float | None,
        deadline: float,
        contexts: dict[str, Any],
    ) -> PhaseResult:
        ctx = self.ctx
        for name in FILE_COMMANDS:
            await ctx.env.write_file(self.file_path(name), b"")
        path = env.get("PATH") or ctx.env.default_path
        if "/" not in argv[0] and not await ctx.env.which(argv[0], path):
            await ctx.log.write(error_row(f"Cannot find: {argv[0]} in PATH"))
            return PhaseResult(Conclusion.FAILURE)
        processor = CommandProcessor(ctx.masker, debug=ctx.debug)
        output = ctx.log.output(processor.feed)
        code: int | None = None
        with (
            trio.CancelScope() as cancel_scope,
            ctx.run.control.on_cancel(lambda: self._on_job_cancel(step, contexts, cancel_scope)),
        ):
            if ctx.run.control.cancelled:
                self._on_job_cancel(step, contexts, cancel_scope)
            with (
                trio.move_on_at(deadline) as job_deadline,
                trio.move_on_after(
                    timeout if timeout is not None else float("inf")
                ) as step_deadline,
            ):
                code = await ctx.env.exec(argv, env=env, cwd=cwd, output=output.feed)
            await output.close()
        result = PhaseResult(Conclusion.SUCCESS)
        if cancel_scope.cancelled_caught:
            result.outcome = Conclusion.CANCELLED
        elif job_deadline.cancelled_caught:
            result.outcome = Conclusion.FAILURE
            result.job_timed_out = True
        elif step_deadline.cancelled_caught:
            assert timeout is not None
            name = step.name or key
            await ctx.log.write(
                error_row(f"The action '{name}' has timed out after {timeout / 60:g} minutes.")
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
        try:
            await self._file_commands(result)
        except FileCommandError as exc:
            await ctx.log.write("\n".join(exc.rows()))
            result.outcome = Conclusion.FAILURE
        return result

    def _on_job_cancel(self, step: Step, contexts: dict[str, Any], scope: trio.CancelScope) -> None:
        """Re-evaluate the running step's condition; stop it unless it still holds."""
        try:
            holds = evaluate_condition(step.if_, contexts, status=self.ctx.run)
        except ExpressionError:
            holds = False
        if not holds:
            scope.cancel()

    async def _file_commands(self, result: PhaseResult) -> None:
        """GITHUB_ENV, GITHUB_STATE, GITHUB_OUTPUT, GITHUB_PATH, in that order (3.3)."""
        ctx = self.ctx
        read = ctx.env.read_file
        exported, refused = accept_env(
            parse_key_value_file(await read(self.file_path("ENV")), "env")
        )
        if refused:
            await ctx.log.write("\n".join(refused))
        ctx.exported_env.update(exported)
        result.state.update(parse_key_value_file(await read(self.file_path("STATE")), "state"))
        result.outputs.update(
            parse_key_value_file(await read(self.file_path("OUTPUT")), "output")
        )
        ctx.add_paths(parse_path_file(await read(self.file_path("PATH"))))

    # -- post phases --------------------------------------------------------------------

    async def run_posts(self) -> bool:
        """Run post phases in reverse order; True when one failed."""
        return False




__all__ = ["StepContext", "StepRunner", "step_display_name"]
