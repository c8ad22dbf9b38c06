"""Pure helpers of step phases: string templates and process start failures."""

from __future__ import annotations

import pytest

from trio_runner.executor.steps import evaluate_env, render_text, start_failure
from trio_runner.workflow.expressions import ExpressionError

CONTEXTS = {"github": {"event": {"labels": ["a", "b"], "ref": "refs/heads/main"}}}


def test_render_text_refuses_structures_from_a_single_segment() -> None:
    with pytest.raises(ExpressionError, match="A mapping was not expected"):
        render_text("${{ github.event }}", CONTEXTS)
    with pytest.raises(ExpressionError, match="A sequence was not expected"):
        render_text("${{ github.event.labels }}", CONTEXTS)


def test_render_text_renders_embedded_structures_and_scalars() -> None:
    assert render_text("labels: ${{ github.event.labels }}", CONTEXTS) == "labels: Array"
    assert render_text("${{ github.event.ref }}", CONTEXTS) == "refs/heads/main"
    assert render_text("${{ 1 == 1 }}", CONTEXTS) == "true"
    assert render_text(3, CONTEXTS) == "3"
    assert render_text(True, CONTEXTS) == "true"


def test_step_env_values_must_be_strings() -> None:
    assert evaluate_env({"REF": "${{ github.event.ref }}"}, CONTEXTS) == {"REF": "refs/heads/main"}
    with pytest.raises(ExpressionError, match="A mapping was not expected"):
        evaluate_env({"WHOLE": "${{ github.event }}"}, CONTEXTS)


def test_start_failure_names_the_reason_and_the_path() -> None:
    error = FileNotFoundError(2, "No such file or directory", "/work/scripts")
    assert start_failure(error) == (
        "An error occurred trying to start the process: No such file or directory: '/work/scripts'"
    )
    assert start_failure(PermissionError("denied")) == (
        "An error occurred trying to start the process: denied"
    )
