"""Templates (text with ``${{ }}`` segments), structures of templates, and ``if`` conditions."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ExpressionError
from .evaluator import Scope, evaluate_expression, validate
from .parser import Expression, parse
from .values import Kind, is_truthy, kind_of, to_string

_OPEN = "${{"
_CLOSE = "}}"


@dataclass(frozen=True, slots=True)
class Template:
    """Literal text parts and parsed expression segments, in order."""

    parts: tuple[str | Expression, ...]

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(part for part in self.parts if isinstance(part, Expression))

    @property
    def single(self) -> Expression | None:
        """The expression when the template is exactly one segment and nothing else."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Expression):
            return self.parts[0]
        return None


# Templates can be whole scripts, so fewer of them are kept than single expressions.
@functools.lru_cache(maxsize=1024)
def parse_template(text: str) -> Template:
    """Split a template into text and parsed segments; raises ExpressionError."""
    parts: list[str | Expression] = []
    position = 0
    while (start := text.find(_OPEN, position)) >= 0:
        if start > position:
            parts.append(text[position:start])
        end = _segment_end(text, start + len(_OPEN))
        if end < 0:
            raise ExpressionError(
                "The expression is not closed. An unescaped ${{ sequence was found, "
                "but the closing }} sequence was not found",
                text,
                start + 1,
            )
        parts.append(parse(text[start + len(_OPEN) : end]))
        position = end + len(_CLOSE)
    if position < len(text):
        parts.append(text[position:])
    return Template(tuple(parts))


def _segment_end(text: str, position: int) -> int:
    """Index of the ``}}`` closing a segment, skipping quoted strings; -1 when unclosed."""
    in_string = False
    for index in range(position, len(text)):
        char = text[index]
        if char == "'":
            in_string = not in_string
        elif not in_string and char == "}" and text.startswith(_CLOSE, index):
            return index
    return -1


def evaluate_parsed_template(template: Template, scope: Scope) -> Any:
    for expression in template.expressions:
        validate(expression, scope)
    single = template.single
    if single is not None:
        return evaluate_expression(single, scope)
    return "".join(
        part if isinstance(part, str) else to_string(evaluate_expression(part, scope))
        for part in template.parts
    )


def render_parsed_template(template: Template, scope: Scope) -> str:
    value = evaluate_parsed_template(template, scope)
    kind = kind_of(value)
    if kind in (Kind.ARRAY, Kind.OBJECT):
        expression = template.single
        text = expression.text if expression is not None else ""
        noun = "sequence" if kind is Kind.ARRAY else "mapping"
        raise ExpressionError(f"A {noun} was not expected", text)
    return to_string(value)


def interpolate_value(value: Any, scope: Scope, *, splice: bool) -> Any:
    if isinstance(value, str):
        return evaluate_parsed_template(parse_template(value), scope)
    if isinstance(value, Mapping):
        return {key: interpolate_value(item, scope, splice=splice) for key, item in value.items()}
    if isinstance(value, list | tuple):
        result: list[Any] = []
        for item in value:
            evaluated = interpolate_value(item, scope, splice=splice)
            if (
                splice
                and isinstance(item, str)
                and parse_template(item).single is not None
                and kind_of(evaluated) is Kind.ARRAY
            ):
                result.extend(evaluated)
            else:
                result.append(evaluated)
        return result
    return value


def condition_text(condition: Any) -> str:
    """The text of an ``if`` value (YAML may give booleans or numbers), trimmed."""
    if isinstance(condition, str):
        return condition.strip()
    return to_string(condition).strip()


def evaluate_parsed_condition(text: str, scope: Scope, *, default_check: bool) -> bool:
    if not text:
        return _status_success(scope)
    if _OPEN in text:
        template = parse_template(text)
        expressions = template.expressions
        for expression in expressions:
            validate(expression, scope)
        calls_status = any(expression.calls_status_function for expression in expressions)
        if default_check and not calls_status and not _status_success(scope):
            return False
        return is_truthy(evaluate_parsed_template(template, scope))
    expression = parse(text)
    validate(expression, scope)
    if default_check and not expression.calls_status_function and not _status_success(scope):
        return False
    return is_truthy(evaluate_expression(expression, scope))


def _status_success(scope: Scope) -> bool:
    if scope.status is None:
        raise ExpressionError("Status functions are not available here", "success()")
    return scope.status.success()


def template_calls_function(value: Any, name: str, *, condition: bool = False) -> bool:
    """Whether any template in ``value`` calls function ``name`` (case-insensitive).

    With ``condition`` a string without ``${{`` counts as an implicit expression.
    Raises ExpressionError for syntax errors.
    """
    if isinstance(value, str):
        if condition and _OPEN not in value:
            return bool(value.strip()) and parse(value).calls_function(name)
        return any(part.calls_function(name) for part in parse_template(value).expressions)
    if isinstance(value, Mapping):
        return any(template_calls_function(item, name) for item in value.values())
    if isinstance(value, list | tuple):
        return any(template_calls_function(item, name) for item in value)
    return False


def check_templates(value: Any) -> None:
    """Parse every template in ``value`` (syntax, function names and arity only)."""
    if isinstance(value, str):
        parse_template(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            check_templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_templates(item)
