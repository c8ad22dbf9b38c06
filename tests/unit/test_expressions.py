"""Expression evaluation: literals, operators, coercion, property access, filters, functions."""

from __future__ import annotations

import math
from typing import Any

import pytest

from trio_runner.workflow.expressions import (
    CaseSensitiveDict,
    ExpressionError,
    FixedStatus,
    evaluate,
    is_truthy,
    to_json,
    to_number,
    to_string,
)

SHARED = {"name": "shared"}

CONTEXTS: dict[str, Any] = {
    "github": {
        "ref": "refs/heads/main",
        "event": {
            "labels": [{"name": "bug"}, {"name": "Docs"}, {"color": "red"}],
            "Number": 7,
        },
    },
    "matrix": {"os": "linux", "node": 18, "list": [1, 2, 3], "nested": [[1, 2], [3]]},
    "env": CaseSensitiveDict({"FOO": "upper", "foo": "lower"}),
    "vars": {"Empty": "", "zero": "0", "shared": SHARED, "same": SHARED},
    "steps": {"a": {"outputs": {"x": "1"}}, "b": {"outputs": {"x": "2"}}},
}


def ev(expression: str) -> Any:
    return evaluate(expression, CONTEXTS)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("null", None),
        ("true", True),
        ("false", False),
        ("711", 711),
        ("-9.2", -9.2),
        (".5", 0.5),
        ("5.", 5),
        ("+3", 3),
        ("0xff", 255),
        ("0xFFFFFFFF", -1),
        ("0o17", 15),
        ("-2.99e-2", -0.0299),
        ("1E3", 1000),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("'Mona the Octocat'", "Mona the Octocat"),
        ("'It''s open source!'", "It's open source!"),
        ("''", ""),
        ("(1)", 1),
        ("  'spaced'  ", "spaced"),
    ],
)
def test_literals(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


def test_nan_literal() -> None:
    assert math.isnan(ev("NaN"))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # equality and coercion
        ("null == null", True),
        ("null == 0", True),
        ("null == ''", True),
        ("null == 'abc'", False),
        ("null == false", True),
        ("true == 1", True),
        ("false == 0", True),
        ("true == 'true'", False),
        ("true == '1'", True),
        ("'' == 0", True),
        ("' 123.5 ' == 123.5", True),
        ("'0xff' == 255", True),
        ("'0o10' == 8", True),
        ("'abc' == 'ABC'", True),
        ("'abc' != 'ABD'", True),
        ("NaN == NaN", False),
        ("NaN != NaN", True),
        ("'NaN' == NaN", False),
        ("' Infinity ' == Infinity", True),
        ("1 == 1.0", True),
        ("matrix.node == '18'", True),
        ("matrix.list == matrix.list", True),
        ("fromJSON('[]') == fromJSON('[]')", False),
        ("vars.shared == vars.same", True),
        ("github.event == 'Object'", False),
        ("matrix.list == 0", False),
        ("true == matrix.list", False),
        # ordering
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("'a' < 'B'", True),
        ("'abc' < 'ABD'", True),
        ("'_' > 'a'", True),  # upper-cased: '_' (0x5F) sorts after 'A' (0x41)
        ("false < true", True),
        ("true > false", True),
        ("null < 1", True),
        ("'10' > 9", True),
        ("'x' < 1", False),
        ("'x' >= 1", False),
        ("NaN < 1", False),
        ("NaN >= NaN", False),
        ("matrix.list < matrix.list", False),
        ("matrix.list <= matrix.list", True),
        # not / and / or keep operand values
        ("!null", True),
        ("!0", True),
        ("!'x'", False),
        ("!!matrix.list", True),
        ("null || 'x'", "x"),
        ("'a' || 'b'", "a"),
        ("'' && 'b'", ""),
        ("1 && 'b'", "b"),
        ("0 || null", None),
        ("1 && 2 && 3", 3),
        ("null || 0 || ''", ""),
        ("false || 'fallback' && 'x'", "x"),
        # precedence
        ("!true == false", True),
        ("1 == 1 && 2 == 2", True),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("1 < 2 == true", True),
        ("!(1 == 2)", True),
    ],
)
def test_operators(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("github.ref", "refs/heads/main"),
        ("GITHUB.REF", "refs/heads/main"),
        ("github['ref']", "refs/heads/main"),
        ("github['REF']", "refs/heads/main"),
        ("github.event.number", 7),
        ("github.missing", None),
        ("github.missing.deeper", None),
        ("matrix.list[0]", 1),
        ("matrix.list['1']", 2),
        ("matrix.list[1.9]", 2),
        ("matrix.list[null]", 1),
        ("matrix.list[true]", 2),
        ("matrix.list[-1]", None),
        ("matrix.list[3]", None),
        ("matrix.list[NaN]", None),
        ("matrix.list['x']", None),
        ("matrix.os.length", None),
        ("matrix.node.x", None),
        ("github[matrix.list]", None),
        ('fromJSON(\'{"1": "one"}\')[1]', "one"),
        ("github.event.labels[0].name", "bug"),
        ("env.FOO", "upper"),
        ("env.foo", "lower"),
        ("env.Foo", None),
        ("steps.a.outputs.x", "1"),
        ("vars.null", None),
    ],
)
def test_property_access(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("github.event.labels.*.name", ["bug", "Docs"]),
        ("github.event.labels[*].name", ["bug", "Docs"]),
        ("github.event.labels.*['NAME']", ["bug", "Docs"]),
        ("steps.*.outputs.x", ["1", "2"]),
        ("matrix.list.*", [1, 2, 3]),
        ("matrix.nested.*[0]", [1, 3]),
        ("matrix.nested.*.*", [1, 2, 3]),
        ("matrix.nested.*[5]", []),
        ("github.ref.*", []),
        ("github.missing.*.name", []),
        ("github.event.*", [[{"name": "bug"}, {"name": "Docs"}, {"color": "red"}], 7]),
        ("contains(github.event.labels.*.name, 'docs')", True),
        ("join(steps.*.outputs.x, '+')", "1+2"),
    ],
)
def test_object_filters(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("contains('Hello World', 'WORLD')", True),
        ("contains('abc', 'd')", False),
        ("contains('', '')", True),
        ("contains(123, 2)", True),
        ("contains(true, 'ru')", True),
        ("contains(null, '')", True),
        ("contains(matrix.list, 2)", True),
        ("contains(matrix.list, '2')", True),
        ("contains(matrix.list, 5)", False),
        ('contains(fromJSON(\'["push", "pull_request"]\'), github.event_name)', False),
        ("contains(fromJSON('[\"A\", \"b\"]'), 'a')", True),
        ("contains(github.event, 'labels')", False),
        ("contains('abc', matrix.list)", False),
        ("contains(fromJSON('[]'), 1)", False),
        ("startsWith('Hello', 'he')", True),
        ("startsWith('Hello', 'lo')", False),
        ("startsWith(12, 1)", True),
        ("startsWith(matrix.list, 1)", False),
        ("startsWith('x', matrix.list)", False),
        ("endsWith('Hello', 'LO')", True),
        ("endsWith('Hello', 'he')", False),
        ("EndsWith('a.TXT', '.txt')", True),
        ("format('Hello {0} {1} {2}', 'Mona', 'the', 'Octocat')", "Hello Mona the Octocat"),
        ("format('{{Hello {0} {1} {2}!}}', 'Mona', 'the', 'Octocat')", "{Hello Mona the Octocat!}"),
        ("format('{0}{0}', 'x')", "xx"),
        ("format('{{0}}', 'abc')", "{0}"),
        ("format('{{{{0}}}}', 'abc')", "{{0}}"),
        ("format('}}')", "}"),
        ("format('{0:x}', 'spec')", "spec"),
        ("format('{000}', 'zero')", "zero"),
        ("format('{1}', 'a', 'b')", "b"),
        ("format(null)", ""),
        ("format('{0}|{1}|{2}|{3}', null, true, 1.5, matrix.list)", "|true|1.5|Array"),
        ("format('{0}', github)", "Object"),
        ("join(matrix.list)", "1,2,3"),
        ("join(matrix.list, ', ')", "1, 2, 3"),
        ("join(matrix.list, matrix.list)", "1,2,3"),
        ("join('abc', '-')", "abc"),
        ("join(null)", ""),
        ("join(github)", ""),
        ("join(fromJSON('[]'), 'x')", ""),
        ("join(fromJSON('[1, null, true, [1]]'))", "1,,true,Array"),
        ("toJSON(null)", "null"),
        ("toJSON(-0)", "0"),
        ("toJSON(1234.5)", "1234.5"),
        ("toJSON('a\"b')", '"a\\"b"'),
        ("toJSON('<&>')", '"<&>"'),
        ("toJSON(fromJSON('[]'))", "[]"),
        ("toJSON(fromJSON('{}'))", "{}"),
        ("toJSON(fromJSON('[1,{\"a\":true}]'))", '[\n  1,\n  {\n    "a": true\n  }\n]'),
        ("toJSON(matrix.list)", "[\n  1,\n  2,\n  3\n]"),
        ("fromJSON('{\"a\": [1, 2.5, null]}').a[1]", 2.5),
        ("fromJSON('\"text\"')", "text"),
        ("fromJSON(' true ')", True),
        ("fromJSON(123)", 123),
        ("fromJSON(vars.zero) == 0", True),
        ("case(true, 'a', 'b')", "a"),
        ("case(false, 'a', 'b')", "b"),
        ("case(false, 'a', 1 == 1, 'b', 'c')", "b"),
        ("case(false, 'a', false, 'b', 'c')", "c"),
        ("CONTAINS('ab', 'B')", True),
        ("ToJson(1)", "1"),
    ],
)
def test_functions(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


def test_from_json_numbers_are_doubles() -> None:
    value = ev("fromJSON('{\"n\": 1}')")
    assert isinstance(value["n"], float)


def test_case_evaluates_only_the_chosen_branch() -> None:
    assert ev("case(true, 'a', fromJSON('not json'))") == "a"


def test_or_short_circuits_errors() -> None:
    assert ev("'x' || fromJSON('not json')") == "x"
    assert ev("'' && fromJSON('not json')") == ""


def test_format_does_not_evaluate_unused_arguments() -> None:
    assert ev("format('{0}', 'a', fromJSON('bad'))") == "a"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("format('{0', 1)", "The following format string is invalid: '{0'"),
        ("format('{0}}', 1)", "The following format string is invalid"),
        ("format('}', 1)", "The following format string is invalid"),
        ("format('{x}', 1)", "The following format string is invalid"),
        ("format('{256}', 1)", "The following format string is invalid"),
        ("format('{}', 1)", "The following format string is invalid"),
        (
            "format('{0} {1}', 'a')",
            "The following format string references more arguments than were supplied",
        ),
        ("fromJSON('{bad')", "Error parsing fromJSON"),
        ("fromJSON('')", "Error parsing fromJSON"),
        ("case(1, 'a', 'b')", "case() expects a boolean predicate, got number: 1"),
        ("case('true', 'a', 'b')", "case() expects a boolean predicate, got string"),
    ],
)
def test_function_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        ev(expression)
    assert message in str(caught.value)
    assert "Located at position 1 within expression: " + expression in str(caught.value)


