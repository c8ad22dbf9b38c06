"""Evaluation of a parsed expression against contexts and caller hooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ExpressionError
from .functions import FUNCTIONS, HashFilesHook
from .parser import And, Call, Compare, Expression, Index, Literal, NamedValue, Node, Not, Or
from .parser import Wildcard as WildcardNode
from .status import StatusFunctions
from .values import (
    MISSING,
    FilteredArray,
    Kind,
    array_position,
    get_property,
    is_primitive,
    is_truthy,
    kind_of,
    loose_equal,
    loose_greater,
    loose_less,
    to_string,
)


@dataclass(frozen=True, slots=True)
class Scope:
    """What an expression may see: contexts by upper-cased name, status and hashFiles hooks."""

    contexts: Mapping[str, Any]
    status: StatusFunctions | None = None
    hash_files: HashFilesHook | None = None

    @classmethod
    def create(
        cls,
        contexts: Mapping[str, Any],
        status: StatusFunctions | None = None,
        hash_files: HashFilesHook | None = None,
    ) -> Scope:
        return cls({name.upper(): value for name, value in contexts.items()}, status, hash_files)


def validate(expression: Expression, scope: Scope) -> None:
    """Reject unknown context names and functions the scope does not offer, first one first."""
    problems: list[tuple[int, str, str]] = [
        (named.index, "Unrecognized named-value", named.name)
        for named in expression.named_values
        if named.name.upper() not in scope.contexts
    ]
    for call in expression.calls:
        hook = FUNCTIONS[call.name].hook
        if (hook == "status" and scope.status is None) or (
            hook == "hash_files" and scope.hash_files is None
        ):
            problems.append((call.index, "Unrecognized function", call.raw_name))
    if problems:
        index, description, name = min(problems)
        raise ExpressionError(f"{description}: '{name}'", expression.text, index + 1)


def evaluate_expression(expression: Expression, scope: Scope) -> Any:
    validate(expression, scope)
    return _Evaluation(expression.text, scope).evaluate(expression.root)


class _Invocation:
    __slots__ = ("_call", "_evaluation")

    def __init__(self, call: Call, evaluation: _Evaluation) -> None:
        self._call = call
        self._evaluation = evaluation

    @property
    def arg_count(self) -> int:
        return len(self._call.args)

    def arg(self, number: int) -> Any:
        return self._evaluation.evaluate(self._call.args[number])

    def arg_source(self, number: int) -> str:
        return self._call.arg_sources[number]

    def error(self, description: str) -> ExpressionError:
        return ExpressionError(description, self._evaluation.text, self._call.index + 1)

    @property
    def status(self) -> StatusFunctions:
        status = self._evaluation.scope.status
        if status is None:  # validate() rejects such calls before evaluation starts
            raise self.error("Status functions are not available here")
        return status

    @property
    def hash_files(self) -> HashFilesHook:
        hook = self._evaluation.scope.hash_files
        if hook is None:  # validate() rejects such calls before evaluation starts
            raise self.error("hashFiles is not available here")
        return hook


def _filter(items: FilteredArray, key: Any, wildcard: bool) -> FilteredArray:
    """Apply ``.*`` / ``.p`` / ``[k]`` to every element of a filtered array, skipping misses."""
    result = FilteredArray()
    for item in items:
        kind = kind_of(item)
        if kind is Kind.OBJECT:
            if wildcard:
                result.extend(item.values())
            elif is_primitive(key):
                value = get_property(item, to_string(key))
                if value is not MISSING:
                    result.append(value)
        elif kind is Kind.ARRAY:
            if wildcard:
                result.extend(item)
            else:
                position = array_position(key)
                if position is not None and position < len(item):
                    result.append(item[position])
    return result


class _Evaluation:
    __slots__ = ("scope", "text")

    def __init__(self, text: str, scope: Scope) -> None:
        self.text = text
        self.scope = scope

    def evaluate(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, NamedValue):
            return self.scope.contexts[node.name.upper()]
        if isinstance(node, Index):
            return self._index(node)
        if isinstance(node, Not):
            return not is_truthy(self.evaluate(node.operand))
        if isinstance(node, Compare):
            return _compare(node.operator, self.evaluate(node.left), self.evaluate(node.right))
        if isinstance(node, And | Or):
            want = isinstance(node, Or)
            value: Any = None
            for operand in node.operands:
                value = self.evaluate(operand)
                if is_truthy(value) is want:
                    return value
            return value
        return FUNCTIONS[node.name].implementation(_Invocation(node, self))

    def _index(self, node: Index) -> Any:
        target = self.evaluate(node.target)
        wildcard = isinstance(node.key, WildcardNode)
        kind = kind_of(target)
        if kind not in (Kind.ARRAY, Kind.OBJECT):
            return FilteredArray() if wildcard else None
        key = None if isinstance(node.key, WildcardNode) else self.evaluate(node.key)
        if isinstance(target, FilteredArray):
            return _filter(target, key, wildcard)
        if kind is Kind.OBJECT:
            if wildcard:
                return FilteredArray(target.values())
            if not is_primitive(key):
                return None
            value = get_property(target, to_string(key))
            return None if value is MISSING else value
        if wildcard:
            return FilteredArray(target)
        position = array_position(key)
        if position is None or position >= len(target):
            return None
        return target[position]


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "==":
        return loose_equal(left, right)
    if operator == "!=":
        return not loose_equal(left, right)
    if operator == "<":
        return loose_less(left, right)
    if operator == ">":
        return loose_greater(left, right)
    if operator == "<=":
        return loose_less(left, right) or loose_equal(left, right)
    return loose_greater(left, right) or loose_equal(left, right)
