"""Expression values: kinds, conversions, truthiness, loose comparison, lookups, JSON text.

Values are plain Python data: ``None``, ``bool``, ``int``/``float`` (numbers, compared
as IEEE doubles), ``str``, ``list``/``tuple`` (arrays) and ``Mapping`` (objects).
Any other type is treated as a string of its ``str()``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final


class Kind(enum.Enum):
    NULL = "null"
    BOOLEAN = "boolean"
    NUMBER = "number"
    STRING = "string"
    ARRAY = "array"
    OBJECT = "object"


class CaseSensitiveDict(dict[str, Any]):
    """An object whose keys are matched exactly (the ``env`` context on Linux and macOS)."""


class FilteredArray(list[Any]):
    """The array made by ``*``: a following ``.p`` / ``[k]`` applies to each element."""


class _Missing:
    """Marks an absent property, distinct from a present ``null``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_HEX = re.compile(r"0x0*([0-9a-fA-F]+)\Z")
_OCTAL = re.compile(r"0o0*([0-7]+)\Z")
_UINT32_LIMIT = 1 << 32
_INT32_LIMIT = 1 << 31


def kind_of(value: Any) -> Kind:
    if value is None:
        return Kind.NULL
    if isinstance(value, bool):
        return Kind.BOOLEAN
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, Mapping):
        return Kind.OBJECT
    if isinstance(value, list | tuple):
        return Kind.ARRAY
    return Kind.STRING


def is_primitive(value: Any) -> bool:
    return kind_of(value) not in (Kind.ARRAY, Kind.OBJECT)


def _as_int32(digits: str, base: int) -> float:
    # Hex and octal literals are read as 32-bit two's complement, like the reference engine.
    if len(digits) > (8 if base == 16 else 11):
        return math.nan
    value = int(digits, base)
    if value >= _UINT32_LIMIT:
        return math.nan
    return float(value - _UINT32_LIMIT if value >= _INT32_LIMIT else value)


def parse_number(text: str) -> float:
    """Parse number text (decimal, ``0x``, ``0o``, ``Infinity``); empty is 0, invalid is NaN."""
    text = text.strip()
    if not text:
        return 0.0
    if _DECIMAL.match(text):
        return float(text)
    if match := _HEX.match(text):
        return _as_int32(match.group(1), 16)
    if match := _OCTAL.match(text):
        return _as_int32(match.group(1), 8)
    if text == "Infinity":
        return math.inf
    if text == "-Infinity":
        return -math.inf
    return math.nan


