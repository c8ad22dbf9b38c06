"""Reusable-workflow calls: references, resolution and checks, and what crosses a call."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_runner.workflow import planner, reusable
from trio_runner.workflow.contexts import jobs_context
from trio_runner.workflow.expressions import ExpressionError
from trio_runner.workflow.model import WorkflowError, load_workflow

CALLED = """\
name: called
on:
  workflow_call:
    inputs:
      name:
        type: string
        required: true
      count:
        type: number
        default: 2
      flag:
        type: boolean
      ref:
        type: string
        default: ${{ github.ref }}
    secrets:
      token:
        required: true
      extra:
        description: optional
    outputs:
      result:
        value: ${{ jobs.build.outputs.made }}/${{ jobs.build.result }}
jobs:
  build:
    runs-on: x
    steps:
      - run: echo
  test:
    needs: build
    runs-on: x
    steps:
      - run: echo
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def caller(job: str, *, file: str = ".github/workflows/caller.yml") -> planner.PlannedJob:
    text = f"on: push\njobs:\n  call:\n{job}"
    return planner.PlannedJob(load_workflow(text, file), "call")


def resolve(
    root: Path, job: str, files: dict[str, str], fetch: reusable.FetchRepository | None = None
) -> reusable.Calls:
    write(root, files)
    return reusable.resolve_calls([caller(job)], reusable.Repository(root), fetch)


GOOD_CALL = """\
    uses: ./.github/workflows/called.yml
    with:
      name: ${{ matrix.who }}
      flag: true
    secrets:
      token: ${{ secrets.TOKEN }}
"""


# --- references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uses", "expected"),
    [
        ("./.github/workflows/x.yml", ".github/workflows/x.yml"),
        ("./.gitea/workflows/sub/x.yaml", ".gitea/workflows/sub/x.yaml"),
        (
            "acme/tools/.github/workflows/x.yml@v1",
            reusable.RemoteWorkflowRef("acme", "tools", ".github/workflows/x.yml", "v1"),
        ),
        (
            "https://gitea.example/acme/tools/.gitea/workflows/x.yml@main",
            reusable.RemoteWorkflowRef(
                "acme", "tools", ".gitea/workflows/x.yml", "main", "https://gitea.example"
            ),
        ),
    ],
)
def test_references(uses: str, expected: object) -> None:
    assert reusable.parse_reference(uses) == expected


@pytest.mark.parametrize(
    "uses",
    [
        "./ci/x.yml",
        "./.github/workflows/../../x.yml",
        "./.github/workflows/x.yml@v1",
        "acme/tools/x.yml@v1",
        "acme/tools/.github/workflows/x.yml",
        "${{ vars.WORKFLOW }}",
    ],
)
def test_bad_references(uses: str) -> None:
    with pytest.raises(ValueError, match=r"expected|expressions"):
        reusable.parse_reference(uses)


def test_remote_reference_shares_the_action_clone_key() -> None:
    ref = reusable.RemoteWorkflowRef("acme", "tools", ".github/workflows/x.yml", "v1")
    assert ref.repository == "acme/tools@v1"
    assert ref.clone_url("https://gitea.example/") == "https://gitea.example/acme/tools"
    assert ref.cache_key == reusable.RemoteWorkflowRef("acme", "tools", "other", "v1").cache_key


# --- resolution and checks -------------------------------------------------------------


def test_resolve_loads_plans_and_keys_by_caller(tmp_path: Path) -> None:
    calls = resolve(tmp_path, GOOD_CALL, {".github/workflows/called.yml": CALLED})
    called = calls[(".github/workflows/caller.yml", "call")]
    assert called.workflow.file == ".github/workflows/called.yml"
    assert [[p.job_id for p in stage] for stage in called.stages] == [["build"], ["test"]]
    assert called.workflow.call_secrets["token"].required
    assert called.workflow.call_outputs["result"].value.startswith("${{ jobs.build")


