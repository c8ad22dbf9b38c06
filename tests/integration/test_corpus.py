"""Realistic workflows (tests/workflows/corpus) through ``trio-runner exec -i -self-hosted``.

Each workflow is modelled on real-world CI files and on the examples of GitHub's workflow
documentation. It runs in a fresh git repository (the files of corpus/repo committed on
``main`` with an ``origin`` on github.com) and the expectations come from GitHub's
documented behaviour or from spec/workflow-execution.md, never from what the runner
happens to print. ``--json`` output is read, so rows are checked as the runner produced
them (before terminal rendering).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.action_repos import git
from tests.integration.action_repos import make_repo as make_action_repo
from tests.integration.test_exec import run_exec

CORPUS = Path(__file__).resolve().parent.parent / "workflows" / "corpus"
REMOTE = "https://github.com/octo-org/octo-repo.git"


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    stderr: str
    repo: Path
    work: Path

    def rows(self, job: str | None = None) -> list[str]:
        """Row contents, of one job label (``workflow/job``, legs by prefix) or of all."""
        return [
            e["content"]
            for e in self.events
            if e["type"] == "row" and (job is None or e["job"].startswith(job))
        ]

    def step_rows(self, job: str, step: int | None) -> list[str]:
        return [
            e["content"]
            for e in self.events
            if e["type"] == "row" and e["job"] == job and e["step"] == step
        ]

    @property
    def jobs(self) -> dict[str, str]:
        """Job (leg) label -> result, as in the final summary."""
        summary = self.events[-1]
        assert summary["type"] == "summary", self.events[-5:]
        return {job["job"]: job["result"] for job in summary["jobs"]}

    def steps(self, job: str) -> list[str]:
        return [
            e["result"] for e in self.events if e["type"] == "step_finished" and e["job"] == job
        ]

    def output(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events) + self.stderr


def make_repo(root: Path, workflow: str) -> Path:
    """A git repository holding corpus/repo and ``workflow`` under .github/workflows."""
    repo = root / "repo"
    shutil.copytree(CORPUS / "repo", repo)
    target = repo / ".github" / "workflows"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORPUS / workflow, target / workflow)
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.name", "Mona Lisa", cwd=repo)
    git("remote", "add", "origin", REMOTE, cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "corpus", cwd=repo)
    return repo


def run_corpus(tmp_path: Path, workflow: str, *args: str, event: Any = None) -> Run:
    repo = make_repo(tmp_path, workflow)
    extra: list[str] = []
    if event is not None:
        path = tmp_path / "event.json"
        path.write_text(json.dumps(event))
        extra = ["-e", str(path)]
    work = tmp_path / "work"
    done = run_exec(
        "-C", str(repo), "-W", str(repo / ".github" / "workflows" / workflow),
        "-i", "-self-hosted", "--json", *extra, *args,
        workdir=work,
    )  # fmt: skip
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Run(done.returncode, events, done.stderr, repo, work)


def head(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo)


def contains_in_order(rows: Sequence[str], expected: Sequence[str]) -> bool:
    positions = iter(range(len(rows)))
    return all(any(rows[i] == line for i in positions) for line in expected)


def hash_files(root: Path, *files: str) -> str:
    """hashFiles() of spec 5.8 for files given in walk order."""
    outer = hashlib.sha256()
    for name in files:
        outer.update(hashlib.sha256((root / name).read_bytes()).digest())
    return outer.hexdigest()


# --- shells, defaults, environment ------------------------------------------------------


def test_shells_and_custom_templates(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "shells.yml")
    rows = run.rows("Shells/shells")
    assert run.code == 0, run.output()
    # Unspecified shell: `bash -e {0}`, no pipefail; `shell: bash` adds pipefail (3.4).
    assert "shell: bash -e {0}" in run.step_rows("Shells/shells", 0)
    assert "default shell survived a failing pipe" in rows
    assert "shell: bash --noprofile --norc -eo pipefail {0}" in run.step_rows("Shells/shells", 1)
    assert "must not print" not in rows and "must not print either" not in rows
    assert "custom shell started" in rows
    assert "sh says __run_2.sh" in rows  # script named after the step key (3.2)
    assert "python 3 in Shells" in rows
    assert "perl got the script" in rows
    # Every {0} is replaced by the script path (10, row 2).
    zero = next(r for r in rows if r.startswith("zero "))
    one = next(r for r in rows if r.startswith("one "))
    assert zero.removeprefix("zero ") == one.removeprefix("one ") != ""
    assert "pipefail=failure custom=failure" in rows
    assert run.steps("Shells/shells") == ["success", "failure", "failure", *["success"] * 5]


def test_defaults_run_shell_and_working_directory(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "defaults.yml")
    wf, job, missing = (
        "Defaults/workflow-defaults",
        "Defaults/job-defaults",
        "Defaults/missing-directory",
    )
    assert run.code == 1, run.output()
    assert run.jobs == {wf: "success", job: "success", missing: "failure"}
    rows = run.rows(wf)
    assert "building in scripts with first" in rows
    assert "shell: bash --noprofile --norc -eo pipefail {0}" in run.step_rows(wf, 1)
    assert "cwd=scripts" in rows and "cwd=app" in rows
    assert "python cwd=scripts" in rows  # defaults.run.working-directory still applies
    assert "job cwd=docs files=index.md" in run.rows(job)
    assert "shell: sh -e {0}" in run.step_rows(job, 1)
    assert "in runner temp" in run.rows(job)
    # A missing working directory fails the step, and only the step (3.4).
    assert run.steps(missing) == ["failure", "success"]
    assert any(r.startswith("##[error]") and "scripts" in r for r in run.step_rows(missing, 0))
    assert "must not run" not in run.rows(missing)
    assert "missing directory failed the step" in run.rows(missing)


def test_env_layers_and_precedence(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "env-levels.yml")
    rows = run.rows()
    assert run.code == 0, run.output()
    assert "Hello Mona. Today is Monday!" in rows
    assert "greeting=step repo=octo-org/octo-repo from=Monday" in rows
    assert "ctx=job-Hello day=Monday" in rows
    # GITHUB_*/RUNNER_* ignore user env; CI may be set; defaults not in `env` (4.5).
    assert "repo=octo-org/octo-repo os=Linux ci=custom ctx=[]" in rows
    assert "upper=job mixed=Hello" in rows


def test_environment_files(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "env-files.yml")
    job = "Environment files/files"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    assert contains_in_order(rows, ["yellow", "seen=yellow"])
    assert "answer=42" in rows
    assert contains_in_order(
        rows, ["notes lines=3", "note: line one", "note: ", "note: line three"]
    )
    assert "winner=second empty=[] equals=a=b=c" in rows
    assert "tool from b" in rows  # the last GITHUB_PATH line is searched first
    assert "py=snake none=[]" in rows
    assert "##[error]Invalid format 'not a valid line'" in run.step_rows(job, 10)
    assert "broken=failure/success" in rows
    assert run.steps(job)[10] == "failure" and run.jobs == {job: "success"}


# --- matrix, needs, conditions ---------------------------------------------------------


def matrix_lines(run: Run, prefix: str) -> list[str]:
    return sorted({r for r in run.rows() if r.startswith(prefix)})


def test_matrix_include_as_documented(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-include.yml")
    assert run.code == 0, run.output()
    # The documented result of GitHub's include example (Using a matrix).
    assert matrix_lines(run, "combo ") == sorted(
        [
            "combo fruit=apple animal=cat color=pink shape=circle",
            "combo fruit=apple animal=dog color=green shape=circle",
            "combo fruit=pear animal=cat color=pink shape=",
            "combo fruit=pear animal=dog color=green shape=",
            "combo fruit=banana animal= color= shape=",
            "combo fruit=banana animal=cat color= shape=",
        ]
    )
    assert len(run.jobs) == 6 and set(run.jobs.values()) == {"success"}


def test_matrix_exclude_strategy_and_job_name(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-exclude.yml")
    legs = matrix_lines(run, "leg ")
    assert run.code == 0, run.output()
    assert len(legs) == 9  # 12 combinations, 3 excluded
    assert not any("macos-latest/12/production" in leg for leg in legs)
    assert not any("windows-latest/16/" in leg for leg in legs)
    assert sorted(int(leg.split()[2].split("/")[0]) for leg in legs) == list(range(9))
    assert all(leg.endswith("/9 fail-fast=false max=2") for leg in legs)
    # A name with matrix expressions is the whole display name.
    assert "Matrix exclude/Test node 14 on windows-latest (staging)" in run.jobs


def test_dynamic_matrix_from_job_outputs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-dynamic.yml")
    assert run.code == 0, run.output()
    assert matrix_lines(run, "color=") == ["color=blue", "color=green", "color=red"]
    assert matrix_lines(run, "build ") == ["build bar in Release", "build foo in Debug"]
    assert len(run.jobs) == 6


def test_job_outputs_and_needs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "job-outputs.yml")
    assert run.code == 0, run.output()
    assert "hello world" in run.rows("Passing information between jobs/job2")
    # Empty outputs are not sent (2.10).
    assert "keys=success empty=[]" in run.rows()
    assert '{"job1":"success","out":"hello","job2":"success"}' in run.rows()


def test_job_and_step_conditions(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "conditions.yml")
    assert run.code == 1, run.output()
    assert run.jobs == {
        "Conditions/build": "failure",
        "Conditions/on-failure": "success",
        "Conditions/on-success": "skipped",
        "Conditions/report": "success",
        "Conditions/gated": "success",
        "Conditions/never": "skipped",
    }
    build = run.rows("Conditions/build")
    assert "##[error]Process completed with exit code 3." in build
    assert [
        r for r in build if r in ("failure() is true", "always() is true", "not cancelled")
    ] == ["failure() is true", "always() is true", "not cancelled"]
    assert "must not run" not in run.rows() and "must not run either" not in build
    assert "never, the job has failed" not in build
    assert run.steps("Conditions/build") == [
        "success", "failure", "skipped", "success", "success", "skipped", "success", "skipped",
    ]  # fmt: skip
    assert "build failed, notifying" in run.rows("Conditions/on-failure")
    report = run.rows("Conditions/report")
    assert "build=failure on-success=skipped" in report
    assert "only when the build failed" in report and "something was skipped" in report
    assert "gated job ran" in run.rows("Conditions/gated")


def test_continue_on_error_outcome_and_conclusion(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "continue-on-error.yml")
    assert run.code == 0, run.output()
    assert set(run.jobs.values()) == {"success"} and len(run.jobs) == 3
    rows = run.rows()
    assert rows.count("outcome=failure conclusion=success job=success") == 3
    assert rows.count("success() after a covered failure") == 3
    assert rows.count("expr=success/success") == 2
    assert rows.count("expr=failure/success") == 1
    # The reported step result is the outcome (3.3 step 9).
    assert run.steps("Continue on error/experiment (true, 21)")[0] == "failure"


def test_fail_fast_off_runs_every_leg(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "fail-fast.yml")
    assert run.code == 1, run.output()
    assert run.jobs == {
        "Fail fast off/test (1)": "success",
        "Fail fast off/test (2)": "failure",
        "Fail fast off/test (3)": "success",
        "Fail fast off/after": "success",
    }
    assert "test=failure" in run.rows("Fail fast off/after")


def test_step_and_job_timeouts(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "timeouts.yml")
    step, job = "Timeouts/step-timeout", "Timeouts/job-timeout"
    assert run.code == 1, run.output()
    assert run.jobs == {step: "failure", job: "failure"}
    rows = run.rows(step)
    assert "##[error]The action 'Slow integration test' has timed out after 0.02 minutes." in rows
    assert "must not finish" not in rows
    assert (
        "##[error]The action 'timeout from an expression' has timed out after 0.01 minutes." in rows
    )
    assert "slow=failure/success expr=failure" in rows
    assert run.steps(step) == ["failure", "failure", "success"]
    jrows = run.rows(job)
    assert "must not run" not in jrows
    assert "always after timeout, job=failure" in jrows
    assert run.steps(job) == ["success", "failure", "skipped", "success"]


# --- workflow commands, masking, secrets, vars, inputs ---------------------------------


def test_workflow_commands(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "workflow-commands.yml")
    job = "Workflow commands/commands"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # Annotations fold their location into the row (8.4); debug is hidden without debug.
    assert "::debug::Set the Octocat variable" not in rows
    assert "::notice::app.js:1:5: Missing semicolon" in rows
    assert "::warning::app.js:1:5: Style: Missing semicolon" in rows
    assert "::error::app.js:1:5: Missing semicolon" in rows
    assert "::error::Build failed: Compilation%0Aerror" in rows
    assert contains_in_order(run.step_rows(job, 1)[-3:], ["::group::My title", "Inside group"])
    # add-mask: the command row is dropped and the value is masked from then on.
    assert "the value is ***" in rows and "later ***" in rows and "name=***" in rows
    assert not any("octo-1-generated-value" in r for r in rows)
    assert "name=Mona The Octocat" not in rows
    assert not any(r.startswith("::add-mask::") for r in rows)
    # stop-commands: lines in between are printed unchanged, the markers are dropped.
    stop = run.step_rows(job, 5)
    assert [row.split(",")[0] for row in stop[-3:]] == [
        "::warning:: This is a warning message",
        "::warning:: This will NOT be rendered as a warning",
        "::warning:: This is a warning again",
    ]
    assert "legacy=old-style setenv=failure sneaky=[]" in rows
    assert any("`set-env` command is disabled" in r for r in run.step_rows(job, 7))
    # Leading whitespace and any case are accepted (6.1).
    assert "::warning::indented warning" in rows and "value ***" in rows


def test_secrets_are_masked(tmp_path: Path) -> None:
    key = "-----BEGIN KEY-----\nabcdefghij\n-----END KEY-----"
    run = run_corpus(
        tmp_path, "secrets.yml",
        "-s", "API_TOKEN=tok-0123456789", "-s", "SuperSecret=hunter2hunter",
        "-s", f"DEPLOY_KEY={key}",
    )  # fmt: skip
    text = "\n".join(run.rows())
    assert run.code == 0, run.output()
    for secret in (
        "tok-0123456789",
        "hunter2hunter",
        "abcdefghij",
        "BEGIN KEY",
        "aHVudGVyMmh1bnRlcg",
    ):
        assert secret not in text
    rows = run.rows("Secrets/secret-handling")
    assert "The secret is ***" in rows and "token via job env: ***" in rows
    assert "base64: ***" in rows  # the base64 form is masked too (7)
    assert "second line alone: ***" in rows
    assert "token present, missing=false" in rows
    assert "inline *** end" in rows
    assert "API_TOKEN,DEPLOY_KEY,SUPERSECRET" in rows  # only the given secrets (4.2)
    # A job output that carries a secret is not passed on (2.10).
    assert "##[warning]Skip output 'leaked' since it may contain secret." in rows
    assert "leaked=[]" in run.rows("Secrets/dependant")


def test_dispatch_inputs_and_vars(tmp_path: Path) -> None:
    run = run_corpus(
        tmp_path, "dispatch-inputs.yml",
        "--input", "print_tags=true", "--input", "tags=smoke,e2e",
        "--var", "DEPLOY_REGION=eu-west-1",
    )  # fmt: skip
    rows = run.rows("Manual run/print-tag")
    assert run.code == 0, run.output()
    assert "The tags are smoke,e2e" in rows
    assert "typed=true as-string=true" in rows
    assert "target=staging replicas=2 more=true" in rows
    assert "region=eu-west-1 missing=[] case=eu-west-1" in rows
    assert "event=workflow_dispatch ref=refs/heads/main actor=Mona Lisa" in rows


def test_dispatch_event_inputs_hold_defaults(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "dispatch-inputs.yml", "--input", "print_tags=true")
    assert "level=warning event-level=warning" in run.rows("Manual run/print-tag")


def test_dispatch_job_if_false_skips(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "dispatch-inputs.yml", "--input", "print_tags=false")
    assert run.code == 0, run.output()
    assert run.jobs == {"Manual run/print-tag": "skipped"}


def test_unsecure_commands_opt_in_and_node_options(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "unsecure-commands.yml")
    rows = run.rows()
    assert run.code == 0, run.output()
    assert "var=legacy value" in rows and "legacy tool" in rows
    assert "##[error]Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command." in rows
    assert any(r.startswith("node_options=[] ") for r in rows)


def test_shell_errors(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "shell-errors.yml")
    job = "Shell errors/errors"
    assert run.code == 0, run.output()
    assert run.step_rows(job, 0)[0].startswith("##[error]Invalid shell option.")
    assert "##[error]Cannot find: fish in PATH" in run.step_rows(job, 1)
    assert "##[error]Process completed with exit code 127." in run.step_rows(job, 2)
    assert "before" in run.rows(job) and "must not print" not in run.rows(job)
    assert "nozero=failure missing=failure notfound=failure sete=failure" in run.rows(job)
    assert "must not run" not in [r for r in run.rows(job) if not r.startswith("echo")]


def test_invalid_expression_is_rejected_with_location(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "invalid-expression.yml")
    assert run.code == 2
    assert "invalid-expression.yml:8:9" in run.stderr
    assert "Unrecognized function: 'toJosn'" in run.stderr
    assert run.events == []


# --- events and the github context ------------------------------------------------------

PUSH = {
    "ref": "refs/heads/releases/v2",
    "before": "0" * 40,
    "after": "1" * 40,
    "head_commit": {"id": "1" * 40, "message": "Fix the build"},
    "commits": [{"id": "aaa"}, {"id": "bbb"}],
    "pusher": {"name": "monalisa"},
    "repository": {"full_name": "octo-org/octo-repo", "default_branch": "main"},
}

PULL_REQUEST = {
    "action": "opened",
    "number": 42,
    "pull_request": {
        "number": 42,
        "title": 'Fix `rm -rf` "quoting"; echo pwned',
        "draft": False,
        "labels": [{"name": "bug"}, {"name": "ci"}],
        "head": {"ref": "feature/x", "sha": "2" * 40, "repo": {"full_name": "fork/octo-repo"}},
        "base": {"ref": "main", "sha": "3" * 40, "repo": {"full_name": "octo-org/octo-repo"}},
    },
    "repository": {"full_name": "octo-org/octo-repo", "default_branch": "main"},
}


def test_push_event_payload(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "push-event.yml", event=PUSH)
    rows = run.rows("CI on push/build")
    assert run.code == 0, run.output()
    assert "ref=refs/heads/releases/v2 ref_name=releases/v2 ref_type=branch" in rows
    assert f"sha={'1' * 40} env_sha={'1' * 40}" in rows  # push: sha is `after` (1.5)
    assert "message=Fix the build" in rows
    assert "pusher=monalisa commits=aaa bbb" in rows
    assert "release branch build" in rows and "not skipped by marker" in rows


def test_pull_request_event_payload(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "pull-request.yml", event=PULL_REQUEST)
    rows = run.rows("PR checks/check")
    assert run.code == 0, run.output()
    assert 'title: Fix `rm -rf` "quoting"; echo pwned' in rows
    assert "pwned" not in [r for r in rows if not r.startswith(("title", "  TITLE"))]
    assert "event=pull_request action=opened number=42" in rows
    assert "ref=refs/pull/42/merge head=feature/x base=main" in rows
    assert "ctx head=feature/x base=main" in rows
    assert "labels=bug+ci" in rows
    assert "from fork fork/octo-repo" in rows
    assert run.steps("PR checks/check") == ["success", "success", "skipped", "success"]


def test_github_runner_job_and_strategy_contexts(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "github-context.yml")
    rows = run.rows("Context dump/dump")
    sha = head(run.repo)
    arch = {"x86_64": "X64", "aarch64": "ARM64"}[platform.machine()]
    assert run.code == 0, run.output()
    assert "repository=octo-org/octo-repo owner=octo-org" in rows
    assert "ref=refs/heads/main ref_name=main ref_type=branch" in rows
    assert f"sha={sha}" in rows
    assert "event_name=push actor=Mona Lisa job=dump" in rows
    assert "run_id=1 run_number=1 run_attempt=1" in rows
    assert "workflow=Context dump" in rows
    assert "workspace matches" in rows and "not-in-env-context=[]" in rows
    assert "gitea-alias=octo-org/octo-repo" in rows
    assert "env repo=octo-org/octo-repo owner=octo-org ref=refs/heads/main ref_name=main" in rows
    assert f"env sha={sha} event=push actor=Mona Lisa job=dump" in rows
    assert "env run=1/1/1 workflow=Context dump" in rows
    assert "env ci=true actions=true event_path_exists=yes" in rows
    assert "runner_workspace_is_parent=yes" in rows and "cwd_is_workspace=yes" in rows
    assert f"os=Linux arch={arch} env-os=Linux env-arch={arch}" in rows
    assert "runner paths match" in rows
    assert "temp-exists=yes environment=self-hosted" in rows
    assert "status=success services={}" in rows
    assert "job-index=0 job-total=1 fail-fast=true" in rows
    assert "matrix={}" in rows
    # github.action and GITHUB_ACTION name the step (3.2).
    assert "action=__run_5 ctx=__run_5" in rows
    assert "action=named" in rows and "action=__run_6" in rows
    assert "env and output paths match" in rows and "path and summary paths match" in rows
    workspace = next(r for r in rows if r.startswith("workspace="))
    assert workspace.startswith(f"workspace={run.work}/") and workspace.endswith("/hostexecutor")


def test_on_forms(tmp_path: Path) -> None:
    for index, name in enumerate(("on-string.yml", "on-list.yml", "on-map.yml")):
        run = run_corpus(tmp_path / str(index), name)
        assert run.code == 0, run.output()
        assert "triggered by push" in run.rows()


def test_yaml_anchors_and_scalars(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "yaml-anchors.yml")
    assert run.code == 0, run.output()
    assert "task=lint node_env=test log=debug" in run.rows("YAML anchors/lint")
    test = run.rows("YAML anchors/test")
    assert "task=test node_env=test log=info" in test
    assert "folded into one line" in test
    assert contains_in_order(test, ["line one", "line two"])
    # Unquoted 3.10 keeps its text (10, row 46).
    assert "version=3.10 float=3.10 octal=0755 yes=yes bool=true" in test


def test_concurrency_permissions_environment_accepted(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "concurrency-permissions.yml")
    assert run.code == 0, run.output()
    assert run.jobs == {"Deploy/build": "success", "Deploy/report": "success"}
    assert "deploying main" in run.rows() and "deployed" in run.rows()


# --- expressions -------------------------------------------------------------------------


def test_expression_functions(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "expressions.yml")
    rows = run.rows("Expressions/functions")
    assert run.code == 0, run.output()
    for line in (
        "array-contains=true",
        "string-contains=true",
        "event-is=true",
        "object-contains=false",
        "true true",
        "Hello Mona the Octocat",
        "{Hello Mona the Octocat!}",
        "1.5-1.5",
        "alpha, beta, gamma",
        "alpha,beta,gamma",
        "single",
        '["alpha","beta","gamma"]',
        '"<a & b>"',  # no HTML escaping (5.7)
        "1 true null",
        "count+=true name=octo",
        "nested=true tag1=b",
        "bool=true num=true",
        "a,b",  # object filter skips elements without the property (5.6)
        "true true true true true",
        "yes fallback true true",
        "true []",
        "false true -25 1E+18",
        "target=production",
        "literal ${{ not evaluated }} quote it's",
    ):
        assert line in rows, line
    pretty = ["{", '  "name": "octo",', '  "count": 3,', '  "tags": [', '    "a",', '    "b"']
    assert contains_in_order(run.step_rows("Expressions/functions", 4), pretty)


def test_expression_errors_fail_the_step(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "expressions.yml")
    job = "Expressions/errors"
    assert run.code == 0, run.output()
    assert any(
        "format string references more arguments than were supplied" in r
        for r in run.step_rows(job, 0)
    )
    # An object where a string is needed is an error, not `Object` (5.4).
    assert any("A mapping was not expected" in r for r in run.step_rows(job, 1))
    assert "must not run" not in [r for r in run.rows(job) if not r.startswith("echo")]
    assert "badformat=failure object=failure" in run.rows(job)


def test_hash_files(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "hashfiles.yml")
    rows = run.rows()
    root = hash_files(run.repo, "package-lock.json")
    both = hash_files(run.repo, "package-lock.json", "src/app/package-lock.json")
    multi = hash_files(run.repo, "package.json", "requirements.txt")
    assert run.code == 0, run.output()
    assert f"npm=Linux-node-{both}" in rows
    assert f"root={root}" in rows and f"negated={root}" in rows
    assert f"multi={multi}" in rows
    assert "[]" in rows
    assert "python project detected" in rows
    assert "cargo=true" in rows
    # Job outputs are evaluated before teardown, so hashFiles() works there (2.10).
    assert f"lock output={root}" in run.rows("Cache keys/consumer")


# --- actions -----------------------------------------------------------------------------


def test_local_composite_actions(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "composite-local.yml")
    hello = "Local composite actions/A job to say hello"
    rows = run.rows(hello)
    assert run.code == 0, run.output()
    assert "Hello Mona the Octocat." in rows
    assert "random-number 42" in rows
    assert "message=Hello, Mona the Octocat!" in rows
    assert "default message=Hello, World!" in rows
    assert run.step_rows(hello, 6)[-1] == "Goodbye"  # GITHUB_PATH of the action persists
    nested = run.rows("Local composite actions/nested")
    assert "Hi Hubot." in nested and "inner said Hi, Hubot!" in nested
    assert "after export NESTED_EXPORT=from-nested" in nested
    assert "combined=Hi, Hubot!/42 exported=from-nested" in nested
    assert "nested failure branch" not in nested
    tool = run.rows("Local composite actions/tool-setup")
    assert "octotool 2.5.0 --version" in tool
    assert "version env=2.5.0 in-cache=true" in tool


def test_composite_failures(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "composite-failure.yml")
    job = "Composite failures/composite"
    rows = run.rows(job)
    assert run.code == 1, run.output()
    assert run.jobs == {job: "failure"}
    assert rows.count("tolerated=failure/success") == 3
    assert "flaky=failure/success status=maybe-failure" in rows
    assert "passing=success status=maybe-skipped" in rows
    assert rows.count("nothing failed so far") == 1
    assert "job saw the composite fail" in rows
    assert run.steps(job) == [
        "success",
        "failure",
        "success",
        "success",
        "success",
        "failure",
        "success",
    ]


def test_local_node_action_with_post_and_state(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "node-action.yml")
    job = "JavaScript action/greet"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    assert "Hello Mona the Octocat! spaced=spaced" in rows  # INPUT_MY_INPUT (3.8)
    assert "event=push action_path=true" in rows
    assert "The time was noon" in rows
    assert "failing=failure/success" in rows
    # Posts run in reverse order with the state of their own step (2.9).
    assert contains_in_order(
        rows,
        ["post greeted=fail via_command=yes", "post greeted=Mona the Octocat via_command=yes"],
    )
    assert run.steps(job) == ["success", "success", "success", "failure", "success"]


# --- realistic CI files ------------------------------------------------------------------


def test_node_ci(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "node-ci.yml")
    lock = hash_files(run.repo, "package-lock.json", "src/app/package-lock.json")
    assert run.code == 0, run.output()
    for version in ("18.x", "20.x"):
        rows = run.rows(f"Node.js CI/build ({version})")
        assert "node available" in rows and "lint ok" in rows and "1 passing (add)" in rows
        assert f"key=Linux-node-{version}-{lock}" in rows
        assert "built octo-repo@1.2.3" in rows
        assert run.steps(f"Node.js CI/build ({version})")[1] == "success"


def test_python_ci(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "python-ci.yml")
    rows = run.rows("Python package/build (3.11)")
    assert run.code == 0, run.output()
    assert "python True" in rows and "version 1.2.3" in rows
    assert "ran 1 tests, failures=0" in rows
    assert "##[error]Process completed with exit code 4." in rows
    assert "pyfail=failure" in rows


def test_release_notes_between_jobs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "release.yml")
    rows = run.rows("Release notes/publish")
    assert run.code == 0, run.output()
    assert contains_in_order(
        rows,
        [
            "lines=3",
            "## v1.2.3",
            "- Fix: quoting of 'single' and \"double\" quotes",
            "- Feature: 100% more tests",
        ],
    )
    assert "major=1" in rows and "channels=stable|lts" in rows and "lts=true" in rows


def test_step_summary_files(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "step-summary.yml")
    rows = run.rows()
    assert run.code == 0, run.output()
    # One summary file per step, fresh for each step (6.6); removing it is allowed.
    assert "summary file for step one: step-summary-0.md" in rows
    assert "lines=2 file=step-summary-1.md" in rows
    assert "removed" in rows and "table written" in rows
    assert run.steps("Job summaries/summary") == ["success"] * 4


def test_matrix_of_objects_and_include_only(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-objects.yml")
    assert run.code == 0, run.output()
    assert "cc=gcc flags=-O2 -Wall port=8080 via-index=gcc" in run.rows("Matrix objects/linux-gcc")
    assert "cc=clang flags=-O3 port=8080 via-index=clang" in run.rows("Matrix objects/linux-clang")
    assert matrix_lines(run, "deploy ") == [
        "deploy production to site-a",
        "deploy staging to site-b",
    ]
    collect = run.rows("Matrix objects/collect")
    assert "result=success compiler-set=true" in collect
    assert "{}" in collect  # no -e: the event is {} (1.5)
    assert "skipped step seen as skipped, outputs={}" in collect
    assert run.steps("Matrix objects/collect") == ["success", "success", "skipped", "success"]


def test_composite_edge_cases(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "composite-edge.yml")
    job = "Composite edge cases/edge"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # Workflow defaults never apply inside a composite action (3.4).
    assert "sub-step cwd=app" in rows and "sub-step cwd=docs" in rows
    assert rows.count("default cwd is workspace=yes") == 2
    assert rows.count("action dir has action.yml") == 2
    assert "##[warning]Unexpected input(s) 'surprise', valid inputs are ['dir']" in rows
    assert "noshell=failure missing=failure" in rows
    assert "must not run" not in [r for r in rows if not r.startswith("echo")]
    assert any("does-not-exist" in r and r.startswith("##[error]") for r in run.step_rows(job, 4))


def test_composite_run_step_without_shell_message(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "composite-edge.yml")
    assert any(
        "Required property is missing: shell" in r
        for r in run.step_rows("Composite edge cases/edge", 3)
    )


# --- Go actions (3.12) -------------------------------------------------------------------

#: A stand-in for ``go build -o OUT SRC``: the "program" is the ``//sh:`` lines of SRC.
FAKE_GO = """#!/bin/sh
[ "$1" = build ] && [ "$2" = -o ] && [ $# -eq 4 ] || { echo "unexpected go $*"; exit 2; }
if grep -q '^//build-error: ' "$4"; then sed -n 's,^//build-error: ,,p' "$4"; exit 1; fi
{ echo '#!/bin/sh'; sed -n 's,^//sh: ,,p' "$4"; } > "$3" && chmod +x "$3"
echo "go build $4 in $(basename "$PWD")"
"""


def go_repos(tmp_path: Path) -> str:
    """``file://`` base URL holding acme/gotool (corpus/go-action, tagged v1)."""
    bare = tmp_path / "srv" / "acme" / "gotool"
    make_action_repo(tmp_path / "go-src", CORPUS / "go-action")
    bare.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(tmp_path / "go-src"), str(bare), cwd=tmp_path)
    return f"file://{tmp_path / 'srv'}"


