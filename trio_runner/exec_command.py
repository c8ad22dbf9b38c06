"""``trio-runner exec``: run workflows of a local checkout with the daemon's executor.

Planning (which jobs, in which stages, with which matrix legs) lives in
``trio_runner.workflow.planner``; the workflows jobs call (``jobs.<id>.uses``) are
resolved and checked by ``trio_runner.workflow.reusable`` before anything runs. This
module turns the command line into the run's inputs and ``ExecRun`` runs the stages
(jobs of a stage concurrently, matrix legs up to ``max-parallel``), hands each leg to
``JobRun`` with a terminal or JSON sink, and maps the outcome to the exit status: 0 all
good, 1 a job failed, 2 bad input or an invalid workflow (nothing runs), 130 interrupted.
The first Ctrl-C cancels the running jobs gracefully (their ``always()`` steps still
run) and starts nothing new; a second one stops everything at once. Trio and the
executor are imported only when jobs run (or a remote reusable workflow is cloned).

Relative paths given on the command line are relative to the current directory; the
defaults (``.gitea/workflows``, ``.env``) are looked up in ``--directory``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trio_runner.config import Config, load_config, read_env_file
from trio_runner.errors import ConfigError
from trio_runner.executor.runner_env import runner_variables
from trio_runner.labels import Platform
from trio_runner.workflow import planner, reusable
from trio_runner.workflow.expressions import ExpressionError, to_string
from trio_runner.workflow.model import Workflow, WorkflowError
from trio_runner.workflow.reusable_fetch import remote_fetcher

if TYPE_CHECKING:
    from trio_runner.exec_output import ExecOutput

#: ``--image`` value that runs jobs on this machine (act's spelling).
SELF_HOSTED = "-self-hosted"
#: Options whose value may start with a dash (see cli._attach_dash_values).
DASH_VALUES = ("-i", "--image")
DEFAULT_ACTIONS_URL = "https://github.com"
RUNNER_NAME = "trio-runner"


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("-c", "--config", metavar="FILE", help="configuration file (runner.envs, timeouts)")
    add(
        "-W",
        "--workflows",
        metavar="PATH",
        help="workflow file or directory (default: ./.gitea/workflows, else ./.github/workflows)",
    )
    add("--no-recurse", action="store_true", help="do not look into subdirectories of -W")
    add(
        "-j",
        "--job",
        action="append",
        default=[],
        metavar="ID",
        help="run this job (and its needs)",
    )
    add("-E", "--event", help="event name (default: the only event declared, else push)")
    add(
        "--detect-event",
        action="store_true",
        help="with several events declared, use the first one instead of push",
    )
    add("-e", "--eventpath", metavar="FILE", help="JSON file with the event payload")
    add("-C", "--directory", default=".", metavar="DIR", help="the checkout (default: .)")
    add("--env", action="append", default=[], metavar="KEY=VALUE", help="job environment variable")
    add("--env-file", metavar="FILE", help="dotenv file for the job environment (default: .env)")
    add(
        "-s",
        "--secret",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="secret; without a value it is read from the environment (or prompted for)",
    )
    add("--var", action="append", default=[], metavar="NAME=VALUE", help="configuration variable")
    add(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="workflow_dispatch / workflow_call input",
    )
    add(
        "--matrix",
        action="append",
        default=[],
        metavar="KEY:VALUE",
        help="run only the matrix combinations with this value (repeatable)",
    )
    add("-i", "--image", help=f"run every job in this image; {SELF_HOSTED} runs on this machine")
    add(
        "--default-actions-url",
        default=DEFAULT_ACTIONS_URL,
        metavar="URL",
        help=f"where 'uses: owner/repo@ref' actions come from (default: {DEFAULT_ACTIONS_URL})",
    )
    add(
        "--no-skip-checkout",
        action="store_true",
        help="run actions/checkout instead of copying the local directory into the workspace",
    )
    add("--gitea-instance", default="", metavar="URL", help="server_url the jobs see")
    add(
        "--workdir-parent", metavar="DIR", help="host work directory (default: host.workdir_parent)"
    )
    add("-l", "--list", action="store_true", help="list the jobs and their stages, run nothing")
    add("-n", "--dryrun", action="store_true", help="plan and validate, run nothing")
    add("--json", action="store_true", help="machine-readable output, one JSON object per line")


# --- inputs of the run ------------------------------------------------------------------


def _assignments(values: Iterable[str], flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {text!r}: expected NAME=VALUE")
        result[key] = value
    return result


def _secrets(values: Iterable[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not name:
            raise ConfigError("--secret: the name is empty")
        if not sep:
            if name in os.environ:
                value = os.environ[name]
            elif sys.stdin.isatty():
                value = getpass.getpass(f"Value of secret {name}: ")
            else:
                raise ConfigError(f"--secret {name}: not set in the environment")
        secrets[name.upper()] = value
    return secrets


def _event_payload(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        payload = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"--eventpath {path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--eventpath {path}: invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"--eventpath {path}: the event payload must be a JSON object")
    return payload


def _job_env(args: argparse.Namespace, config: Config, directory: Path) -> dict[str, str]:
    """Layer 3 of the job environment (4.5): runner.envs, the env file, --env."""
    env = dict(config.runner.envs)
    env_file = Path(args.env_file) if args.env_file else directory / ".env"
    if args.env_file or env_file.is_file():
        try:
            env.update(read_env_file(env_file))
        except OSError as exc:
            raise ConfigError(f"--env-file {env_file}: cannot read: {exc.strerror}") from None
    env.update(_assignments(args.env, "--env"))
    env = runner_variables(config.runner, env)
    env["ACT_EXEC"] = "true"
    return env


def exec_platform(image: str | None) -> Platform:
    """Where every job of this run goes: ``--image``, else this machine (``-self-hosted``
    asks for it explicitly). A job's own ``container`` still wins (spec 2.3 step 5)."""
    if image is None or image == SELF_HOSTED:
        return Platform(None)
    return Platform(image)