@pytest.mark.parametrize(
    ("job", "files", "problem"),
    [
        (GOOD_CALL, {}, "cannot read the reusable workflow .github/workflows/called.yml"),
        (
            GOOD_CALL,
            {".github/workflows/called.yml": "on: push\njobs:\n  a:\n    runs-on: x\n"},
            "is not a reusable workflow (its 'on' has no workflow_call)",
        ),
        (
            GOOD_CALL.replace("flag: true", "flag: true\n      colour: red"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.with.colour: input 'colour' is not defined in the reusable workflow",
        ),
        (
            GOOD_CALL.replace("name: ${{ matrix.who }}", "count: 1"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.with: input 'name' is required by the reusable workflow",
        ),
        (
            GOOD_CALL.replace("flag: true", "flag: sometimes"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.with.flag: expected true or false, got 'sometimes'",
        ),
        (
            GOOD_CALL.replace("flag: true", "count: lots"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.with.count: expected a number, got 'lots'",
        ),
        (
            GOOD_CALL.replace("token:", "tokn:"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.secrets.tokn: secret 'tokn' is not defined in the reusable workflow",
        ),
        (
            GOOD_CALL.replace("secrets:\n      token: ${{ secrets.TOKEN }}", "secrets: {}"),
            {".github/workflows/called.yml": CALLED},
            "jobs.call.secrets: secret 'token' is required by the reusable workflow",
        ),
        (
            GOOD_CALL,
            {".github/workflows/called.yml": CALLED.replace("    needs: build", "    needs: b")},
            "unable to build dependency graph: job 'test' needs unknown job 'b'",
        ),
        (
            GOOD_CALL,
            {".github/workflows/called.yml": CALLED.replace("runs-on: x\n    steps", "wrong: 1")},
            "invalid reusable workflow: .github/workflows/called.yml:",
        ),
    ],
)
def test_resolve_rejects_bad_calls_at_the_callers_position(
    tmp_path: Path, job: str, files: dict[str, str], problem: str
) -> None:
    with pytest.raises(WorkflowError) as caught:
        resolve(tmp_path, job, files)
    assert problem in str(caught.value)
    mark = caught.value.mark
    assert mark is not None and (mark.file, mark.line) in {
        (".github/workflows/caller.yml", 4),
        (".github/workflows/called.yml", 30),
    }
    assert str(caught.value).startswith(f"{mark.file}:{mark.line}:")


def test_secrets_inherit_skips_the_secret_checks(tmp_path: Path) -> None:
    job = GOOD_CALL.replace("secrets:\n      token: ${{ secrets.TOKEN }}", "secrets: inherit")
    calls = resolve(tmp_path, job, {".github/workflows/called.yml": CALLED})
    assert len(calls) == 1


def nest(depth: int) -> dict[str, str]:
    """Workflows level1 .. level<depth>, each calling the next; the last runs a step."""
    files = {}
    for level in range(1, depth + 1):
        body = (
            f"    uses: ./.github/workflows/level{level + 1}.yml\n"
            if level < depth
            else "    runs-on: x\n    steps:\n      - run: echo\n"
        )
        files[f".github/workflows/level{level}.yml"] = f"on: workflow_call\njobs:\n  j:\n{body}"
    return files


def test_nesting_up_to_ten_levels(tmp_path: Path) -> None:
    job = "    uses: ./.github/workflows/level1.yml\n"
    calls = resolve(tmp_path / "ok", job, nest(reusable.MAX_DEPTH - 1))
    assert len(calls) == reusable.MAX_DEPTH - 1
    with pytest.raises(WorkflowError, match="nested more than 10 levels deep") as caught:
        resolve(tmp_path / "deep", job, nest(reusable.MAX_DEPTH))
    assert caught.value.mark is not None
    assert caught.value.mark.file == ".github/workflows/level9.yml"


def test_cycle_names_the_chain(tmp_path: Path) -> None:
    files = {
        ".github/workflows/a.yml": "on: workflow_call\njobs:\n  to-b:\n"
        "    uses: ./.github/workflows/b.yml\n",
        ".github/workflows/b.yml": "on: workflow_call\njobs:\n  to-a:\n"
        "    uses: ./.github/workflows/a.yml\n",
    }
    with pytest.raises(WorkflowError, match="cycle") as caught:
        resolve(tmp_path, "    uses: ./.github/workflows/a.yml\n", files)
    assert ".github/workflows/a.yml -> .github/workflows/b.yml -> .github/workflows/a.yml" in str(
        caught.value
    )


def test_remote_calls_are_fetched_once_and_local_calls_inside_stay_there(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone"
    write(
        clone,
        {
            ".github/workflows/a.yml": "on: workflow_call\njobs:\n  inner:\n"
            "    uses: ./.github/workflows/b.yml\n",
            ".github/workflows/b.yml": "on: workflow_call\njobs:\n  j:\n    runs-on: x\n",
        },
    )
    fetched: list[reusable.RemoteWorkflowRef] = []

    def fetch(reference: reusable.RemoteWorkflowRef) -> Path:
        fetched.append(reference)
        return clone

    job = "    uses: acme/tools/.github/workflows/a.yml@v2\n"
    calls = resolve(tmp_path / "repo", job, {}, fetch)
    assert sorted(called.workflow.file for called in calls.values()) == [
        "acme/tools/.github/workflows/a.yml@v2",
        "acme/tools/.github/workflows/b.yml@v2",
    ]
    assert fetched == [reusable.RemoteWorkflowRef("acme", "tools", ".github/workflows/a.yml", "v2")]
    with pytest.raises(WorkflowError, match="remote workflows cannot be fetched"):
        resolve(tmp_path / "repo", job, {}, None)

    def refuse(reference: reusable.RemoteWorkflowRef) -> Path:
        raise planner.PlanError("git clone failed: not found")

    with pytest.raises(WorkflowError, match=r"cannot fetch 'acme/tools/.*@v2': git clone failed"):
        resolve(tmp_path / "repo", job, {}, refuse)


# --- what crosses a call ---------------------------------------------------------------


def test_call_inputs_evaluate_coerce_and_default() -> None:
    called = load_workflow(CALLED, "called.yml")
    job = caller(GOOD_CALL.replace("flag: true", "flag: ${{ matrix.flag }}"))
    contexts = {"github": {"ref": "refs/heads/main"}, "matrix": {"who": "me", "flag": "true"}}
    assert reusable.call_inputs(job, called, contexts) == {
        "name": "me",
        "flag": True,
        "count": 2,
        "ref": "refs/heads/main",
    }
    bad = {**contexts, "matrix": {"who": "me", "flag": "maybe"}}
    with pytest.raises(WorkflowError, match=r"jobs.call.with.flag: expected true or false"):
        reusable.call_inputs(job, called, bad)


def test_call_secrets_mapping_inherit_and_token() -> None:
    job = caller(GOOD_CALL).job
    given = {"TOKEN": "t0k", "OTHER": "o", "GITHUB_TOKEN": "gh"}
    contexts = {"secrets": given}
    assert reusable.call_secrets(job, contexts, given) == {"TOKEN": "t0k", "GITHUB_TOKEN": "gh"}
    inherit = caller("    uses: ./.github/workflows/x.yml\n    secrets: inherit\n").job
    assert reusable.call_secrets(inherit, contexts, given) == given
    none = caller("    uses: ./.github/workflows/x.yml\n").job
    assert reusable.call_secrets(none, contexts, given) == {"GITHUB_TOKEN": "gh"}


def test_call_outputs_read_the_jobs_context() -> None:
    called = load_workflow(CALLED, "called.yml")
    jobs = jobs_context({"build": ("success", {"made": "app"}), "test": ("skipped", {})})
    assert jobs["test"] == {"result": "skipped", "outputs": {}}
    assert reusable.call_outputs(called, {"jobs": jobs}) == {"result": "app/success"}
    with pytest.raises(ExpressionError):
        reusable.call_outputs(called, {})


def test_event_detection_ignores_workflow_call_next_to_other_events() -> None:
    push = load_workflow("on: pull_request\njobs: {}\n", "a.yml")
    call = load_workflow("on: workflow_call\njobs: {}\n", "b.yml")
    assert planner.detect_event([push, call], None, detect=False) == "pull_request"
    assert planner.detect_event([call], None, detect=False) == "workflow_call"


def test_validate_accepts_calls_but_checks_their_templates() -> None:
    good = caller(GOOD_CALL)
    planner.validate_jobs([good])
    bad = caller(GOOD_CALL.replace("${{ matrix.who }}", "${{ matrix.who + }}"))
    with pytest.raises(WorkflowError, match=r"jobs\.call"):
        planner.validate_jobs([bad])


def test_workflow_call_secrets_and_outputs_are_validated() -> None:
    with pytest.raises(WorkflowError, match=r"outputs.x: 'value' is required"):
        load_workflow(
            "on:\n  workflow_call:\n    outputs:\n      x:\n        description: d\njobs: {}\n",
            "w.yml",
        )
    with pytest.raises(WorkflowError, match=r"secrets.s: unexpected key 'default'"):
        load_workflow(
            "on:\n  workflow_call:\n    secrets:\n      s:\n        default: d\njobs: {}\n",
            "w.yml",
        )
