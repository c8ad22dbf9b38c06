"""Templates, interpolation of structures, conditions, syntax errors and limits."""

from __future__ import annotations

from typing import Any

import pytest

from trio_runner.workflow.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    FixedStatus,
    calls_hash_files,
    check_templates,
    evaluate,
    evaluate_condition,
    evaluate_template,
    interpolate,
    render_template,
)

CONTEXTS: dict[str, Any] = {
    "github": {"ref": "refs/heads/main", "event_name": "push"},
    "matrix": {"os": "linux", "versions": [1, 2]},
    "env": {"NAME": "x", "EXPR": "${{ github.ref }}"},
    "needs": {},
}
SUCCESS = FixedStatus.for_job_status("success")
FAILURE = FixedStatus.for_job_status("failure")
CANCELLED = FixedStatus.for_job_status("cancelled")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("${{ matrix.versions }}", [1, 2]),
        ("${{ 1 }}", 1),
        ("${{ null }}", None),
        ("${{ true }}", True),
        (" ${{ 1 }}", " 1"),
        ("a ${{ github.ref }} b ${{ matrix.os }}", "a refs/heads/main b linux"),
        ("${{ 1 }}${{ 2 }}", "12"),
        ("v=${{ matrix.versions }}", "v=Array"),
        ("${{ '${{' }} literal }}", "${{ literal }}"),
        ("${{ '}}' }}", "}}"),
        ("${{ 'it''s' }}", "it's"),
        ("${{ env.EXPR }}", "${{ github.ref }}"),
        ("{{ not an expression }}", "{{ not an expression }}"),
        ("${{ null }}-${{ false }}", "-false"),
        ("trailing }}", "trailing }}"),
    ],
)
def test_evaluate_template(template: str, expected: Any) -> None:
    assert evaluate_template(template, CONTEXTS) == expected


def test_render_template_needs_scalars() -> None:
    assert render_template("${{ 1.50 }}", CONTEXTS) == "1.5"
    assert render_template("${{ null }}", CONTEXTS) == ""
    assert render_template("x ${{ matrix.versions }}", CONTEXTS) == "x Array"
    with pytest.raises(ExpressionError, match="A sequence was not expected"):
        render_template("${{ matrix.versions }}", CONTEXTS)
    with pytest.raises(ExpressionError, match="A mapping was not expected"):
        render_template("${{ matrix }}", CONTEXTS)


def test_interpolate_structures() -> None:
    value = {
        "${{ matrix.os }}": "${{ matrix.os }}",
        "list": ["a", "${{ matrix.versions }}", "${{ 3 }}", " ${{ matrix.versions }}", 4],
        "nested": {"flag": True, "text": "${{ github.event_name }}!"},
    }
    assert interpolate(value, CONTEXTS) == {
        "${{ matrix.os }}": "linux",
        "list": ["a", 1, 2, 3, " Array", 4],
        "nested": {"flag": True, "text": "push!"},
    }
    assert interpolate(["${{ matrix.versions }}"], CONTEXTS, splice=False) == [[1, 2]]
    assert interpolate(None, CONTEXTS) is None


@pytest.mark.parametrize(
    ("condition", "status", "expected"),
    [
        ("", SUCCESS, True),
        ("", FAILURE, False),
        (None, SUCCESS, True),
        (True, SUCCESS, True),
        (False, SUCCESS, False),
        (True, FAILURE, False),
        ("github.ref == 'refs/heads/main'", SUCCESS, True),
        ("github.ref == 'refs/heads/main'", FAILURE, False),
        ("github.ref == 'refs/heads/other'", SUCCESS, False),
        ("${{ github.ref == 'refs/heads/main' }}", SUCCESS, True),
        ("${{ github.ref == 'refs/heads/main' }}", FAILURE, False),
        ("  ${{ matrix.os }}  ", SUCCESS, True),
        ("failure()", FAILURE, True),
        ("failure()", SUCCESS, False),
        ("${{ failure() || env.NAME }}", SUCCESS, True),
        ("always()", CANCELLED, True),
        ("ALWAYS() && false", CANCELLED, False),
        ("cancelled()", CANCELLED, True),
        ("success()", CANCELLED, False),
        ("!cancelled()", FAILURE, True),
        ("x ${{ false }}", SUCCESS, True),
        ("x ${{ false }}", FAILURE, False),
        ("x ${{ always() }}", FAILURE, True),
        ("${{ false }}", SUCCESS, False),
        ("matrix.missing", SUCCESS, False),
        (0, SUCCESS, False),
    ],
)
def test_conditions(condition: Any, status: FixedStatus, expected: bool) -> None:
    assert evaluate_condition(condition, CONTEXTS, status=status) is expected


