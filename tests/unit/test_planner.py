"""Exec-mode planning: discovery, events, selection, stages, matrices, inputs, github."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from trio_runner.workflow import planner
from trio_runner.workflow.model import Workflow, WorkflowError, load_workflow


def workflow(text: str, file: str = "wf.yml") -> Workflow:
    return load_workflow(text, file)


CHAIN = """
name: chain
on: [push, pull_request]
jobs:
  a:
    runs-on: x
    steps: [{run: echo a}]
  b:
    needs: a
    runs-on: x
    steps: [{run: echo b}]
  c:
    needs: [a, b]
    runs-on: x
    steps: [{run: echo c}]
  d:
    runs-on: x
    steps: [{run: echo d}]
"""


def ids(stages: list[list[planner.PlannedJob]]) -> list[list[str]]:
    return [[p.job_id for p in stage] for stage in stages]


# --- discovery ----------------------------------------------------------------------------


def test_default_path_prefers_gitea_then_github(tmp_path: Path) -> None:
    assert planner.default_workflows_path(tmp_path) == tmp_path / ".gitea" / "workflows"
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    assert planner.default_workflows_path(tmp_path) == tmp_path / ".github" / "workflows"
    (tmp_path / ".gitea" / "workflows").mkdir(parents=True)
    assert planner.default_workflows_path(tmp_path) == tmp_path / ".gitea" / "workflows"


def test_workflow_files_recurse_and_filter(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.yml", "b.yaml", "notes.txt", "sub/c.yml"):
        (tmp_path / name).write_text("on: push\n")
    found = planner.workflow_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.yml", "b.yaml", "sub/c.yml"]
    flat = planner.workflow_files(tmp_path, recurse=False)
    assert [p.name for p in flat] == ["a.yml", "b.yaml"]
    assert planner.workflow_files(tmp_path / "a.yml") == [tmp_path / "a.yml"]
    with pytest.raises(planner.PlanError, match="does not exist"):
        planner.workflow_files(tmp_path / "missing")


def test_load_workflows_reports_every_bad_file_with_line(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text("on: push\njobs:\n  a:\n    runs-on: x\n    steps: []\n")
    (tmp_path / "bad.yml").write_text("on: push\njobs:\n  a:\n    runs-on: x\n    stepz: []\n")
    files = planner.workflow_files(tmp_path)
    with pytest.raises(planner.PlanError) as caught:
        planner.load_workflows(files, tmp_path)
    assert "bad.yml:5:" in str(caught.value)
    assert "unexpected key 'stepz'" in str(caught.value)
    assert caught.value.exit_code == 2


# --- events and selection -----------------------------------------------------------------


def test_detect_event() -> None:
    push_only = workflow("on: push\njobs: {}\n")
    both = workflow(CHAIN)
    assert planner.detect_event([push_only], None, detect=False) == "push"
    assert planner.detect_event([workflow("on: release\njobs: {}\n")], None, detect=False) == (
        "release"
    )
    assert planner.detect_event([both], None, detect=False) == "push"
    assert planner.detect_event([both], None, detect=True) == "pull_request"
    assert planner.detect_event([both], "schedule", detect=True) == "schedule"


def test_select_by_event_and_by_job_with_transitive_needs() -> None:
    chain = workflow(CHAIN)
    other = workflow("on: release\njobs:\n  r:\n    runs-on: x\n    steps: []\n", "other.yml")
    assert [p.job_id for p in planner.select_jobs([chain, other], "push")] == ["a", "b", "c", "d"]
    assert [p.job_id for p in planner.select_jobs([chain, other], "release")] == ["r"]
    selected = planner.select_jobs([chain, other], "push", ["c"])
    assert sorted(p.job_id for p in selected) == ["a", "b", "c"]
    with pytest.raises(planner.PlanError, match="'nope'"):
        planner.select_jobs([chain], "push", ["nope"])


def test_stages_follow_needs_and_merge_across_workflows() -> None:
    chain = workflow(CHAIN)
    solo = workflow("on: push\njobs:\n  s:\n    runs-on: x\n    steps: []\n", "solo.yml")
    jobs = planner.select_jobs([chain, solo], "push")
    assert ids(planner.build_stages(jobs)) == [["a", "d", "s"], ["b"], ["c"]]


def test_cycle_and_unknown_need_are_errors_with_position() -> None:
    cycle = workflow(
        "on: push\njobs:\n  a:\n    needs: b\n    runs-on: x\n  b:\n    needs: a\n    runs-on: x\n"
    )
    with pytest.raises(WorkflowError, match="unable to build dependency graph") as caught:
        planner.build_stages(planner.select_jobs([cycle], "push"))
    assert caught.value.mark is not None and caught.value.mark.line == 4
    unknown = workflow("on: push\njobs:\n  a:\n    needs: ghost\n    runs-on: x\n")
    with pytest.raises(WorkflowError, match="unknown job 'ghost'"):
        planner.build_stages(planner.select_jobs([unknown], "push"))


# --- matrix expansion (5.12) --------------------------------------------------------------


def test_product_in_key_order_first_key_slowest() -> None:
    assert planner.expand_matrix({"os": ["l", "m"], "v": [1, 2]}) == [
        {"os": "l", "v": 1},
        {"os": "l", "v": 2},
        {"os": "m", "v": 1},
        {"os": "m", "v": 2},
    ]


def test_github_documented_include_example() -> None:
    matrix: dict[str, Any] = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    assert planner.expand_matrix(matrix) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_exclude_before_include_and_deep_equality() -> None:
    matrix: dict[str, Any] = {
        "os": ["l", "m"],
        "cfg": [{"a": 1}, {"a": 2}],
        "exclude": [{"os": "m", "cfg": {"a": 1}}],
        "include": [{"os": "m", "cfg": {"a": 1}, "extra": True}],
    }
    assert planner.expand_matrix(matrix) == [
        {"os": "l", "cfg": {"a": 1}},
        {"os": "l", "cfg": {"a": 2}},
        {"os": "m", "cfg": {"a": 2}},
        {"os": "m", "cfg": {"a": 1}, "extra": True},
    ]


def test_booleans_never_equal_numbers() -> None:
    matrix: dict[str, Any] = {"flag": [True, 1], "exclude": [{"flag": 1}]}
    assert planner.expand_matrix(matrix) == [{"flag": True}]
    assert planner.same_value(1, 1.0)
    assert not planner.same_value(True, 1)


def test_include_only_scalars_and_empty() -> None:
    assert planner.expand_matrix({"include": [{"a": 1}, {"a": 2}]}) == [{"a": 1}, {"a": 2}]
    assert planner.expand_matrix({"v": 3}) == [{"v": 3}]
    # Spec 5.12 rule 5: no dimensions and no include entries give one empty combination.
    assert planner.expand_matrix({}) == [{}]
    assert planner.expand_matrix({"include": []}) == [{}]


@pytest.mark.parametrize(
    ("matrix", "problem"),
    [
        ({"os": {"a": 1}}, "must be a list, not a mapping"),
        ({"os": []}, "does not contain any values"),
        ({"os": ["l"], "exclude": [{"arch": "x"}]}, "'arch' is not a matrix dimension"),
        ({"os": ["l"], "exclude": [{"os": "l"}]}, "no combinations left"),
        ({"a": list(range(20)), "b": list(range(13))}, "more than 256"),
        ({"include": "nope"}, "expected a list of mappings"),
    ],
)
def test_invalid_matrices(matrix: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        planner.expand_matrix(matrix)


def test_matrix_filter_like_act() -> None:
    filters = planner.parse_matrix_filters(["os:l", "os:m", "v:2"])
    assert filters == {"os": {"l", "m"}, "v": {"2"}}
    assert planner.matrix_matches({"os": "l", "v": 2}, filters)
    assert not planner.matrix_matches({"os": "w", "v": 2}, filters)
    assert not planner.matrix_matches({"os": "l", "v": 1}, filters)
    assert planner.matrix_matches({"other": 1}, filters)
    with pytest.raises(planner.ConfigError, match="KEY:VALUE"):
        planner.parse_matrix_filters(["novalue"])


def test_display_name() -> None:
    assert planner.matrix_display_name("build", {"v": 3.1, "os": "l"}) == "build (l, 3.1)"
    assert planner.matrix_display_name("build", {"a": "", "b": None, "c": True}) == "build (true)"
    assert planner.matrix_display_name("build", {}) == "build"
    assert planner.matrix_display_name("b", {"m": {"k": [1]}}) == 'b ({"k":[1]})'


# --- legs ---------------------------------------------------------------------------------

MATRIX_JOB = """
on: push
jobs:
  build:
    name: Build
    runs-on: ${{ matrix.os }}
    continue-on-error: ${{ matrix.experimental }}
    strategy:
      max-parallel: 2
      fail-fast: false
      matrix:
        os: [linux, mac]
        include:
          - os: mac
            experimental: true
    steps: [{run: echo}]
