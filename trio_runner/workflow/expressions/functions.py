"""The built-in functions: signatures (checked when parsing) and implementations.

Implementations receive an Invocation that evaluates arguments on demand, so
arguments a function does not need (``format`` placeholders never referenced,
``case`` branches not taken) are never evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from .errors import ExpressionError
from .status import StatusFunctions
from .values import Kind, is_primitive, kind_of, loose_equal, to_json, to_string

HashFilesHook = Callable[[Sequence[str]], str]


class Invocation(Protocol):
    """One call being evaluated."""

    @property
    def arg_count(self) -> int: ...

    def arg(self, number: int) -> Any: ...

    def arg_source(self, number: int) -> str: ...

    def error(self, description: str) -> ExpressionError: ...

    @property
    def status(self) -> StatusFunctions: ...

    @property
    def hash_files(self) -> HashFilesHook: ...


Hook = Literal["status", "hash_files"]


@dataclass(frozen=True, slots=True)
class Function:
    key: str
    min_args: int
    max_args: int | None
    implementation: Callable[[Invocation], Any]
    hook: Hook | None = None
    odd_args: bool = False


def _contains(call: Invocation) -> bool:
    search = call.arg(0)
    if is_primitive(search):
        item = call.arg(1)
        return is_primitive(item) and to_string(item).upper() in to_string(search).upper()
    if kind_of(search) is Kind.ARRAY and search:
        item = call.arg(1)
        return any(loose_equal(item, element) for element in search)
    return False


def _affix_test(test: Callable[[str, str], bool]) -> Callable[[Invocation], bool]:
    def implementation(call: Invocation) -> bool:
        text = call.arg(0)
        if not is_primitive(text):
            return False
        affix = call.arg(1)
        return is_primitive(affix) and test(to_string(text).upper(), to_string(affix).upper())

    return implementation


# "{N}" or "{N:spec}" with N in 0..255 (leading zeros allowed); the spec is ignored.
_PLACEHOLDER = re.compile(r"\{0*([0-9]{1,3})(?::[^{}]*)?\}")


def _format(call: Invocation) -> str:
    text = to_string(call.arg(0))
    rendered: dict[int, str] = {}
    out: list[str] = []
    position = 0
    while position < len(text):
        left = text.find("{", position)
        right = text.find("}", position)
        if left >= 0 and (right < 0 or right > left):
            if text.startswith("{", left + 1):
                out.append(text[position : left + 1])
                position = left + 2
                continue
            match = _PLACEHOLDER.match(text, left)
            if match is None or int(match.group(1)) > 255:
                raise call.error(f"The following format string is invalid: {call.arg_source(0)}")
            number = int(match.group(1))
            if number > call.arg_count - 2:
                raise call.error(
                    "The following format string references more arguments than were supplied: "
                    + call.arg_source(0)
                )
            if number not in rendered:
                rendered[number] = to_string(call.arg(number + 1))
            out.append(text[position:left])
            out.append(rendered[number])
            position = match.end()
        elif right >= 0:
            if not text.startswith("}", right + 1):
                raise call.error(f"The following format string is invalid: {call.arg_source(0)}")
            out.append(text[position : right + 1])
            position = right + 2
        else:
            out.append(text[position:])
            break
    return "".join(out)


def _join(call: Invocation) -> str:
    items = call.arg(0)
    kind = kind_of(items)
    if kind is Kind.ARRAY:
        separator = ","
        if len(items) > 1 and call.arg_count > 1:
            given = call.arg(1)
            if is_primitive(given):
                separator = to_string(given)
        return separator.join(to_string(item) for item in items)
    if kind is Kind.OBJECT:
        return ""
    return to_string(items)


def _to_json(call: Invocation) -> str:
    try:
        return to_json(call.arg(0))
    except RecursionError:
        raise call.error("toJSON: the value is nested too deeply") from None


def _from_json(call: Invocation) -> Any:
    text = to_string(call.arg(0))
    try:
        return json.loads(text, parse_int=float)
    except json.JSONDecodeError as error:
        # The message names the place only: the text itself may be secret.
        raise call.error(
            f"Error parsing fromJSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise call.error("Error parsing fromJSON: nested too deeply") from None


def _hash_files(call: Invocation) -> str:
    patterns = [to_string(call.arg(number)) for number in range(call.arg_count)]
    try:
        return call.hash_files(patterns)
    except (OSError, ValueError) as error:
        sources = ", ".join(call.arg_source(number) for number in range(call.arg_count))
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise call.error(f"hashFiles({sources}) failed: {reason}") from None


def _case(call: Invocation) -> Any:
    for number in range(0, call.arg_count - 1, 2):
        predicate = call.arg(number)
        if not isinstance(predicate, bool):
            raise call.error(
                f"case() expects a boolean predicate, got {kind_of(predicate).value}: "
                + call.arg_source(number)
            )
        if predicate:
            return call.arg(number + 1)
    return call.arg(call.arg_count - 1)


FUNCTIONS: Final[dict[str, Function]] = {
    function.key: function
    for function in (
        Function("contains", 2, 2, _contains),
        Function("startswith", 2, 2, _affix_test(str.startswith)),
        Function("endswith", 2, 2, _affix_test(str.endswith)),
        Function("format", 1, None, _format),
        Function("join", 1, 2, _join),
        Function("tojson", 1, 1, _to_json),
        Function("fromjson", 1, 1, _from_json),
        Function("hashfiles", 1, None, _hash_files, hook="hash_files"),
        Function("case", 3, None, _case, odd_args=True),
        Function("success", 0, 0, lambda call: call.status.success(), hook="status"),
        Function("failure", 0, 0, lambda call: call.status.failure(), hook="status"),
        Function("cancelled", 0, 0, lambda call: call.status.cancelled(), hook="status"),
        Function("always", 0, 0, lambda call: call.status.always(), hook="status"),
    )
}

STATUS_FUNCTIONS: Final = frozenset({"success", "failure", "cancelled", "always"})