@dataclass
class ExecPlan:
    """Everything decided before the first job starts."""

    directory: Path
    config: Config
    event: str
    workflows: list[Workflow]
    stages: list[list[planner.PlannedJob]]
    github: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    matrix_filters: dict[str, set[str]]
    instance_url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    job_env: dict[str, str] = field(default_factory=dict)
    no_skip_checkout: bool = False
    #: The reusable workflow each calling job runs, nested calls included.
    calls: reusable.Calls = field(default_factory=dict)

    def all_jobs(self) -> list[planner.PlannedJob]:
        """Every job of the run: the selected ones and those of the workflows they call."""
        jobs = [planned for stage in self.stages for planned in stage]
        jobs += [planned for called in self.calls.values() for planned in called.jobs]
        return jobs

    def github_for(self, workflow: Workflow) -> dict[str, Any]:
        """The run's ``github`` context for the jobs of ``workflow``. A workflow_dispatch
        payload carries every input of that workflow, defaults included, as text (GitHub:
        ``github.event.inputs`` is ``inputs`` with booleans as strings)."""
        github = {**self.github, "workflow": workflow.name or workflow.file}
        if self.event == "workflow_dispatch":
            inputs = self.inputs.get(workflow.file, {})
            event = github.get("event")
            github["event"] = {
                **(event if isinstance(event, dict) else {}),
                "inputs": {name: to_string(value) for name, value in inputs.items()},
            }
        return github

    def contexts(
        self,
        planned: planner.PlannedJob,
        needs: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        workflow: Workflow | None = None,
    ) -> dict[str, Any]:
        """What a job's ``if``, ``strategy`` and ``name`` may read. The jobs of a called
        workflow pass its ``inputs`` and the calling ``workflow`` (GitHub's ``github``
        context is the caller's)."""
        top = workflow or planned.workflow
        return {
            "github": self.github_for(top),
            "needs": needs,
            "vars": self.vars,
            "inputs": self.inputs[planned.workflow.file] if inputs is None else inputs,
        }