"""


def contexts(needs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"github": {"event_name": "push"}, "needs": needs or {}, "vars": {}, "inputs": {}}


def test_legs_are_gitea_shaped_single_job_workflows() -> None:
    planned = planner.select_jobs([workflow(MATRIX_JOB)], "push")[0]
    plan = planner.plan_legs(planned, contexts())
    assert plan.max_parallel == 2 and plan.fail_fast is False
    assert [leg.name for leg in plan.legs] == ["Build (linux)", "Build (true, mac)"]
    mac = plan.legs[1]
    assert mac.continue_on_error is True and plan.legs[0].continue_on_error is False
    job = mac.job
    assert list(mac.workflow.jobs) == ["build"]
    assert job.display_name() == "Build (true, mac)"
    assert job.matrix_values == {"os": "mac", "experimental": True}
    assert job.strategy_context == {
        "fail-fast": False,
        "max-parallel": 2,
        "job-index": 1,
        "job-total": 2,
    }
    assert job.runs_on is not None and not isinstance(job.runs_on, str)
    assert job.runs_on.labels == ["mac"]


def test_legs_filter_keeps_full_expansion_index() -> None:
    planned = planner.select_jobs([workflow(MATRIX_JOB)], "push")[0]
    plan = planner.plan_legs(planned, contexts(), {"os": {"mac"}})
    assert [(leg.index, leg.total) for leg in plan.legs] == [(1, 2)]


def test_matrix_from_needs_outputs_and_defaults() -> None:
    text = """