def test_condition_default_check_skips_evaluation_when_not_successful() -> None:
    # success() && (...) short-circuits, so a failing operand is never evaluated.
    assert evaluate_condition("fromJSON('bad')", CONTEXTS, status=FAILURE) is False
    with pytest.raises(ExpressionError):
        evaluate_condition("fromJSON('bad')", CONTEXTS, status=SUCCESS)


def test_condition_names_are_checked_even_when_short_circuited() -> None:
    with pytest.raises(ExpressionError, match="Unrecognized named-value: 'secrets'"):
        evaluate_condition("secrets.X", CONTEXTS, status=FAILURE)


def test_condition_as_written() -> None:
    assert evaluate_condition("true", CONTEXTS, status=FAILURE, default_check=False) is True
    assert evaluate_condition("${{ 1 }}", CONTEXTS, status=FAILURE, default_check=False) is True
    assert evaluate_condition("0", CONTEXTS, status=SUCCESS, default_check=False) is False


def test_job_level_status() -> None:
    ok = FixedStatus.for_needs(["success", "success"], cancelling=False)
    failed = FixedStatus.for_needs(["success", "failure"], cancelling=False)
    skipped = FixedStatus.for_needs(["skipped"], cancelling=False)
    assert evaluate_condition("", CONTEXTS, status=ok) is True
    assert evaluate_condition("", CONTEXTS, status=FixedStatus.for_needs([], cancelling=False))
    assert evaluate_condition("", CONTEXTS, status=failed) is False
    assert evaluate_condition("failure()", CONTEXTS, status=failed) is True
    assert evaluate_condition("failure()", CONTEXTS, status=skipped) is False
    assert evaluate_condition("", CONTEXTS, status=skipped) is False
    cancelling = FixedStatus.for_needs(["success"], cancelling=True)
    assert evaluate_condition("cancelled()", CONTEXTS, status=cancelling) is True


def test_composite_status() -> None:
    failed = FixedStatus.for_composite(sub_step_failed=True, job_status="success")
    assert evaluate_condition("", CONTEXTS, status=failed) is False
    assert evaluate_condition("failure()", CONTEXTS, status=failed) is True
    fine = FixedStatus.for_composite(sub_step_failed=False, job_status="failure")
    assert evaluate_condition("", CONTEXTS, status=fine) is True
    cancelled = FixedStatus.for_composite(sub_step_failed=False, job_status="cancelled")
    assert evaluate_condition("", CONTEXTS, status=cancelled) is False
    assert evaluate_condition("cancelled()", CONTEXTS, status=cancelled) is True


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("a == @", "Unexpected symbol: '@'. Located at position 6 within expression: a == @"),
        ('github.ref == "x"', "Unexpected symbol: '\"x\"'. Located at position 15"),
        ("'unterminated", "Unexpected symbol: ''unterminated'. Located at position 1"),
        ("github.ref = 'x'", "Unexpected symbol: '='. Located at position 12"),
        ("a & b", "Unexpected symbol: '&'. Located at position 3"),
        ("1 2", "Unexpected symbol: '2'. Located at position 3"),
        ("github.", "Unexpected end of expression. Located at position 8"),
        ("github.1", "Unexpected symbol: '1'. Located at position 8"),
        ("(1", "Unexpected end of expression"),
        ("1)", "Unexpected symbol: ')'. Located at position 2"),
        ("contains('a'", "Unexpected end of expression"),
        ("contains('a' 'b')", "Unexpected symbol: ''b''. Located at position 14"),
        ("a[1", "Unexpected end of expression"),
        ("a[*", "Unexpected end of expression"),
        ("*", "Unexpected symbol: '*'. Located at position 1"),
        ("1abc", "Unexpected symbol: '1abc'. Located at position 1"),
        ("- 1", "Unexpected symbol: '-'. Located at position 1"),
        ("0x", "Unexpected symbol: '0x'"),
        ("0x100000000", "Unexpected symbol: '0x100000000'"),
        ("!", "Unexpected end of expression"),
        ("a ==", "Unexpected end of expression"),
        ("&& a", "Unexpected symbol: '&&'. Located at position 1"),
        ("foo()", "Unrecognized function: 'foo'. Located at position 1"),
        ("contains('a')", "Too few parameters supplied: 'contains'"),
        ("toJSON(1, 2)", "Too many parameters supplied: 'toJSON'"),
        ("success(1)", "Too many parameters supplied: 'success'"),
        ("case(true, 1)", "Too few parameters supplied: 'case'"),
        ("case(true, 1, false, 2)", "An odd number of parameters is required: 'case'"),
        ("format()", "Too few parameters supplied: 'format'"),
        ("github.ref == secrets.x", "Unrecognized named-value: 'secrets'. Located at position 15"),
        ("", "An expression was expected"),
    ],
)
def test_errors_name_problem_and_position(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression, CONTEXTS)
    assert message in str(caught.value)