def prepare(args: argparse.Namespace) -> ExecPlan:
    """Load, select, order and validate; raises ConfigError (exit 2) before anything runs."""
    directory = Path(args.directory)
    if not directory.is_dir():
        raise ConfigError(f"--directory {directory}: not a directory")
    config = load_config(args.config)
    path = Path(args.workflows) if args.workflows else planner.default_workflows_path(directory)
    files = planner.workflow_files(path, recurse=not args.no_recurse)
    if not files:
        raise ConfigError(f"no workflow files (*.yml, *.yaml) found in {path}")
    workflows = planner.load_workflows(files, directory)
    event = planner.detect_event(workflows, args.event, detect=args.detect_event)
    jobs = planner.select_jobs(workflows, event, args.job)
    stages = planner.build_stages(jobs)
    planner.validate_jobs(jobs)
    payload = _event_payload(args.eventpath)
    given = _assignments(args.input, "--input")
    event_inputs = payload.get("inputs") if event == "workflow_dispatch" else None
    if isinstance(event_inputs, dict):
        given = {**event_inputs, **given}
    inputs = {
        workflow.file: planner.resolve_inputs(workflow, event, given)
        for workflow in {planned.workflow.file: planned.workflow for planned in jobs}.values()
    }
    github = planner.exec_github_context(
        event, payload, planner.read_git_info(directory), actor_fallback=getpass.getuser()
    )
    github["gitea_default_actions_url"] = args.default_actions_url
    secrets = _secrets(args.secret)
    fetch = remote_fetcher(
        config,
        args.workdir_parent or config.host.workdir_parent,
        args.default_actions_url,
        args.gitea_instance,
        secrets.get("GITEA_TOKEN") or secrets.get("GITHUB_TOKEN") or "",
    )
    calls = reusable.resolve_calls(jobs, reusable.Repository(directory), fetch)
    return ExecPlan(
        directory=directory,
        config=config,
        event=event,
        workflows=workflows,
        stages=stages,
        github=github,
        inputs=inputs,
        matrix_filters=planner.parse_matrix_filters(args.matrix),
        instance_url=args.gitea_instance,
        secrets=secrets,
        vars=_assignments(args.var, "--var"),
        job_env=_job_env(args, config, directory),
        no_skip_checkout=args.no_skip_checkout,
        calls=calls,
    )


# --- list and dry run -------------------------------------------------------------------


def _called_jobs(plan: ExecPlan, planned: planner.PlannedJob) -> list[planner.PlannedJob]:
    called = plan.calls.get(planned.key)
    return called.jobs if called is not None else []


