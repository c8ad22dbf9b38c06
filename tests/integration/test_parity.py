"""The corpus (tests/workflows/corpus) through ``exec`` and through the daemon: same results.

Every workflow whose jobs do not depend on each other runs once through
``trio-runner exec --json`` and once through ``trio-runner start`` against the fake Gitea,
with one task per job and matrix leg shaped as Gitea's single-job payload (workflow-execution
1.2) and the context ``exec`` built for that job (event, sha/ref, repository, actor, run ids,
secrets, vars, inputs). Each job must end with the same result, the same steps (Gitea's names,
statuses) and the same rows per step, up to the few differences that the two modes have by
design, all listed in ``comparable`` below.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from yaml.nodes import MappingNode, Node

from tests.fake_gitea import FakeGitea
from tests.integration.action_repos import git
from tests.integration.runner_process import register_locally, start_runner, write_config
from tests.integration.step_rows import Steps, exec_steps, json_events, same_paths, task_steps
from tests.integration.test_corpus import (
    CORPUS,
    FAKE_GO,
    PULL_REQUEST,
    PUSH,
    go_repos,
    make_repo,
    path_without_go,
)
from tests.integration.test_corpus_actions import NODE_MODULES_VAR
from tests.integration.test_corpus_events import COMMENT, LABELED, WORKFLOW_RUN, tag_push
from tests.integration.test_exec import run_exec
from trio_runner import exec_command
from trio_runner.workflow import planner


@dataclass(frozen=True)
class Case:
    """How test_corpus runs a workflow: extra ``exec`` options, an event, a fake ``go``;
    ``jobs``: the jobs compared (default: every job without needs)."""

    args: tuple[str, ...] = ()
    event: dict[str, Any] | None = None
    go: bool = False
    jobs: tuple[str, ...] = ()


DISPATCH = (
    "--input", "print_tags=true", "--input", "tags=smoke,e2e", "--var", "DEPLOY_REGION=eu-west-1",
)  # fmt: skip
SECRETS = (
    "-s", "API_TOKEN=tok-0123456789", "-s", "SuperSecret=hunter2hunter",
    "-s", "DEPLOY_KEY=-----BEGIN KEY-----\nabcdefghij\n-----END KEY-----",
)  # fmt: skip

#: Every corpus workflow, set up as in test_corpus. Of a workflow with ``needs`` only the
#: jobs without needs are compared: Gitea hands out a dependant job only with the results
#: and outputs of its needs, which exec computes itself while running the whole graph.
CASES = {
    "action-metadata.yml": Case(),
    "background-server.yml": Case(),
    "command-edges.yml": Case(),
    "composite-edge.yml": Case(),
    "composite-failure.yml": Case(),
    "composite-local.yml": Case(),
    "composite-real.yml": Case(),
    "concurrency-permissions.yml": Case(),
    "conditions.yml": Case(jobs=("build", "gated", "never")),
    "container-steps.yml": Case(),
    "continue-on-error.yml": Case(),
    "defaults.yml": Case(),
    "dispatch-inputs.yml": Case(DISPATCH),
    "env-files.yml": Case(),
    "env-levels.yml": Case(),
    "expressions.yml": Case(),
    "fail-fast.yml": Case(),
    "github-context.yml": Case(),
    "go-actions.yml": Case(go=True),
    "hashfiles.yml": Case(),
    "job-outputs.yml": Case(),
    "js-toolkit.yml": Case(NODE_MODULES_VAR),
    "matrix-dynamic.yml": Case(),
    "matrix-exclude.yml": Case(),
    "matrix-include.yml": Case(),
    "matrix-objects.yml": Case(),
    "node-action.yml": Case(),
    "node-ci.yml": Case(),
    "on-list.yml": Case(),
    "on-map.yml": Case(),
    "on-string.yml": Case(),
    "pull-request.yml": Case(event=PULL_REQUEST),
    "push-event.yml": Case(event=PUSH),
    "python-ci.yml": Case(),
    "release.yml": Case(),
    "secrets.yml": Case(SECRETS),
    "shell-errors.yml": Case(),
    "shells.yml": Case(),
    "step-summary.yml": Case(),
    "timeouts.yml": Case(),
    "unsecure-commands.yml": Case(),
    "workflow-commands.yml": Case(),
    "yaml-anchors.yml": Case(),
    "debug-logging.yml": Case(("-s", "ACTIONS_STEP_DEBUG=true")),
    "expr-compare.yml": Case(),
    "gate-jobs.yml": Case(),
    "issue-comment.yml": Case(event=COMMENT),
    "path-filters.yml": Case(event={"ref": "refs/heads/feature/x"}),
    "pr-labels.yml": Case(event=LABELED),
    "scheduled.yml": Case(("-E", "schedule"), event={"schedule": "0 0 * * 0"}),
    "tag-release.yml": Case(event=tag_push("v1.4.0")),
    "token-env.yml": Case(),
    "workflow-run.yml": Case(event=WORKFLOW_RUN),
    "crlf-script.yml": Case(),
    "job-graph.yml": Case(),
    "job-isolation.yml": Case(),
    "matrix-legs.yml": Case(jobs=("ordered", "typed", "one-fails")),
    "shell-templates.yml": Case(),
}

#: Gitea always sends these two (workflow-execution 1.1); exec gets them too, so that the
#: secrets context is the same (their values are masked either way).
GITEA_SECRETS = ("-s", "GITEA_TOKEN=0123456789abcdef", "-s", "GITHUB_TOKEN=0123456789abcdef")

#: invalid-expression.yml: refused by exec before any job runs (exit 2), so there is no job
#: to compare. js-lifecycle.yml: its action acme/lifecycle is a repository the test builds
#: with committed node_modules (test_corpus_actions.lifecycle_repos), which this harness's
#: action host does not serve. context-dumps.yml: it prints whole contexts, whose
#: mode-specific parts differ by design (server URLs from the Gitea instance, the task
#: token, ACT_EXEC in env). matrix-too-big.yml, needs-cycle.yml, needs-unknown.yml: refused
#: by exec before any job runs (exit 2), like invalid-expression.yml.
EXCLUDED = {
    "invalid-expression.yml",
    "js-lifecycle.yml",
    "context-dumps.yml",
    "matrix-too-big.yml",
    "needs-cycle.yml",
    "needs-unknown.yml",
}

#: The only action a corpus job fetches besides acme/gotool: exec replaces it with a copy of
#: the directory (spec 1.5), the daemon runs this stand-in, which copies the same files.
CHECKOUT_ACTION = """\
name: checkout
inputs:
  path:
    default: ""