def test_error_attributes() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate("  a == @", CONTEXTS)
    assert caught.value.position == 6
    assert caught.value.expression == "a == @"
    assert caught.value.description == "Unexpected symbol: '@'"


def test_first_unknown_name_reported() -> None:
    with pytest.raises(ExpressionError, match="named-value: 'first'"):
        evaluate("first || hashFiles('x') || second", {})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("echo ${{ github.ref", "The expression is not closed"),
        ("${{ '}} }}", "The expression is not closed"),
        ("a ${{ }} b", "An expression was expected"),
        ("ok ${{ 1 }} then ${{ @ }}", "Unexpected symbol: '@'"),
    ],
)
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate_template(template, CONTEXTS)
    with pytest.raises(ExpressionError, match=message):
        check_templates({"k": [template]})


def test_template_with_unknown_name_fails_before_any_evaluation() -> None:
    with pytest.raises(ExpressionError, match="Unrecognized named-value: 'nope'"):
        evaluate_template("${{ fromJSON('bad') }} ${{ nope }}", CONTEXTS)


def test_calls_hash_files() -> None:
    assert calls_hash_files("key-${{ HASHFILES('**/lock') }}")
    assert calls_hash_files({"with": ["${{ 1 }}", {"k": "${{ hashFiles('x') }}"}]})
    assert not calls_hash_files("hashFiles('x')")
    assert calls_hash_files("hashFiles('x') != ''", condition=True)
    assert not calls_hash_files("", condition=True)
    assert not calls_hash_files(3)


def test_length_limit() -> None:
    ok = "'" + "a" * (MAX_LENGTH - 2) + "'"
    assert evaluate(ok, {}) == "a" * (MAX_LENGTH - 2)
    too_long = "'" + "a" * (MAX_LENGTH - 1) + "'"
    with pytest.raises(ExpressionError) as caught:
        evaluate(too_long, {})
    assert f"Exceeded max expression length {MAX_LENGTH}" in str(caught.value)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 5000 + "1" + ")" * 5000,
        "!" * 5000 + "true",
        "a" + ".b" * 5000,
        "a" + "[0]" * 3000,
        " == ".join(["1"] * 3000),
        " < ".join(["1"] * 3000),
        "format(" * 2000 + "'x'" + ")" * 2000,
        "a[" * 3000 + "0" + "]" * 3000,
    ],
)
def test_deep_nesting_rejected(expression: str) -> None:
    with pytest.raises(ExpressionError, match=f"Exceeded max expression depth {MAX_DEPTH}"):
        evaluate(expression, {"a": {}})


def test_moderate_nesting_and_long_chains_accepted() -> None:
    assert evaluate("(" * 40 + "1" + ")" * 40, {}) == 1
    assert evaluate(" || ".join(["false"] * 2000 + ["'end'"]), {}) == "end"
    assert evaluate(" && ".join(["1"] * 3000), {}) == 1


def test_huge_inputs_rejected_cleanly() -> None:
    with pytest.raises(ExpressionError):
        evaluate("fromJSON('" + "[" * 20000 + "')", {})
    deep = evaluate("fromJSON(x)", {"x": "[" * 900 + "]" * 900})
    with pytest.raises(ExpressionError, match="nested too deeply"):
        evaluate("toJSON(x)", {"x": _nest(5000)})
    assert isinstance(deep, list)
    assert evaluate("format('{0}', 1)", {}) == "1"
    with pytest.raises(ExpressionError):
        evaluate("format('{" + "9" * 5000 + "}', 1)", {})
    assert evaluate("'" + "0x" + "f" * 5000 + "' == 1", {}) is False


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def test_results_are_never_reevaluated() -> None:
    contexts = {"env": {"A": "${{ env.B }}", "B": "boom"}}
    assert interpolate({"x": "${{ env.A }}"}, contexts) == {"x": "${{ env.B }}"}
