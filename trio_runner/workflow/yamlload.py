"""YAML 1.2 (core schema) loading on top of PyYAML, into a small node tree with positions.

PyYAML implements YAML 1.1, where ``on``/``yes``/``no``/``y``/``n``/``off`` are booleans
and ``3.10`` silently becomes ``3.1``. Workflows need the 1.2 reading *and* the literal
source text of every scalar (a value that ends up as a string keeps its text, e.g.
``python-version: 3.10``). So only PyYAML's parser and composer are used; plain scalars
are tagged with a private marker and typed here with the core-schema rules, keeping the
text next to the typed value. Aliases and ``<<`` merge keys are resolved in the tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgspec
import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from trio_runner.errors import ConfigError

_PLAIN = "!trio-runner/plain"
_TAG = "tag:yaml.org,2002:"


class Mark(msgspec.Struct, frozen=True):
    """A 1-based position in a source file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class WorkflowError(ConfigError):
    """A workflow or action file that cannot be used; the text names file, line and column."""

    def __init__(self, problem: str, mark: Mark | None = None) -> None:
        self.problem = problem
        self.mark = mark
        super().__init__(f"{mark}: {problem}" if mark is not None else problem)


Scalar = str | int | float | bool | None


class YScalar(msgspec.Struct, frozen=True):
    """A scalar: its core-schema value and the literal text it was written as."""

    value: Scalar
    text: str
    mark: Mark


class YMap(msgspec.Struct, frozen=True):
    """A mapping with string keys (their literal text), merge keys already applied."""

    items: dict[str, tuple[YScalar, YNode]]
    mark: Mark

    def get(self, key: str) -> YNode | None:
        entry = self.items.get(key)
        return None if entry is None else entry[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


class YSeq(msgspec.Struct, frozen=True):
    """A sequence."""

    items: list[YNode]
    mark: Mark


YNode = YScalar | YMap | YSeq

_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})


def _core_value(text: str) -> Scalar:
    """The YAML 1.2 core-schema value of an untagged plain scalar."""
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


class _PlainResolver(BaseResolver):
    """Marks untagged plain scalars instead of typing them the YAML 1.1 way."""

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _TAG + "str"
        return _TAG + ("seq" if kind is SequenceNode else "map")


class _PyLoader(Reader, Scanner, Parser, Composer, _PlainResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _PlainResolver.__init__(self)


_Loader: Callable[[str], _PyLoader] = _PyLoader
try:
    from yaml._yaml import CParser

    class _CLoader(CParser, _PlainResolver):
        """libyaml's parser and composer, several times faster than the Python ones."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _PlainResolver.__init__(self)

    _Loader = cast(Callable[[str], _PyLoader], _CLoader)
except ImportError:  # PyYAML built without libyaml
    pass


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.done: dict[int, YNode] = {}
        self.active: set[int] = set()

    def mark(self, node: Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node) -> YNode:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise WorkflowError("recursive alias", self.mark(node))
        self.active.add(key)
        try:
            if isinstance(node, ScalarNode):
                result: YNode = self.scalar(node)
            elif isinstance(node, SequenceNode):
                self.check_tag(node, "seq")
                result = YSeq([self.build(item) for item in node.value], self.mark(node))
            else:
                assert isinstance(node, MappingNode)
                self.check_tag(node, "map")
                result = YMap(self.mapping(node), self.mark(node))
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def check_tag(self, node: Node, kind: str) -> None:
        if node.tag != _TAG + kind:
            raise WorkflowError(f"unsupported tag {node.tag}", self.mark(node))

    def scalar(self, node: ScalarNode) -> YScalar:
        text: str = node.value
        mark = self.mark(node)
        tag: str = node.tag
        if tag == _PLAIN:
            return YScalar(_core_value(text), text, mark)
        if tag == _TAG + "str":
            return YScalar(text, text, mark)
        wanted = {
            _TAG + "int": int,
            _TAG + "float": float,
            _TAG + "bool": bool,
            _TAG + "null": type(None),
        }.get(tag)
        if wanted is None:
            raise WorkflowError(f"unsupported tag {tag}", mark)
        value = _core_value(text)
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise WorkflowError(f"{text!r} is not a valid {tag.removeprefix(_TAG)}", mark)
        return YScalar(value, text, mark)

    def mapping(self, node: MappingNode) -> dict[str, tuple[YScalar, YNode]]:
        own: dict[str, tuple[YScalar, YNode]] = {}
        merged: dict[str, tuple[YScalar, YNode]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise WorkflowError("mapping keys must be scalars", self.mark(key_node))
            key = self.scalar(key_node)
            if key.text == "<<" and key_node.tag == _PLAIN:
                for source in reversed(self.merge_sources(value_node)):
                    merged.update(source.items)
                continue
            if key.text in own:
                raise WorkflowError(f"duplicate key '{key.text}'", key.mark)
            own[key.text] = (key, self.build(value_node))
        return {**merged, **own} if merged else own

    def merge_sources(self, node: Node) -> list[YMap]:
        """Mappings named by a ``<<`` value; earlier ones win, explicit keys win over all."""
        built = self.build(node)
        sources = built.items if isinstance(built, YSeq) else [built]
        for source in sources:
            if not isinstance(source, YMap):
                raise WorkflowError(
                    "a merge key needs a mapping or a list of mappings", source.mark
                )
        return [s for s in sources if isinstance(s, YMap)]


def load_yaml(text: str | bytes, file: str) -> YNode | None:
    """Parse one YAML document; ``None`` for an empty document."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise WorkflowError(f"{file}: not valid UTF-8 at byte {exc.start}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        mark = None if where is None else Mark(file, where.line + 1, where.column + 1)
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        raise WorkflowError(f"invalid YAML: {problem}", mark) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{file}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return None if root is None else _Builder(file).build(root)


def to_python(node: YNode | None) -> Any:
    """Plain typed data (dicts, lists, core-schema scalars) of a node."""
    if node is None:
        return None
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [to_python(item) for item in node.items]
    return {key: to_python(value) for key, (_, value) in node.items.items()}