on: push
jobs:
  gen:
    runs-on: x
  use:
    needs: gen
    runs-on: x
    strategy:
      matrix:
        shard: ${{ fromJSON(needs.gen.outputs.list) }}
    steps: []
"""
    planned = planner.select_jobs([workflow(text)], "push", ["use"])
    use = next(p for p in planned if p.job_id == "use")
    needs = {"gen": {"result": "success", "outputs": {"list": '["a","b"]'}}}
    plan = planner.plan_legs(use, contexts(needs))
    assert [leg.matrix for leg in plan.legs] == [{"shard": "a"}, {"shard": "b"}]
    assert plan.max_parallel == planner.DEFAULT_MAX_PARALLEL and plan.fail_fast is True


def test_job_without_matrix_is_one_leg_without_strategy_values() -> None:
    planned = planner.select_jobs([workflow(CHAIN)], "push")[0]
    (leg,) = planner.plan_legs(planned, contexts()).legs
    assert leg.name == "a" and leg.job.matrix_values == {}
    assert "job-index" not in leg.job.strategy_context


def test_strategy_without_matrix_and_an_empty_matrix_are_one_leg() -> None:
    text = "on: push\njobs:\n  t:\n    runs-on: x\n    strategy:\n      fail-fast: false\n"
    (leg,) = planner.plan_legs(planner.select_jobs([workflow(text)], "push")[0], contexts()).legs
    assert leg.matrix == {}
    empty = (
        "on: push\njobs:\n  t:\n    runs-on: x\n    strategy:\n"
        "      matrix: ${{ fromJSON('{\"include\":[]}') }}\n"
    )
    planned = planner.select_jobs([workflow(empty)], "push")[0]
    (leg,) = planner.plan_legs(planned, contexts()).legs
    assert leg.matrix == {}


def test_name_with_expression_is_rendered_without_suffix() -> None:
    text = (
        "on: push\njobs:\n  t:\n    name: test on ${{ matrix.os }}\n    runs-on: x\n"
        "    strategy:\n      matrix:\n        os: [l]\n"
    )
    (leg,) = planner.plan_legs(planner.select_jobs([workflow(text)], "push")[0], contexts()).legs
    assert leg.name == "test on l"


def test_invalid_strategy_values_name_the_job() -> None:
    text = (
        "on: push\njobs:\n  t:\n    runs-on: x\n    strategy:\n"
        "      max-parallel: ${{ 0 }}\n      matrix:\n        os: [l]\n"
    )
    planned = planner.select_jobs([workflow(text)], "push")[0]
    with pytest.raises(WorkflowError, match="max-parallel") as caught:
        planner.plan_legs(planned, contexts())
    assert caught.value.mark is not None and caught.value.mark.line == 4


def test_job_condition_uses_needs_results() -> None:
    text = "on: push\njobs:\n  a:\n    runs-on: x\n  b:\n    needs: a\n    runs-on: x\n"
    job = workflow(text).jobs["b"]
    assert planner.job_condition(job, contexts({"a": {"result": "success", "outputs": {}}}))
    assert not planner.job_condition(job, contexts({"a": {"result": "failure", "outputs": {}}}))


def test_validate_rejects_bad_templates_and_static_matrices() -> None:
    bad_step = workflow(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ 1 + }}\n"
    )
    with pytest.raises(WorkflowError, match=r"steps\[0\]") as caught:
        planner.validate_jobs(planner.select_jobs([bad_step], "push"))
    assert caught.value.mark is not None and caught.value.mark.line == 6
    empty = workflow(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: []\n"
    )
    with pytest.raises(WorkflowError, match="does not contain any values"):
        planner.validate_jobs(planner.select_jobs([empty], "push"))
    planner.validate_jobs(planner.select_jobs([workflow(MATRIX_JOB)], "push"))


# --- results for dependants ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (["success", "failure", "cancelled"], "failure"),
        (["success", "cancelled"], "cancelled"),
        (["skipped", "skipped"], "skipped"),
        (["skipped", "success"], "success"),
        (["success"], "success"),
    ],
)
def test_aggregate_results(results: list[str], expected: str) -> None:
    assert planner.aggregate_results(results, [])[0] == expected


def test_outputs_last_writer_wins() -> None:
    _, outputs = planner.aggregate_results(
        ["success", "success"], [{"a": "1", "b": "1"}, {"a": "2"}]
    )
    assert outputs == {"a": "2", "b": "1"}


# --- inputs -------------------------------------------------------------------------------

INPUTS = """
on:
  workflow_dispatch:
    inputs:
      who: {required: true}
      loud: {type: boolean}
      count: {type: number, default: 2}
      level: {type: choice, options: [low, high], default: low}
