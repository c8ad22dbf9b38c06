"""Corpus workflows about events, contexts and expressions, through ``exec -i -self-hosted``.

Same harness as test_corpus (``run_corpus``). Every expectation comes from GitHub's
documentation (contexts reference, expressions, events that trigger workflows, workflow
syntax) or from spec/workflow-execution.md, never from what the runner happens to print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_corpus import contains_in_order, head, run_corpus

SHA = "1" * 40
TOKEN = "ghs_0123456789abcdefABCDEF"


def tag_push(tag: str) -> dict[str, Any]:
    return {
        "ref": f"refs/tags/{tag}",
        "after": SHA,
        "repository": {"full_name": "octo-org/octo-repo", "default_branch": "main"},
    }


#: A label added to an open pull request from a fork (``pull_request`` / ``labeled``).
LABELED = {
    "action": "labeled",
    "number": 7,
    "label": {"name": "deploy"},
    "pull_request": {
        "number": 7,
        "user": {"login": "octocat"},
        "labels": [{"name": "safe to test"}, {"name": "deploy"}],
        "head": {"ref": "feature/login", "repo": {"fork": True}},
        "base": {"ref": "main"},
    },
}

WORKFLOW_RUN = {
    "action": "completed",
    "workflow_run": {"id": 99, "conclusion": "success", "head_branch": "main", "head_sha": "abc"},
    "repository": {"default_branch": "main"},
}

COMMENT = {
    "action": "created",
    "issue": {"number": 12, "pull_request": {"url": "https://example.invalid/pulls/12"}},
    "comment": {
        "body": "LGTM\n/deploy staging",
        "user": {"login": "hubot"},
        "author_association": "member",
    },
}


def texts(rows: list[str]) -> list[str]:
    """Rows a step printed, without the echoed script lines of the ``Run`` header."""
    return [r for r in rows if not r.startswith(("echo", "  ", "::group::", "::endgroup::"))]


# --- release and tag automation ----------------------------------------------------------


def test_tag_push_drives_release_jobs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "tag-release.yml", event=tag_push("v1.4.0"))
    assert run.code == 0, run.output()
    build = run.rows("Tagged release/build")
    # github.ref_name is the short tag name, ref_type `tag` (contexts reference).
    assert "ref=refs/tags/v1.4.0 name=v1.4.0 type=tag" in build
    assert "env ref=refs/tags/v1.4.0 name=v1.4.0 type=tag" in build
    assert "version is 1.4.0" in build and "must not run" not in texts(build)
    assert run.steps("Tagged release/build") == ["success", "success", "skipped"]
    assert "publishing 1.4.0 from v1.4.0" in run.rows("Tagged release/publish")
    assert "major=v1" in run.rows("Tagged release/publish")
    assert run.jobs == {
        "Tagged release/build": "success",
        "Tagged release/publish": "success",
        "Tagged release/prerelease": "skipped",
        "Tagged release/nightly": "skipped",
    }


def test_prerelease_tag(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "tag-release.yml", event=tag_push("v2.0.0-rc.1"))
    assert run.code == 0, run.output()
    assert "prerelease 2.0.0-rc.1" in run.rows("Tagged release/prerelease")
    assert run.jobs["Tagged release/publish"] == "skipped"


def test_branch_push_skips_tag_steps(tmp_path: Path) -> None:
    # No -e: the ref is the checked-out branch (1.5).
    run = run_corpus(tmp_path, "tag-release.yml")
    assert run.code == 0, run.output()
    build = run.rows("Tagged release/build")
    assert "ref=refs/heads/main name=main type=branch" in build
    assert "must not run" in texts(build)  # the branch-only step ran
    assert run.steps("Tagged release/build") == ["success", "skipped", "success"]
    assert "branch build on main" in run.rows("Tagged release/nightly")
    assert run.jobs["Tagged release/publish"] == "skipped"


# --- event filters: exec picks workflows by event name only (1.5) ------------------------


def test_branch_and_path_filters_do_not_filter_exec(tmp_path: Path) -> None:
    run = run_corpus(tmp_path / "push", "path-filters.yml", event={"ref": "refs/heads/feature/x"})
    assert run.code == 0, run.output()
    assert "ran for push on refs/heads/feature/x" in run.rows("Path filters/changed")
    run = run_corpus(tmp_path / "pr", "path-filters.yml", "-E", "pull_request")
    assert run.code == 0, run.output()
    assert "ran for pull_request on refs/heads/main" in run.rows("Path filters/changed")


def test_event_without_workflow_runs_nothing(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "path-filters.yml", "-E", "schedule")
    assert run.code == 0, run.output()
    assert run.jobs == {}


def test_pull_request_labeled(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "pr-labels.yml", event=LABELED)
    job = "PR labels/triage"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # head_ref/base_ref come from the pull request; ref is refs/pull/<n>/merge, its name
    # <n>/merge (contexts reference, variables reference).
    assert "head=feature/login base=main event-head=feature/login" in rows
    assert "env head=feature/login base=main ref=refs/pull/7/merge ref_name=7/merge" in rows
    assert "deploy label added" in rows
    assert "labels=safe to test, deploy" in rows
    # contains() on an array compares whole items, strings without case (expressions).
    assert "DEPLOY matches deploy" in rows
    assert "fork=true author=octocat" in rows
    assert run.steps(job) == ["success", "success", "success", "skipped", "success", "success"]
    assert run.jobs["PR labels/preview"] == "skipped"


def test_schedule_and_dispatch(tmp_path: Path) -> None:
    run = run_corpus(
        tmp_path / "s", "scheduled.yml", "-E", "schedule", event={"schedule": "0 0 * * 0"}
    )
    rows = run.rows("Nightly/nightly")
    assert run.code == 0, run.output()
    assert "event=schedule schedule=[0 0 * * 0] ref=refs/heads/main" in rows
    assert "weekly run" in rows
    assert run.steps("Nightly/nightly") == ["success", "success", "skipped"]
    run = run_corpus(
        tmp_path / "d", "scheduled.yml", "-E", "workflow_dispatch", "--input", "force=true"
    )
    rows = run.rows("Nightly/nightly")
    assert "event=workflow_dispatch schedule=[] ref=refs/heads/main" in rows
    assert "forced=true type=true" in rows  # boolean inputs are booleans (4.2)
    run = run_corpus(tmp_path / "n", "scheduled.yml", "-E", "workflow_dispatch")
    assert run.jobs == {"Nightly/nightly": "skipped"}


def test_workflow_run_event(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "workflow-run.yml", event=WORKFLOW_RUN)
    rows = run.rows("Deploy after CI/on-success")
    assert run.code == 0, run.output()
    assert "ci run 99 on main passed" in rows
    # workflow_run: GITHUB_SHA is the last commit of the default branch, GITHUB_REF that branch.
    assert f"head_sha=abc sha={head(run.repo)}" in rows
    assert "ref=refs/heads/main" in rows
    assert run.jobs["Deploy after CI/on-failure"] == "skipped"


def test_issue_comment_commands(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "issue-comment.yml", event=COMMENT)
    rows = run.rows("Chat ops/deploy")
    assert run.code == 0, run.output()
    assert "comment by hubot on #12" in rows
    assert contains_in_order(rows, ["body: LGTM", "/deploy staging"])
    assert "deploying to staging" in rows
    assert "association member allowed" in rows
    assert run.jobs == {
        "Chat ops/deploy": "success",
        "Chat ops/retest": "skipped",
        "Chat ops/issues-only": "skipped",
    }


# --- context dumps -----------------------------------------------------------------------


def dumped_json(rows: list[str]) -> Any:
    """The JSON document a step printed (the rows after its ``Run`` header)."""
    return json.loads("\n".join(rows[rows.index("::endgroup::") + 1 :]))


def test_context_dumps_are_masked_and_shaped_like_github(tmp_path: Path) -> None:
    run = run_corpus(
        tmp_path, "context-dumps.yml",
        "-s", f"GITHUB_TOKEN={TOKEN}", "-s", "NPM_TOKEN=npm-secret-value", "--var", "REGION=eu",
    )  # fmt: skip
    job = "Context dumps/dump (20, ubuntu-latest)"
    assert run.code == 0, run.output()
    text = "\n".join(run.rows())
    assert TOKEN not in text and "npm-secret-value" not in text
    github = dumped_json(run.step_rows(job, 1))
    assert github["token"] == "***"
    assert github["event_name"] == "push" and github["event"] == {}
    assert github["repository"] == "octo-org/octo-repo" and github["job"] == "dump"
    assert github["repositoryUrl"] == "git://github.com/octo-org/octo-repo.git"
    assert github["secret_source"] == "Actions"
    # run_id, run_number, run_attempt are strings; ref_protected a boolean (contexts reference).
    assert (github["run_id"], github["run_number"], github["run_attempt"]) == ("1", "1", "1")
    assert github["ref_protected"] is False
    secrets = dumped_json(run.step_rows(job, 2))
    assert secrets == {"GITHUB_TOKEN": "***", "NPM_TOKEN": "***"}
    rows = run.rows(job)
    assert "github strings True" in rows
    assert "github event dict token ***" in rows
    assert "matrix {'node': 20, 'os': 'ubuntu-latest'} int" in rows  # typed values (4.2)
    assert (
        "steps {'first': {'outputs': {'answer': '42'}, 'outcome': 'success', "
        "'conclusion': 'success'}}"
    ) in rows
    assert "job ['container', 'services', 'status'] str {}" in rows
    assert (
        "runner ['arch', 'environment', 'name', 'os', 'temp', 'tool_cache'] Linux self-hosted"
        in rows
    )
    assert (
        "strategy [('fail-fast', 'bool'), ('job-index', 'int'), ('job-total', 'int'), "
        "('max-parallel', 'int')]"
    ) in rows
    assert "secrets ['GITHUB_TOKEN', 'NPM_TOKEN']" in rows
    assert "vars {'REGION': 'eu'} inputs {} needs {}" in rows
    env = next(r for r in rows if r.startswith("env {"))
    # Job env is in the env context; the default GITHUB_* variables are not (4.5).
    assert "'DEPLOY_ENV': 'staging'" in env and "GITHUB_" not in env


# --- tokens, env levels, expressions in job and step keys --------------------------------


def test_token_env_levels_and_expression_keys(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "token-env.yml", "-s", f"GITHUB_TOKEN={TOKEN}")
    rows = run.rows("Tokens and env/token")
    assert run.code == 0, run.output()
    assert TOKEN not in "\n".join(run.rows())
    # github.token is secrets.GITHUB_TOKEN (1.3), masked everywhere (7).
    assert "gh=*** secret=*** ctx=***" in rows and "same token" in rows
    # A step's env sees the job's env in expressions, and shadows it in the process.
    assert "target=step from-job=job app-image=octo-app-job ctx=step" in rows
    assert "image=ghcr.io/octo-org/octo-repo" in rows
    assert "target=job ctx=job" in rows
    assert "cwd=app shell=__run_4.sh" in rows
    assert "flaky=failure/success" in rows
    assert run.steps("Tokens and env/token") == [
        "success", "success", "success", "success", "success", "failure", "success",
    ]  # fmt: skip


def test_token_is_empty_without_a_secret(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "token-env.yml")
    assert run.code == 0, run.output()
    assert "gh= secret= ctx=" in run.rows("Tokens and env/token")


def test_comparisons_across_types(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "expr-compare.yml")
    assert run.code == 0, run.output()
    for leg, values in (("compare (3.11)", "3.11"), ("compare (true, 3.12)", "3.12,true")):
        rows = run.rows(f"Expression semantics/{leg}")
        # Loose equality (5.5): strings and null become numbers against numbers and
        # booleans; objects and arrays are only equal to themselves.
        assert "str-num=true null-zero=true null-empty=true true-one=true true-str=false" in rows
        assert "case=true hex=true float=true obj=false" in rows
        assert "arr=false arr-str=false obj-ne=false lt=true" in rows
        assert "bool=true typed=true num=0.5 null=[]" in rows
        assert "a{}b" in rows
        assert f"values={values}" in rows
    assert '{"python": "3.11", "experimental": false}' in run.rows(
        "Expression semantics/compare (3.11)"
    )
    assert '{"python": "3.12", "experimental": true}' in run.rows(
        "Expression semantics/compare (true, 3.12)"
    )
    summary = run.rows("Expression semantics/summary")
    assert "results=success" in summary and "any-failure=false" in summary


# --- debug logging (9.1) -----------------------------------------------------------------


def test_debug_off_by_default(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "debug-logging.yml")
    rows = run.rows("Debug logging/debug")
    assert run.code == 0, run.output()
    assert not any("cache key is linux-42" in r for r in texts(rows))
    assert "runner.debug=[] RUNNER_DEBUG=[]" in rows
    assert run.steps("Debug logging/debug") == ["success", "skipped", "success"]


def test_step_debug_from_secret_or_variable(tmp_path: Path) -> None:
    for index, flag in enumerate(("-s", "--var")):
        run = run_corpus(
            tmp_path / str(index), "debug-logging.yml", flag, "ACTIONS_STEP_DEBUG=true"
        )
        rows = run.rows("Debug logging/debug")
        assert run.code == 0, run.output()
        assert any(r.endswith("cache key is linux-42") for r in rows)
        assert "runner.debug=[1] RUNNER_DEBUG=[1]" in rows
        assert "verbose build" in rows
        assert run.steps("Debug logging/debug") == ["success", "success", "skipped"]


# --- gate jobs ---------------------------------------------------------------------------


def test_gate_jobs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "gate-jobs.yml")
    assert run.code == 1, run.output()
    assert run.jobs == {
        "Gates/test (1)": "success",
        "Gates/test (2)": "failure",
        "Gates/test (3)": "success",
        "Gates/lint": "success",
        "Gates/docs": "skipped",
        "Gates/experimental": "failure",
        "Gates/not-failed": "success",
        "Gates/after-test": "skipped",
        "Gates/all-green": "failure",
        "Gates/after-experimental": "success",
    }
    # A skipped need is not a failure: `!failure()` holds (5.9).
    assert "lint=success docs=skipped" in run.rows("Gates/not-failed")
    green = run.rows("Gates/all-green")
    assert "results=failure success skipped" in green  # needs.* in `needs` order
    assert "a required job failed" in green and "must not run" not in texts(green)
    assert run.steps("Gates/all-green") == ["success", "failure", "skipped"]
    # A failed job with continue-on-error is a success for its dependants (workflow syntax).
    assert "experimental=success" in run.rows("Gates/after-experimental")