def _number(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def to_number(value: Any) -> float:
    kind = kind_of(value)
    if kind is Kind.NULL:
        return 0.0
    if kind is Kind.BOOLEAN:
        return 1.0 if value else 0.0
    if kind is Kind.NUMBER:
        return _number(value)
    if kind is Kind.STRING:
        return parse_number(to_string(value))
    return math.nan


def format_number(number: int | float) -> str:
    """15 significant digits, no trailing zeros, exponent form outside 1E-05..1E+15."""
    value = _number(number)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    return format(value, ".15G")


def to_string(value: Any) -> str:
    """The string conversion used by templates, ``format`` and the string functions."""
    kind = kind_of(value)
    if kind is Kind.NULL:
        return ""
    if kind is Kind.BOOLEAN:
        return "true" if value else "false"
    if kind is Kind.NUMBER:
        return format_number(value)
    if kind is Kind.ARRAY:
        return "Array"
    if kind is Kind.OBJECT:
        return "Object"
    return value if isinstance(value, str) else str(value)


def is_truthy(value: Any) -> bool:
    kind = kind_of(value)
    if kind is Kind.NULL:
        return False
    if kind is Kind.BOOLEAN:
        return bool(value)
    if kind is Kind.NUMBER:
        number = _number(value)
        return not (number == 0 or math.isnan(number))
    if kind is Kind.STRING:
        return to_string(value) != ""
    return True


class _Incomparable(Exception):
    """Operands of different kinds that no rule brings together."""


def _coerce(left: Any, right: Any) -> tuple[Kind, Any, Any]:
    """Bring both operands to one kind: number/string pairs and null/boolean become numbers."""
    left_kind, right_kind = kind_of(left), kind_of(right)
    while left_kind is not right_kind:
        if left_kind is Kind.NUMBER and right_kind is Kind.STRING:
            right, right_kind = to_number(right), Kind.NUMBER
        elif (left_kind is Kind.STRING and right_kind is Kind.NUMBER) or left_kind in (
            Kind.BOOLEAN,
            Kind.NULL,
        ):
            left, left_kind = to_number(left), Kind.NUMBER
        elif right_kind in (Kind.BOOLEAN, Kind.NULL):
            right, right_kind = to_number(right), Kind.NUMBER
        else:
            raise _Incomparable
    return left_kind, left, right


def loose_equal(left: Any, right: Any) -> bool:
    try:
        kind, left, right = _coerce(left, right)
    except _Incomparable:
        return False
    if kind is Kind.NULL:
        return True
    if kind is Kind.NUMBER:
        return _number(left) == _number(right)
    if kind is Kind.STRING:
        return to_string(left).upper() == to_string(right).upper()
    if kind is Kind.BOOLEAN:
        return bool(left) == bool(right)
    return left is right


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Comparable keys for ``<``/``>``, or None when the operands are not ordered."""
    try:
        kind, left, right = _coerce(left, right)
    except _Incomparable:
        return None
    if kind is Kind.NUMBER:
        return _number(left), _number(right)
    if kind is Kind.STRING:
        return to_string(left).upper(), to_string(right).upper()
    if kind is Kind.BOOLEAN:
        return bool(left), bool(right)
    return None


def loose_less(left: Any, right: Any) -> bool:
    keys = _ordered(left, right)
    return keys is not None and bool(keys[0] < keys[1])


def loose_greater(left: Any, right: Any) -> bool:
    keys = _ordered(left, right)
    return keys is not None and bool(keys[0] > keys[1])


def get_property(obj: Mapping[Any, Any], key: str) -> Any:
    """Case-insensitive key lookup (exact for CaseSensitiveDict); MISSING when absent."""
    if key in obj:
        return obj[key]
    if isinstance(obj, CaseSensitiveDict):
        return MISSING
    folded = key.upper()
    for name, value in obj.items():
        if isinstance(name, str) and name.upper() == folded:
            return value
    return MISSING


def array_position(key: Any) -> int | None:
    """The element number an index value designates, or None (negative, NaN, fraction floored)."""
    number = to_number(key)
    if math.isnan(number) or number < 0 or math.isinf(number):
        return None
    return math.floor(number)


def _write_json(value: Any, out: list[str], indent: str) -> None:
    kind = kind_of(value)
    if kind is Kind.NULL:
        out.append("null")
    elif kind is Kind.BOOLEAN:
        out.append("true" if value else "false")
    elif kind is Kind.NUMBER:
        out.append(format_number(value))
    elif kind is Kind.STRING:
        out.append(json.dumps(to_string(value), ensure_ascii=False))
    elif kind is Kind.ARRAY:
        if not value:
            out.append("[]")
            return
        inner = indent + "  "
        out.append("[")
        for number, item in enumerate(value):
            out.append(",\n" if number else "\n")
            out.append(inner)
            _write_json(item, out, inner)
        out.append(f"\n{indent}]")
    else:
        if not value:
            out.append("{}")
            return
        inner = indent + "  "
        out.append("{")
        for number, (key, item) in enumerate(value.items()):
            out.append(",\n" if number else "\n")
            out.append(f"{inner}{json.dumps(to_string(key), ensure_ascii=False)}: ")
            _write_json(item, out, inner)
        out.append(f"\n{indent}}}")


def to_json(value: Any) -> str:
    """JSON text with 2-space indentation, keys in insertion order, numbers as in to_string.

    Raises RecursionError for values nested beyond the interpreter's recursion limit.
    """
    out: list[str] = []
    _write_json(value, out, "")
    return "".join(out)