def test_format_error_names_source_not_value() -> None:
    contexts = {"secrets": {"TOKEN": "{s3cret"}}
    with pytest.raises(ExpressionError) as caught:
        evaluate("format(secrets.TOKEN)", contexts)
    assert "s3cret" not in str(caught.value)
    assert "secrets.TOKEN" in str(caught.value)


def test_from_json_error_does_not_echo_input() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate("fromJSON(secrets.X)", {"secrets": {"X": "hunter2-not-json"}})
    assert "hunter2" not in str(caught.value)


def test_status_functions_use_hooks() -> None:
    status = FixedStatus(is_success=False, is_failure=True, is_cancelled=False)
    assert evaluate("failure()", {}, status=status) is True
    assert evaluate("success()", {}, status=status) is False
    assert evaluate("cancelled()", {}, status=status) is False
    assert evaluate("always()", {}, status=status) is True
    assert evaluate("Success() || 'no'", {}, status=status) == "no"


def test_status_functions_need_a_hook() -> None:
    with pytest.raises(ExpressionError, match="Unrecognized function: 'success'"):
        evaluate("success()", {})


def test_hash_files_uses_hook() -> None:
    seen: list[list[str]] = []

    def hook(patterns: Any) -> str:
        seen.append(list(patterns))
        return "abc"

    assert evaluate("hashFiles('a/**', 1)", {}, hash_files=hook) == "abc"
    assert seen == [["a/**", "1"]]
    with pytest.raises(ExpressionError, match="Unrecognized function: 'hashFiles'"):
        evaluate("hashFiles('x')", {})