def path_without_go() -> str:
    return ":".join(d for d in os.environ["PATH"].split(":") if not (Path(d) / "go").exists())


def test_go_actions_build_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "go").write_text(FAKE_GO)
    (tools / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{path_without_go()}")
    run = run_corpus(tmp_path, "go-actions.yml", "--default-actions-url", go_repos(tmp_path))
    job = "Go actions/go"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # pre runs during set-up and main in the step, each built in the action dir (3.12).
    assert contains_in_order(
        rows,
        [
            "go pre for Mona",
            "Complete job name: go",
            "go main greets Mona, pre state=yes",
            "cwd is workspace=yes",
            "greeting=hello Mona",
        ],
    )
    builds = [r.split(" in ") for r in rows if r.startswith("go build ")]
    assert [b[0] for b in builds] == [
        "go build cmd/pre/main.go", "go build cmd/pre/main.go", "go build main.go",
        "go build main.go", "go build post.go", "go build post.go",
    ]  # fmt: skip
    assert all(len(b[1]) == 64 for b in builds)  # the action's copy <R>/actions/<sha256>
    assert "go post sees pre=yes main=yes" in rows
    assert rows.index("go post sees pre=yes main=yes") > rows.index("greeting=hello Mona")
    # A build failure shows the compiler output and fails the step.
    broken = run.step_rows(job, 3)
    assert "main.go:5:1: syntax error: unexpected }" in broken
    assert "##[error]Unable to build 'main.go' of the Go action './.github/actions/broken-go'" in (
        broken
    )
    assert "broken=failure failing=failure" in rows
    assert run.steps(job) == ["success", "success", "success", "failure", "failure", "success"]


def test_go_action_without_go_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without_go())
    run = run_corpus(tmp_path, "go-actions.yml", "--default-actions-url", go_repos(tmp_path))
    job = "Go actions/go"
    setup = run.step_rows(job, None)
    assert run.code == 1, run.output()
    assert setup.count("##[error]Cannot find: go in PATH") == 2
    assert setup.count("##[error]go is required to build and run Go actions") == 2
    # A failed pre phase fails the job; the steps then skip (2.1, 2.9).
    assert run.steps(job) == ["skipped"] * 6
    assert run.jobs == {job: "failure"}


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_background_processes_and_raw_output(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "background-server.yml")
    job = "Background server/e2e"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # A step ends when its process exits, even if a background child keeps the output open.
    assert "step body done" in rows and "late background line" not in rows
    alive = next(r for r in rows if r.startswith("server alive pid="))
    # Teardown kills what the job left running (2.7).
    assert not running(int(alive.removeprefix("server alive pid=")))
    assert "progress 10%\rprogress 100%" in rows  # CR inside a line stays (8.1)
    assert "no trailing newline" in rows
    assert "✅ done — ünïcödé ✓" in rows
    assert run.steps(job) == ["success"] * 6