runs:
  using: composite
  steps:
    - run: mkdir -p "$GITHUB_WORKSPACE/$TARGET" && cp -a "$SOURCE/." "$GITHUB_WORKSPACE/$TARGET"
      shell: bash
      env:
        SOURCE: {source}
        TARGET: ${{{{ inputs.path }}}}
"""


def test_every_corpus_workflow_is_compared_or_excluded() -> None:
    corpus = {path.name for path in CORPUS.glob("*.yml")}
    assert corpus == set(CASES) | EXCLUDED and not set(CASES) & EXCLUDED


def job_options(name: str, case: Case) -> list[str]:
    """``-j`` options for the compared jobs, when some job of ``name`` has needs."""
    jobs = yaml.safe_load((CORPUS / name).read_text())["jobs"]
    if not case.jobs and not any("needs" in job for job in jobs.values()):
        return []
    chosen = case.jobs or [job_id for job_id, job in jobs.items() if "needs" not in job]
    assert all("needs" not in jobs[job_id] for job_id in chosen)
    return [arg for job_id in chosen for arg in ("-j", job_id)]


# --- one task per job leg, as Gitea makes them -------------------------------------------


@dataclass(frozen=True)
class Task:
    label: str  # the exec job label, ``<workflow>/<leg name>``
    payload: str
    runs_on: list[str]
    context: dict[str, Any]


def _node(value: Any) -> Node:
    # JSON is YAML: values keep their type, strings stay strings.
    node = yaml.compose(json.dumps(value))
    assert node is not None
    return node


def _put(mapping: MappingNode, key: str, value: Node) -> None:
    mapping.value = [(k, v) for k, v in mapping.value if k.value != key]
    mapping.value.append((_node(key), value))


def _node_of(text: str) -> MappingNode:
    root = yaml.compose(text)
    assert isinstance(root, MappingNode)
    return root


def _get(mapping: MappingNode, key: str) -> Any:
    return next(v for k, v in mapping.value if k.value == key)


def task_payload(text: str, leg: planner.Leg, runs_on: list[str]) -> str:
    """The single-job workflow Gitea sends for ``leg`` (workflow-execution 1.2): name,
    runs-on, continue-on-error and the matrix combination resolved.

    Edited on the YAML node tree, so every other scalar keeps its source text."""
    root = _node_of(text)
    jobs = _get(root, "jobs")
    jobs.value = [(k, v) for k, v in jobs.value if k.value == leg.job_id]
    job = _get(jobs, leg.job_id)
    _put(job, "name", _node(leg.name))
    _put(job, "runs-on", _node(runs_on))
    if any(k.value == "continue-on-error" for k, _ in job.value):
        _put(job, "continue-on-error", _node(leg.continue_on_error))
    if leg.matrix:
        strategy = _get(job, "strategy")
        _put(strategy, "matrix", _node({k: [v] for k, v in leg.matrix.items()}))
        _put(strategy, "job-index", _node(leg.index))
        _put(strategy, "job-total", _node(leg.total))
    return yaml.serialize(root)


def gitea_tasks(argv: list[str], text: str) -> tuple[exec_command.ExecPlan, list[Task]]:
    """The tasks Gitea would queue for the jobs ``exec argv`` runs, with exec's context."""
    parser = argparse.ArgumentParser()
    exec_command.configure(parser)
    plan = exec_command.prepare(parser.parse_args(argv))
    tasks = []
    for planned in (job for stage in plan.stages for job in stage):
        workflow = planned.workflow
        context = {**plan.github_for(workflow), "workflow": workflow.file}
        legs = planner.plan_legs(planned, plan.contexts(planned, {}), plan.matrix_filters)
        for leg in legs.legs:
            # plan_legs leaves runs-on evaluated to labels, as Gitea does.
            assert not isinstance(leg.job.runs_on, str)
            runs_on = leg.job.runs_on.labels if leg.job.runs_on else []
            label = f"{planner.workflow_label(workflow)}/{leg.name}"
            tasks.append(Task(label, task_payload(text, leg, runs_on), runs_on, context))
    return plan, tasks