jobs: {}
"""


def test_inputs_coerced_with_defaults() -> None:
    wf = workflow(INPUTS)
    given = {"who": "me", "loud": "TRUE", "count": "3.5", "extra": "x"}
    assert planner.resolve_inputs(wf, "workflow_dispatch", given) == {
        "who": "me",
        "loud": True,
        "count": 3.5,
        "level": "low",
        "extra": "x",
    }
    assert planner.resolve_inputs(wf, "workflow_dispatch", {"who": "me"})["loud"] is False
    assert planner.resolve_inputs(wf, "push", {"a": "1"}) == {"a": "1"}


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({}, "required input 'who' is missing"),
        ({"who": "x", "loud": "yes"}, "expected true or false"),
        ({"who": "x", "count": "many"}, "expected a number"),
        ({"who": "x", "level": "mid"}, "not one of low, high"),
    ],
)
def test_input_errors(given: dict[str, str], problem: str) -> None:
    with pytest.raises(planner.PlanError, match=problem) as caught:
        planner.resolve_inputs(workflow(INPUTS), "workflow_dispatch", given)
    assert "wf.yml" in str(caught.value)


# --- github context -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("https://gitea.example.com/owner/repo.git", "owner/repo"),
        ("git@gitea.example.com:owner/repo.git", "owner/repo"),
        ("ssh://git@gitea.example.com:2222/group/owner/repo", "owner/repo"),
        ("https://gitea.example.com/owner/repo/", "owner/repo"),
        ("", ""),
    ],
)
def test_repository_from_remote(url: str, repository: str) -> None:
    assert planner.repository_from_remote(url) == repository


@pytest.mark.parametrize(
    ("event_name", "event", "ref", "sha"),
    [
        ("push", {"ref": "refs/heads/dev", "after": "abc"}, "refs/heads/dev", "abc"),
        ("push", {"ref": "refs/heads/dev", "after": "abc", "deleted": True}, "refs/heads/dev", ""),
        ("pull_request", {"number": 7}, "refs/pull/7/merge", ""),
        (
            "pull_request_target",
            {"pull_request": {"base": {"ref": "main", "sha": "b1"}}},
            "refs/heads/main",
            "b1",
        ),
        ("release", {"release": {"tag_name": "v1"}}, "refs/tags/v1", ""),
        ("deployment", {"deployment": {"ref": "r", "sha": "d1"}}, "r", "d1"),
        ("schedule", {"repository": {"default_branch": "trunk"}}, "refs/heads/trunk", ""),
        ("schedule", {}, "", ""),
    ],
)
def test_event_ref_and_sha(event_name: str, event: dict[str, Any], ref: str, sha: str) -> None:
    assert planner.event_ref(event_name, event) == ref
    assert planner.event_sha(event_name, event) == sha


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("https://github.com/o/r.git", "git://github.com/o/r.git"),
        ("git@github.com:o/r.git", "git://github.com/o/r.git"),
        ("ssh://git@gitea.local:2222/o/r.git", "git://gitea.local/o/r.git"),
        ("https://user:pw@host.example/o/r", "git://host.example/o/r.git"),
        ("/srv/o/r", ""),
        ("file:///srv/o/r", ""),
    ],
)
def test_repository_url_in_githubs_form(remote: str, url: str) -> None:
    assert planner.repository_url(remote, "o/r") == url
    assert planner.repository_url(remote, "") == ""


def test_github_context_falls_back_to_git() -> None:
    git = planner.GitInfo(
        sha="f00", ref="refs/heads/main", remote_url="git@h:o/r.git", user_name="Ann"
    )
    ctx = planner.exec_github_context("push", {}, git, actor_fallback="login")
    assert (ctx["ref"], ctx["ref_name"], ctx["ref_type"], ctx["sha"]) == (
        "refs/heads/main",
        "main",
        "branch",
        "f00",
    )
    assert (ctx["repository"], ctx["repository_owner"], ctx["actor"]) == ("o/r", "o", "Ann")
    assert (ctx["run_id"], ctx["run_number"], ctx["run_attempt"]) == ("1", "1", "1")
    assert ctx["repositoryUrl"] == "git://h/o/r.git"
    pr = planner.exec_github_context(
        "pull_request",
        {"number": 3, "pull_request": {"head": {"ref": "topic"}, "base": {"ref": "main"}}},
        planner.GitInfo(),
        actor_fallback="login",
    )
    assert (pr["ref_name"], pr["head_ref"], pr["base_ref"], pr["actor"]) == (
        "3/merge",
        "topic",
        "main",
        "login",
    )


def test_read_git_info_from_a_real_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "work")
    git("config", "user.name", "Tess Ter")
    git("config", "user.email", "t@example.com")
    git("remote", "add", "origin", "https://example.com/acme/widgets.git")
    git("commit", "-q", "--allow-empty", "-m", "one")
    info = planner.read_git_info(tmp_path)
    assert info.ref == "refs/heads/work"
    assert len(info.sha) == 40
    assert info.remote_url == "https://example.com/acme/widgets.git"
    assert info.user_name == "Tess Ter"
    git("tag", "v9")
    git("checkout", "-q", "--detach")
    assert planner.read_git_info(tmp_path).ref == "refs/tags/v9"
    assert planner.read_git_info(tmp_path / "nowhere") == planner.GitInfo()