def _job_rows(
    plan: ExecPlan, planned: planner.PlannedJob, stage: int, caller: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The ``--list`` row of a job, then the rows of the jobs it calls: their id is the
    path of job ids (``call/build``), their name ``<caller name> / <name>`` as GitHub
    shows it, their stage the caller's."""
    name = planned.job.name or planned.job_id
    row: dict[str, Any] = {
        "stage": stage,
        "job_id": f"{caller['job_id']}/{planned.job_id}" if caller else planned.job_id,
        "name": f"{caller['name']} / {name}" if caller else name,
        "workflow": planner.workflow_label(planned.workflow),
        "file": planned.workflow.file,
        "events": list(planned.workflow.on),
        "needs": list(planned.job.needs),
    }
    if planned.job.uses is not None:
        row["uses"] = planned.job.uses
    rows = [row]
    for inner in _called_jobs(plan, planned):
        rows += _job_rows(plan, inner, stage, row)
    return rows


def print_list(plan: ExecPlan, *, as_json: bool) -> None:
    rows = [
        row
        for number, stage in enumerate(plan.stages)
        for planned in stage
        for row in _job_rows(plan, planned, number)
    ]
    if as_json:
        print(json.dumps({"type": "plan", "event": plan.event, "jobs": rows}))
        return
    headers = ("Stage", "Job ID", "Job name", "Workflow name", "Workflow file", "Events")
    table = [
        (str(r["stage"]), r["job_id"], r["name"], r["workflow"], r["file"], ",".join(r["events"]))
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in (headers, *table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _static_leg_names(
    plan: ExecPlan, planned: planner.PlannedJob, inputs: dict[str, Any] | None
) -> list[str] | None:
    """The leg names when the matrix needs nothing from earlier jobs, else None."""
    if planner.has_templates(planned.job.strategy):
        return None
    try:
        contexts = plan.contexts(planned, {}, inputs)
        legs = planner.plan_legs(planned, contexts, plan.matrix_filters).legs
    except (ExpressionError, WorkflowError):
        return None  # a matrix or name reading needs is only known at run time
    return [leg.name for leg in legs]


def _dryrun_stages(
    plan: ExecPlan, stages: list[list[planner.PlannedJob]], caller: str = ""
) -> list[list[dict[str, Any]]]:
    """The stages as ``--dryrun`` shows them; a calling job holds the called stages."""
    result: list[list[dict[str, Any]]] = []
    for stage in stages:
        jobs: list[dict[str, Any]] = []
        for planned in stage:
            label = f"{caller} / {planned.job_id}" if caller else planned.label
            job: dict[str, Any] = {
                "job": label,
                "job_id": planned.job_id,
                "workflow": planner.workflow_label(planned.workflow),
                "needs": list(planned.job.needs),
                # The inputs of a called workflow are known only when it is called.
                "legs": _static_leg_names(plan, planned, {} if caller else None),
            }
            called = plan.calls.get(planned.key)
            if called is not None:
                job["uses"] = called.uses
                job["calls"] = _dryrun_stages(plan, called.stages, label)
            jobs.append(job)
        result.append(jobs)
    return result


def _print_dryrun_stages(stages: list[list[dict[str, Any]]], indent: str) -> int:
    """Print the stages; the number of jobs that would run."""
    count = 0
    for number, stage in enumerate(stages):
        print(f"{indent}Stage {number}:")
        for job in stage:
            needs = f" (needs {', '.join(job['needs'])})" if job["needs"] else ""
            print(f"{indent}  {job['job']}{needs}")
            legs = job["legs"]
            if legs is None:
                print(f"{indent}    matrix evaluated when the job starts")
            elif len(legs) != 1 or legs[0] != job["job_id"]:
                for name in legs:
                    print(f"{indent}    - {name}")
            if "calls" in job:
                print(f"{indent}    uses {job['uses']}")
                count += _print_dryrun_stages(job["calls"], f"{indent}    ")
            else:
                count += 1
    return count


def print_dryrun(plan: ExecPlan, *, as_json: bool) -> None:
    stages = _dryrun_stages(plan, plan.stages)
    if as_json:
        print(json.dumps({"type": "dryrun", "event": plan.event, "stages": stages}))
        return
    print(f"Event: {plan.event}")
    jobs = _print_dryrun_stages(stages, "")
    print(f"Dry run: {jobs} job(s) in {len(stages)} stage(s) would run; nothing was run.")


# --- entry point ------------------------------------------------------------------------


def _output(as_json: bool) -> ExecOutput:
    from trio_runner.exec_output import JsonOutput, TerminalOutput, use_color

    if as_json:
        return JsonOutput(sys.stdout)
    return TerminalOutput(sys.stdout, color=use_color(sys.stdout))


def main(args: argparse.Namespace) -> int:
    platform = exec_platform(args.image)
    plan = prepare(args)
    if args.list:
        print_list(plan, as_json=args.json)
        return 0
    if args.dryrun:
        print_dryrun(plan, as_json=args.json)
        return 0
    workdir_parent = args.workdir_parent or plan.config.host.workdir_parent

    from trio_runner.cli import loading_modules

    # Trio and the executor load only when jobs run; --list and --dryrun do without.
    with loading_modules():
        from trio_runner.exec_run import ExecRun

    run = ExecRun(plan, _output(args.json), workdir_parent, platform)
    return run.start()


__all__: Sequence[str] = ["ExecPlan", "configure", "exec_platform", "main", "prepare"]
