"""Corpus workflows about shells, matrices, job graphs and job isolation, through
``exec -i -self-hosted``.

Same harness as test_corpus (``run_corpus``). Every expectation comes from GitHub's
documentation (workflow syntax: ``defaults.run.shell``, ``jobs.<job_id>.strategy``,
``jobs.<job_id>.needs``, "Using a matrix for your jobs", "Passing information between
jobs") or from spec/workflow-execution.md, never from what the runner happens to print.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_corpus import contains_in_order, run_corpus

# --- shells -----------------------------------------------------------------------------


def test_shell_templates_and_script_edges(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "shell-templates.yml")
    job = "Shell templates/templates"
    rows = run.rows(job)
    assert run.code == 0, run.output()
    # defaults.run.shell table: unspecified bash differs from an explicit `shell: bash`.
    assert "shell: bash -e {0}" in run.step_rows(job, 0)
    assert "shell: bash --noprofile --norc -eo pipefail {0}" in run.step_rows(job, 1)
    assert "shell: sh -e {0}" in run.step_rows(job, 2)
    assert "shell: python {0}" in run.step_rows(job, 3)
    assert {"default shell ran", "explicit bash ran", "sh ran", "python ran"} <= set(rows)
    # A step without output: only its header rows (the script, the shell).
    assert run.step_rows(job, 4)[-1] == "::endgroup::"
    assert "héllo wörld ✓ 日本語 🚀" in run.step_rows(job, 5)
    # The script is run by the template's command, so a `#!` line is only a comment.
    assert "bash read the shebang as a comment" in run.step_rows(job, 6)
    # stdout and stderr form one stream, in the order written (3.4).
    assert contains_in_order(run.step_rows(job, 7), ["out one", "err one", "out two", "err two"])
    assert "after false status=1" in run.step_rows(job, 8)
    long_rows = run.step_rows(job, 9)
    assert contains_in_order(long_rows, [f"long line {i:03d}" for i in range(1, 301)])
    # `-e`: the first failing command ends the script, with its exit code.
    middle = run.step_rows(job, 10)
    assert "before the failure" in middle and "must not print after false" not in middle
    assert "##[error]Process completed with exit code 1." in middle
    assert "##[error]Process completed with exit code 3." in run.step_rows(job, 11)
    # pipefail only with an explicit `shell: bash`.
    assert "must not print after the pipe" not in run.step_rows(job, 12)
    assert "default shell ignored the failing pipe" in run.step_rows(job, 13)
    # A shell that is not installed fails its step with a clear error (2.7).
    assert "##[error]Cannot find: pwsh in PATH" in run.step_rows(job, 14)
    assert "must not run" not in rows
    assert "middle=failure three=failure pipe=failure pwsh=failure" in rows
    assert run.steps(job) == [*["success"] * 10, *["failure"] * 3, "success", "failure", "success"]


def test_crlf_workflow_file(tmp_path: Path) -> None:
    # YAML folds CRLF line breaks in a block scalar to LF: the script has no stray CRs.
    run = run_corpus(tmp_path, "crlf-script.yml")
    assert run.code == 0, run.output()
    assert "crlf one two end" in run.rows("CRLF workflow/crlf")


# --- matrices ---------------------------------------------------------------------------


def test_matrix_legs_outputs_failures_and_types(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-legs.yml")
    typed = next(label for label in run.jobs if label.startswith("Matrix legs/typed"))
    assert run.code == 1, run.output()
    assert run.jobs == {
        "Matrix legs/ordered 1": "success",
        "Matrix legs/ordered 2": "success",
        "Matrix legs/ordered 3": "success",
        typed: "success",
        # fail-fast: false: the other leg runs to its own end.
        "Matrix legs/one-fails (good)": "success",
        "Matrix legs/one-fails (bad)": "failure",
        # fail-fast (the default) cancels the leg still running.
        "Matrix legs/cancelled-by-fail-fast (quick-fail)": "failure",
        "Matrix legs/cancelled-by-fail-fast (slow)": "cancelled",
        # An empty matrix vector is an error of the job's strategy, which fails the job.
        "Matrix legs/empty": "failure",
        # Spec 5.12 rule 5: a matrix with no dimensions and no include entries is one
        # empty combination.
        "Matrix legs/nothing-changed": "success",
        "Matrix legs/consume": "success",
    }
    # max-parallel: 1 runs the legs one after another, in matrix order.
    started = [e["job"] for e in run.events if e["type"] == "job_started"]
    ordered = [label for label in started if label.startswith("Matrix legs/ordered")]
    assert ordered == ["Matrix legs/ordered 1", "Matrix legs/ordered 2", "Matrix legs/ordered 3"]
    for n in (1, 2, 3):
        assert f"leg {n} index={n - 1} total=3" in run.rows(f"Matrix legs/ordered {n}")
    # Outputs of all legs are combined; on a clash the last leg to finish wins (1.5).
    assert "needs last=3 first=from-leg-1 result=success" in run.rows("Matrix legs/consume")
    # Numbers, booleans, objects and arrays as matrix values.
    assert "typed os=linux flag=-g level=3 enabled=false version=3.12 debug=true" in run.rows(typed)
    assert "config={" in run.rows(typed)
    assert '  "flags": [' in run.rows(typed)
    slow = run.rows("Matrix legs/cancelled-by-fail-fast (slow)")
    assert "slow leg must not finish" not in slow
    assert "slow leg started" in slow
    assert "empty matrix leg must not run" not in run.rows()
    assert any(
        e["type"] == "message"
        and e["job"] == "Matrix legs/empty"
        and "matrix-legs.yml:" in e["text"]
        and "Matrix vector 'service' does not contain any values" in e["text"]
        for e in run.events
    )
    assert "nothing-changed runs once with matrix={}" in run.rows("Matrix legs/nothing-changed")


def test_matrix_over_256_combinations_is_refused(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "matrix-too-big.yml")
    assert run.code == 2
    assert "matrix-too-big.yml:5:5" in run.stderr and "more than 256" in run.stderr
    assert run.events == []


# --- job graphs -------------------------------------------------------------------------


def test_job_graph_needs_conditions_and_timeout(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "job-graph.yml")
    assert run.code == 1, run.output()
    assert run.jobs == {
        "Job graph/setup": "success",
        "Job graph/left": "success",
        "Job graph/right": "success",
        "Job graph/join": "success",
        # A skipped job skips its dependants unless their `if` says otherwise.
        "Job graph/middle": "skipped",
        "Job graph/after-middle": "skipped",
        "Job graph/after-middle-always": "success",
        "Job graph/broken": "failure",
        "Job graph/after-broken": "skipped",
        "Job graph/cleanup": "success",
        "Job graph/on-failure": "success",
        "Job graph/job-timeout": "failure",
    }
    assert "left sees 1.2.3" in run.rows("Job graph/left")
    join = run.rows("Job graph/join")
    assert "join left+right results=success/success" in join
    # Output of a skipped step is empty; needs holds only the direct needs.
    assert "never='' setup-visible=" in join
    assert "always after middle=skipped" in run.rows("Job graph/after-middle-always")
    assert "cleanup broken=failure join=success" in run.rows("Job graph/cleanup")
    assert "failure handler ran" in run.rows("Job graph/on-failure")
    assert "must not run" not in " ".join(run.rows())
    # The join runs only after both sides of the diamond finished.
    finished = [e["job"] for e in run.events if e["type"] == "job_finished"]
    assert finished.index("Job graph/join") > max(
        finished.index("Job graph/left"), finished.index("Job graph/right")
    )
    timeout = run.rows("Job graph/job-timeout")
    assert (
        "##[error]The job running on runner trio-runner has exceeded the maximum execution "
        "time of 0.02 minutes." in timeout
    )
    assert run.steps("Job graph/job-timeout") == ["failure"]


def test_needs_of_an_unknown_job_is_refused(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "needs-unknown.yml")
    assert run.code == 2
    assert "needs-unknown.yml:9:" in run.stderr
    assert "'deploy'" in run.stderr and "'tset'" in run.stderr
    assert run.events == []


def test_needs_cycle_is_refused(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "needs-cycle.yml")
    assert run.code == 2
    assert "needs-cycle.yml:" in run.stderr and "cycle" in run.stderr
    assert run.events == []


# --- working directories and isolation --------------------------------------------------


def test_each_job_gets_a_fresh_workspace_temp_and_path(tmp_path: Path) -> None:
    run = run_corpus(tmp_path, "job-isolation.yml")
    first, second = "Job isolation/first", "Job isolation/second"
    assert run.code == 0, run.output()
    assert run.jobs == {first: "success", second: "success"}
    rows = run.rows(first)
    # The default working directory may be created by an earlier step (3.4).
    assert "cwd=build/out" in rows
    assert "path added" in rows
    # Environment variable names keep their case and dashes.
    assert {"lower=small", "dashed=dashed", "expr=dashed/small"} <= set(rows)
    later = run.rows(second)
    assert "repository files present" in later
    assert {"no first-only.txt", "no build dir", "runner temp empty=0", "path clean"} <= set(later)
    assert "first env=''" in later
    assert not [r for r in later if r.startswith("LEAK")]
    # Host mode: HOME is the runner's own, the same for every job (2.4).
    home = next(r for r in rows if r.startswith("home="))
    assert home in later