def checkout_repos(root: Path, source: Path) -> None:
    """actions/checkout@v4 under ``root`` (a ``file://`` action host)."""
    tree = root.parent / "checkout-src"
    tree.mkdir(parents=True)
    (tree / "action.yml").write_text(CHECKOUT_ACTION.format(source=json.dumps(str(source))))
    git("init", "-q", "-b", "main", cwd=tree)
    git("add", "-A", cwd=tree)
    git("commit", "-q", "-m", "checkout", cwd=tree)
    git("tag", "v4", cwd=tree)
    git("clone", "-q", "--bare", str(tree), str(root / "actions" / "checkout"), cwd=root.parent)


# --- the comparison ------------------------------------------------------------------------


#: A process id a step prints: another process in every run.
PID = re.compile(r"\bpid=[0-9]+\b")
CHECKOUT = "Run actions/checkout@"
TEMPLATE = "${{"


@dataclass(frozen=True)
class Job:
    """One job as the comparison sees it: its result, steps and rows per step."""

    result: str
    names: list[str]
    results: list[str]
    rows: list[list[str]]


def comparable(result: str, names: list[str], steps: Steps, gitea_names: list[str]) -> Job:
    """What must agree between the modes, with the differences they have by design taken
    out; ``gitea_names`` are the step names Gitea made from the payload. The only ones:

    * a step name with a template: Gitea shows it as written, exec interpolates it for the
      terminal (workflow-execution 3.2), so the written form is compared;
    * per-job directories: every job gets a fresh ``<workdir>/<16 hex>/`` (same_paths);
    * a ``uses: actions/checkout`` step: exec copies the local directory instead of running
      the action (1.5), so only its result and header row are compared;
    * process ids a step prints (``pid=<n>``).
    """
    results, step_rows = steps
    # zip_longest: a step missing on one side shows up in the comparison, not as an error.
    shown = [g if TEMPLATE in g else n for n, g in zip_longest(names, gitea_names, fillvalue="")]
    checkout = {i for i, g in enumerate(gitea_names) if g.startswith(CHECKOUT)}
    rows = [
        [PID.sub("pid=<pid>", row) for row in same_paths(step[:1] if i in checkout else step)]
        for i, step in enumerate(step_rows)
    ]
    return Job(result, shown, results, rows)