def test_hash_files_hook_failure_is_expression_error() -> None:
    def hook(patterns: Any) -> str:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(ExpressionError, match=r"hashFiles\('x'\) failed: Permission denied"):
        evaluate("hashFiles('x')", {}, hash_files=hook)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (16, "16"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (1 / 3, "0.333333333333333"),
        (123456789012345.0, "123456789012345"),
        (1e15, "1E+15"),
        (1e-5, "1E-05"),
        (0.0001, "0.0001"),
        (10**400, "Infinity"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (math.nan, "NaN"),
        ("text", "text"),
        ([1], "Array"),
        ({"a": 1}, "Object"),
    ],
)
def test_to_string(value: Any, text: str) -> None:
    assert to_string(value) == text


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        (False, False),
        (0, False),
        (-0.0, False),
        (math.nan, False),
        ("", False),
        (True, True),
        (1, True),
        ("0", True),
        ("false", True),
        ([], True),
        ({}, True),
    ],
)
def test_truthiness(value: Any, truthy: bool) -> None:
    assert is_truthy(value) is truthy


@pytest.mark.parametrize(
    ("value", "number"),
    [(None, 0), (True, 1), ("", 0), ("  ", 0), (" 12 ", 12), ("0x10", 16), ("1e2", 100)],
)
def test_to_number(value: Any, number: float) -> None:
    assert to_number(value) == number


@pytest.mark.parametrize("value", ["abc", "1_000", "0X10", "inf", "1e", [], {}])
def test_to_number_nan(value: Any) -> None:
    assert math.isnan(to_number(value))


def test_to_json_keeps_insertion_order_and_nesting() -> None:
    assert to_json({"b": 1, "a": {"c": []}}) == '{\n  "b": 1,\n  "a": {\n    "c": []\n  }\n}'


def test_context_names_are_case_insensitive() -> None:
    assert evaluate("Matrix.OS", {"matrix": {"os": "linux"}}) == "linux"
