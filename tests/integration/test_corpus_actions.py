"""Corpus workflows (tests/workflows/corpus) about actions written the way real repositories
write them: JavaScript actions on the real ``@actions/core`` toolkit, composite actions,
metadata edge cases, container steps on a host runner, and workflow commands at the edges.

They run through ``trio-runner exec -i -self-hosted`` with test_corpus's helpers. Every
expectation comes from GitHub's documentation ("Metadata syntax for GitHub Actions",
"Creating a JavaScript action", "Creating a composite action", "Workflow commands for GitHub
Actions", the ``@actions/core`` README) or from spec/workflow-execution.md.

The toolkit is the one scripts/install-node-deps.sh installs under tests/node/node_modules;
``@actions/core`` 3.x is an ES module, so the test actions ``import`` it as bundled actions do,
and find it through a ``node_modules`` directory next to the action (a workspace one linked
by a step standing in for ``npm ci``, or one committed in a remote action's repository).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.action_repos import git
from tests.integration.action_repos import make_repo as make_action_repo
from tests.integration.test_corpus import CORPUS, contains_in_order, run_corpus

NODE_MODULES = Path(__file__).resolve().parent.parent / "node" / "node_modules"
#: The ``--var`` that tells the corpus workflows where the installed packages are.
NODE_MODULES_VAR = ("--var", f"TOOLKIT_NODE_MODULES={NODE_MODULES}")

needs_toolkit = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@actions" / "core").is_dir(),
    reason="node or tests/node/node_modules missing (run scripts/install-node-deps.sh)",
)


def lifecycle_repos(tmp_path: Path) -> str:
    """``file://`` base URL holding acme/lifecycle (corpus/js-lifecycle-action, tag v1) with
    its dependencies committed as ``node_modules``, as many published actions do."""
    work = tmp_path / "lifecycle-src"
    make_action_repo(work, CORPUS / "js-lifecycle-action")
    (work / "node_modules").symlink_to(NODE_MODULES)
    git("add", "node_modules", cwd=work)
    git("commit", "-q", "-m", "dependencies", cwd=work)
    git("tag", "-f", "v1", cwd=work)
    bare = tmp_path / "srv" / "acme" / "lifecycle"
    bare.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return f"file://{tmp_path / 'srv'}"


# --- JavaScript actions on the real toolkit ----------------------------------------------


@pytest.mark.node
@needs_toolkit
def test_toolkit_inputs_outputs_env_path_and_masks(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "js-toolkit.yml", *NODE_MODULES_VAR)
    job = "JavaScript toolkit actions/toolkit"
    demo = run.step_rows(job, 2)
    assert run.jobs[job] == "success", run.output()
    # getInput trims unless told not to; required, boolean and multi-line inputs (toolkit
    # README); an id with upper case and a dash is INPUT_UPPER-CASE (3.8).
    assert "name=[Mona] raw=[  Mona  ]" in demo
    assert "dry-run=true debug=false" in demo  # 'TRUE' is a YAML 1.2 boolean; no debug
    assert 'tags=["alpha","beta"]' in demo  # empty lines are dropped
    assert "upper=upper default env=upper default" in demo
    assert "::debug::a debug line nobody sees" not in run.rows(job)
    # setSecret is add-mask: the value is masked in this step and every later one.
    assert "the token is ***" in demo and "later: ***" in run.rows(job)
    assert not any("tok-mona-0451" in r for r in run.rows(job))
    # core.group / annotations with properties (8.4).
    assert contains_in_order(demo, ["::group::Toolkit group", "inside the group", "::endgroup::"])
    assert "::notice::src/app/index.js:3: Hint: Consider a newer API" in demo
    assert "::warning::src/app/index.js:7:9: Unused variable" in demo
    assert "::error::Plain error annotation" in demo
    # setOutput (objects as JSON), exportVariable, addPath reach the later steps (6.5).
    results = run.step_rows(job, 3)
    assert "greeting=Hello Mona json={who:Mona,n:2}" in results  # bash ate the quotes
    assert "exported=hi Mona ctx=hi Mona" in results
    assert "toolkit-tool on PATH" in results
    assert "summary is per step" in results  # the summary file is the step's own (6.6)


@pytest.mark.node
@needs_toolkit
def test_toolkit_set_failed_and_posts(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "js-toolkit.yml", *NODE_MODULES_VAR)
    job = "JavaScript toolkit actions/toolkit"
    assert run.code == 1, run.output()  # the post-order job fails on purpose
    # An empty required input throws; setFailed writes ::error:: and exits 1.
    missing = run.step_rows(job, 4)
    assert "::error::Input required and not supplied: name" in missing
    assert "##[error]Process completed with exit code 1." in missing
    assert "missing=failure/success out=[]" in run.rows(job)
    # node12 and Node16 (any case) run on the node found on PATH (3.7, 3.9).
    assert "legacy=node12,node16" in run.rows(job)
    assert "legacy node12 action ran, main=true" in run.step_rows(job, 6)
    # Posts: reverse step order, after a failing main too, state from main (2.9);
    # post-if: failure() does not run in a green job.
    setup = run.step_rows(job, None)
    assert contains_in_order(
        setup, ["cleanup greeted= missing=[]", "cleanup greeted=Mona missing=[]"]
    )
    # The summary file is shared by the phases of one step (6.6).
    assert setup.count("summary heading=true table=true") == 1
    assert "summary heading=false table=false" in setup  # the failed step wrote none
    assert "post first-success" not in run.rows(job)
    assert run.jobs[job] == "success"


def test_post_order_and_post_if_failure(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "js-toolkit.yml", *NODE_MODULES_VAR, "-j", "post-order")
    job = "JavaScript toolkit actions/post-order"
    assert run.code == 1, run.output()
    posts = [r for r in run.step_rows(job, None) if r.startswith("post ")]
    # Reverse order; the skipped step has no post; failure() holds once the job failed.
    assert posts == ["post three", "post greeted=two via_command=yes", "post one"]
    assert run.steps(job) == ["success", "success", "success", "failure", "skipped", "success"]
    assert run.jobs == {job: "failure"}


@pytest.mark.node
@needs_toolkit
def test_remote_action_pre_main_post_state(tmp_path: Path) -> None:
    run = run_corpus(
        tmp_path, "js-lifecycle.yml", "--default-actions-url", lifecycle_repos(tmp_path)
    )
    job = "JavaScript action lifecycle/lifecycle"
    setup = run.step_rows(job, None)
    assert run.code == 1, run.output()
    # pre-if is evaluated as written (runner.os), failure() is false during set-up (2.9).
    before = setup[: setup.index("Complete job name: lifecycle")]
    assert [r for r in before if r.startswith("pre ")] == ["pre Mona", "pre Fail"]
    assert "main Mona pre=[pre-of-Mona]" in run.step_rows(job, 0)
    assert "main Hubot pre=[]" in run.step_rows(job, 1)
    assert "::error::Fail asked to fail" in run.step_rows(job, 2)
    assert "first=pre-of-Mona failing=failure out=pre-of-Fail" in run.rows(job)
    # Posts in reverse order, each with the state of its own pre and main phases;
    # post-if: failure() runs now that the job failed.
    assert [r for r in setup if r.startswith("post ")] == [
        "post Fail pre=[pre-of-Fail] main=[main-of-Fail]",
        "post Hubot pre=[] main=[main-of-Hubot]",
        "post Mona pre=[pre-of-Mona] main=[main-of-Mona]",
    ]
    assert run.steps(job) == ["success", "success", "failure", "success"]


# --- composite actions as repositories write them ----------------------------------------


def test_shared_setup_composite(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "composite-real.yml")
    job = "Shared setup composite/build"
    first = run.step_rows(job, 1)
    assert run.code == 0, run.output()
    # action.yaml is found; scripts run from github.action_path / $GITHUB_ACTION_PATH.
    assert "preparing linux-x64 in build-env" in first
    assert "action path is the action directory" in first
    # GITHUB_ENV/GITHUB_PATH of a sub-step reach later sub-steps and the job (3.11).
    assert contains_in_order(
        first, ["target from env=linux-x64", "build-env-tool from the action's bin"]
    )
    assert "inner sees its own export=[packed] outer target=[linux-x64]" in first
    # if: on inputs; a tolerated failure keeps success() true and the composite green.
    assert "quiet build" in first and "verbose build of linux-x64" not in first
    assert "success() holds after a tolerated failure" in first
    assert "Hello linux-x64! spaced=spaced" in first  # a node action inside
    assert "inner action_path ends with .github/actions/build-env/inner" in first
    after = run.step_rows(job, 2)
    assert "artifact=linux-x64-packed.tar.gz greeted-at=noon" in after
    assert "inner=packed flaky=failure/success" in after
    assert "env target=linux-x64 inner=packed ctx=linux-x64" in after
    assert "build-env-tool from the action's bin" in after
    # Inner step ids are not in the job's steps context.
    assert "setup=success/success inner-step=[]" in after
    second = run.step_rows(job, 3)
    assert "verbose build of arm64" in second and "quiet build" not in second
    assert "second artifact=arm64-packed.tar.gz" in run.rows(job)
    # The node action's post runs in the composite's post phase, reverse order (3.11).
    posts = [r for r in run.step_rows(job, None) if r.startswith("post greeted=")]
    assert posts == ["post greeted=arm64 via_command=yes", "post greeted=linux-x64 via_command=yes"]
    assert run.steps(job) == ["success"] * 5


# --- metadata edge cases -----------------------------------------------------------------


def test_action_metadata_inputs(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "action-metadata.yml", "-s", "GITHUB_TOKEN=ghs_0123456789abcdef")
    job = "Action metadata/inputs"
    given = run.step_rows(job, 1)
    assert run.code == 0, run.output()
    # deprecationMessage and unexpected inputs are warnings (3.7); ids match any case.
    assert (
        "##[warning]Input 'old-name' has been deprecated with message: Use new-name instead."
        in (given)
    )
    assert (
        "##[warning]Unexpected input(s) 'surprise', valid inputs are "
        "['old-name', 'new-name', 'My-Input', 'token', 'ref', 'must-have']"
    ) in given
    assert "old=[legacy] new=[fallback]" in given
    # A required input without a default is just empty (3.7); defaults are templates.
    assert "my=[given in upper case] ref=[refs/heads/main] must=[]" in given
    assert "token-matches=true" in given
    assert "surprise=[unexpected]" in given  # every with key is exported (3.8)
    assert not any("ghs_0123456789abcdef" in r for r in run.rows(job))
    # Node action outputs: declared or not, what the action wrote (3.7).
    assert "result=declared extra=undeclared" in run.rows(job)
    defaults = run.step_rows(job, 3)
    assert not any(r.startswith("##[warning]") for r in defaults)
    assert "my=[Default Value] ref=[refs/heads/main] must=[]" in defaults
    assert "old=[] new=[fallback]" in defaults and "surprise=[unset]" in defaults
    # action.yml wins over action.yaml (3.6).
    assert "metadata from action.yml" in run.step_rows(job, 5)
    assert "metadata from action.yaml" not in run.rows(job)
    assert run.steps(job) == ["success"] * 6


def test_container_steps_on_a_host_runner_without_an_engine_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an engine, they would run in it (tests/integration/test_host_docker_steps.py).
    missing = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", missing)
    run = run_corpus(tmp_path, "container-steps.yml")
    job = "Container steps/containers"
    assert run.code == 0, run.output()
    for step, uses in ((1, "docker://alpine:3.19"), (2, "./.github/actions/container-lint")):
        errors = [r for r in run.step_rows(job, step) if r.startswith("##[error]")]
        assert len(errors) == 1, errors
        assert errors[0].startswith(
            f"##[error]'{uses}' is a docker action and could not run: "
            "no container engine answered: "
        )
        assert missing in errors[0]
    assert "image=failure dockerfile=failure" in run.rows(job)
    assert run.steps(job) == ["success", "failure", "failure", "success"]


# --- workflow commands at the edges ------------------------------------------------------


def test_masks_of_awkward_values(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "command-edges.yml")
    job = "Workflow command edges/commands"
    masks = run.step_rows(job, 0)
    assert run.code == 0, run.output()
    # The script itself is echoed in the header before its masks exist: only output counts.
    text = "\n".join(masks[masks.index("::endgroup::") + 1 :] + run.step_rows(job, 1))
    for secret in ("line-one-secret", "line-two-secret", "p@ss w0rd", "100%-secret", "grp-secret"):
        assert secret not in text
    # Each line of a multi-line mask is masked (7); %25 decodes to % (6.1).
    assert "first: ***" in masks and "second: ***" in masks
    assert "special: *** end" in masks and "percent: ***" in masks
    # Group titles and annotations are masked too, after the rewrite (7, 8.4).
    assert "::group::Deploying ***" in masks
    assert "::warning::app-***.js:2: *** check: leaked ***" in masks
    assert "::error::failed for ***" in masks
    assert "still masked *** ***" in run.step_rows(job, 1)


def test_stop_commands_and_echo(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "command-edges.yml")
    job = "Workflow command edges/commands"
    stop = run.step_rows(job, 2)
    assert run.code == 0, run.output()
    # While stopped nothing is a command; the token (any case) resumes; both markers are
    # dropped and a long token is masked (6.4).
    body = stop[stop.index("::endgroup::") + 1 :]
    assert body == [
        "::add-mask::not-a-mask-while-stopped",
        "::warning::not a warning while stopped",
        "not-a-mask-while-stopped",
        "::warning::back on",
        "token now: ***",
    ]
    # A command name as token is refused and fails the step; commands go on (6.4).
    refused = run.step_rows(job, 3)
    assert any(r.startswith("##[error]Invalid stop-commands token 'warning'") for r in refused)
    assert "::warning::after a refused token" in refused
    echo = run.step_rows(job, 4)
    assert contains_in_order(echo, ["::echo::on", "::notice::echoed notice", "::echo::off"])
    assert "badtoken=failure nodeopts=success node_options=[] legacy=[yes]" in run.rows(job)


def test_raw_output_repair(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "command-edges.yml")
    raw = run.step_rows("Workflow command edges/commands", 5)
    assert run.code == 0, run.output()
    long = next(r for r in raw if r.startswith("éé"))
    # Cut below Gitea's 64 KiB at a character boundary (8.1).
    assert len(long.encode()) <= 64 * 1024 and set(long) == {"é"}
    # CRLF: the CR goes with the line end; invalid UTF-8 becomes '?' (8.1).
    assert contains_in_order(raw, ["crlf line", "next", "bad ?? byte", "cut ??"])


def test_heredoc_delimiter_inside_value_and_node_options(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "command-edges.yml")
    job = "Workflow command edges/commands"
    heredoc = run.step_rows(job, 6)
    assert run.code == 0, run.output()
    # The first line equal to the delimiter ends the value; what follows must parse on its
    # own, else the file is malformed and the step fails (6.5). Pairs before the bad line
    # still apply, as in GitHub's runner.
    assert heredoc[-3:] == [
        "##[error]Unable to process file command 'env' successfully.",
        "##[error]Invalid format 'after'",
        "Failed but continue next step",
    ]
    assert contains_in_order(
        run.rows(job), ["note=[mentions EOF inside", "EOFX] body=[line] heredoc=failure output=yes"]
    )
    # NODE_OPTIONS is never set through set-env, even with unsecure commands allowed (6.3).
    assert "##[error]Can't update NODE_OPTIONS environment variable using ::set-env:: command." in (
        run.step_rows(job, 7)
    )