async def run_daemon(
    gitea: FakeGitea,
    tmp_path: Path,
    tasks: list[Task],
    plan: exec_command.ExecPlan,
    actions_url: str,
) -> dict[str, int]:
    """Queue every task, let one daemon run them; task ids by exec job label."""
    labels = sorted({label for task in tasks for label in task.runs_on})
    register_locally(gitea, tmp_path, [f"{label}:host" for label in labels])
    config = write_config(tmp_path, runner={"capacity": len(tasks)})
    ids = {
        task.label: gitea.queue_task(
            task.payload,
            context={**task.context, "gitea_default_actions_url": actions_url},
            secrets=plan.secrets,
            vars=plan.vars,
            runs_on=task.runs_on,
        )
        for task in tasks
    }
    async with start_runner(tmp_path, config) as runner:
        for task_id in ids.values():
            await gitea.wait_task_final(task_id, within=120)
        runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0, runner.log
    assert gitea.violations == [], gitea.violations
    return ids


@pytest.mark.parametrize(
    ("name", "case"), [pytest.param(n, c, id=n) for n, c in sorted(CASES.items())]
)
async def test_daemon_runs_the_corpus_like_exec(
    name: str, case: Case, gitea: FakeGitea, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    actions_url = f"file://{srv}"
    if case.go:
        tools = tmp_path / "tools"
        tools.mkdir()
        (tools / "go").write_text(FAKE_GO)
        (tools / "go").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools}:{path_without_go()}")
        actions_url = go_repos(tmp_path)
        srv = Path(actions_url.removeprefix("file://"))
    repo = make_repo(tmp_path, name)
    checkout_repos(srv, repo)
    argv = [
        "-C", str(repo), "-W", str(repo / ".github" / "workflows" / name),
        "--image=-self-hosted", "--json", "--default-actions-url", actions_url,
        *case.args, *job_options(name, case), *GITEA_SECRETS,
    ]  # fmt: skip
    if case.event is not None:
        (tmp_path / "event.json").write_text(json.dumps(case.event))
        argv += ["-e", str(tmp_path / "event.json")]
    plan, tasks = gitea_tasks(argv, (CORPUS / name).read_text())
    done = await trio.to_thread.run_sync(
        lambda: run_exec(*argv, workdir=tmp_path / "exec-work", cwd=tmp_path)
    )
    events = json_events(done.stdout)
    summary = {job["job"]: job["result"] for job in events[-1]["jobs"]}
    assert sorted(summary) == sorted(task.label for task in tasks), done.stderr

    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    ids = await run_daemon(gitea, daemon_dir, tasks, plan, actions_url)
    for task in tasks:
        record = gitea.task(ids[task.label])
        assert record.violations == [], (task.label, record.violations)
        assert record.result is not None, task.label
        gitea_names = [step.name for step in record.steps]
        exec_names = [
            e["name"] for e in events if e["type"] == "step_finished" and e["job"] == task.label
        ]
        expected = comparable(
            summary[task.label], exec_names, exec_steps(events, task.label), gitea_names
        )
        got = comparable(record.result.word, gitea_names, task_steps(record), gitea_names)
        assert got == expected, task.label
