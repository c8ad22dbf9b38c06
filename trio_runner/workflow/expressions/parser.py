"""Syntax tree and recursive-descent parser of one expression, with a parse cache.

Nesting is bounded (MAX_DEPTH) both in the parser's own recursion and in the
depth of the resulting tree, so hostile input cannot exhaust the stack.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final

from .errors import ExpressionError
from .functions import FUNCTIONS, STATUS_FUNCTIONS
from .lexer import Token, TokenKind, tokenize

MAX_LENGTH: Final = 21_000
MAX_DEPTH: Final = 50


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    depth: int = 1


@dataclass(frozen=True, slots=True)
class NamedValue:
    name: str
    index: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Wildcard:
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    key: Node | Wildcard
    depth: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    depth: int


@dataclass(frozen=True, slots=True)
class Compare:
    operator: str
    left: Node
    right: Node
    depth: int


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # lower-case key of FUNCTIONS
    raw_name: str
    index: int
    args: tuple[Node, ...]
    arg_sources: tuple[str, ...]
    depth: int


Node = Literal | NamedValue | Index | Not | Compare | And | Or | Call


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression and the names it refers to, in reading order."""

    text: str
    root: Node
    named_values: tuple[NamedValue, ...]
    calls: tuple[Call, ...]

    @property
    def calls_status_function(self) -> bool:
        return any(call.name in STATUS_FUNCTIONS for call in self.calls)

    def calls_function(self, name: str) -> bool:
        return any(call.name == name.lower() for call in self.calls)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.position = 0
        self.nesting = 0
        self.named_values: list[NamedValue] = []
        self.calls: list[Call] = []

    def _error(self, description: str, token: Token | None) -> ExpressionError:
        if token is None:
            return ExpressionError(description, self.text, len(self.text) + 1)
        return ExpressionError(f"{description}: '{token.raw}'", self.text, token.index + 1)

    def _peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> Token:
        token = self._peek()
        if token is None:
            raise self._error("Unexpected end of expression", None)
        self.position += 1
        return token

    def _expect(self, kind: TokenKind) -> Token:
        token = self._take()
        if token.kind is not kind:
            raise self._error("Unexpected symbol", token)
        return token

    def _at_operator(self, *operators: str) -> str | None:
        token = self._peek()
        if token is not None and token.kind is TokenKind.OPERATOR and token.raw in operators:
            self.position += 1
            return token.raw
        return None

    def _depth(self, token: Token | None, *children: Node | Wildcard) -> int:
        depth = 1 + max(child.depth for child in children)
        if depth > MAX_DEPTH:
            raise self._error(f"Exceeded max expression depth {MAX_DEPTH}", token)
        return depth

    def _nested(self, token: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self._error(f"Exceeded max expression depth {MAX_DEPTH}", token)

    def parse(self) -> Expression:
        if not self.tokens:
            raise ExpressionError("An expression was expected", self.text)
        root = self._or()
        token = self._peek()
        if token is not None:
            raise self._error("Unexpected symbol", token)
        calls = tuple(sorted(self.calls, key=lambda call: call.index))
        return Expression(self.text, root, tuple(self.named_values), calls)

    def _or(self) -> Node:
        operands = [self._and()]
        while self._at_operator("||"):
            operands.append(self._and())
        if len(operands) == 1:
            return operands[0]
        return Or(tuple(operands), self._depth(self._peek(), *operands))

    def _and(self) -> Node:
        operands = [self._equality()]
        while self._at_operator("&&"):
            operands.append(self._equality())
        if len(operands) == 1:
            return operands[0]
        return And(tuple(operands), self._depth(self._peek(), *operands))

    def _equality(self) -> Node:
        left = self._relation()
        while operator := self._at_operator("==", "!="):
            right = self._relation()
            left = Compare(operator, left, right, self._depth(self._peek(), left, right))
        return left

    def _relation(self) -> Node:
        left = self._unary()
        while operator := self._at_operator("<", "<=", ">", ">="):
            right = self._unary()
            left = Compare(operator, left, right, self._depth(self._peek(), left, right))
        return left

    def _unary(self) -> Node:
        token = self._peek()
        if token is not None and token.kind is TokenKind.OPERATOR and token.raw == "!":
            self.position += 1
            self._nested(token)
            operand = self._unary()
            self.nesting -= 1
            return Not(operand, self._depth(token, operand))
        return self._postfix()

    def _postfix(self) -> Node:
        node = self._primary()
        while (token := self._peek()) is not None:
            if token.kind is TokenKind.DEREFERENCE:
                self.position += 1
                name = self._take()
                if name.kind is TokenKind.PROPERTY:
                    key: Node | Wildcard = Literal(name.raw)
                elif name.kind is TokenKind.WILDCARD:
                    key = Wildcard()
                else:
                    raise self._error("Unexpected symbol", name)
            elif token.kind is TokenKind.START_INDEX:
                self.position += 1
                key = self._index_key(token)
            else:
                return node
            node = Index(node, key, self._depth(token, node, key))
        return node

    def _index_key(self, bracket: Token) -> Node | Wildcard:
        following = self._peek()
        if following is not None and following.kind is TokenKind.WILDCARD:
            self.position += 1
            self._expect(TokenKind.END_INDEX)
            return Wildcard()
        self._nested(bracket)
        key = self._or()
        self.nesting -= 1
        self._expect(TokenKind.END_INDEX)
        return key

    def _primary(self) -> Node:
        token = self._take()
        if token.kind is TokenKind.LITERAL:
            return Literal(token.value)
        if token.kind is TokenKind.NAMED_VALUE:
            named = NamedValue(token.raw, token.index)
            self.named_values.append(named)
            return named
        if token.kind is TokenKind.FUNCTION:
            return self._call(token)
        if token.kind is TokenKind.START_GROUP:
            self._nested(token)
            node = self._or()
            self.nesting -= 1
            self._expect(TokenKind.END_GROUP)
            return node
        raise self._error("Unexpected symbol", token)

    def _call(self, name: Token) -> Call:
        function = FUNCTIONS.get(name.raw.lower())
        if function is None:
            raise self._error("Unrecognized function", name)
        self._expect(TokenKind.START_GROUP)
        self._nested(name)
        args: list[Node] = []
        sources: list[str] = []
        closing = self._peek()
        if closing is not None and closing.kind is TokenKind.END_GROUP:
            self.position += 1
        else:
            while True:
                first = self.position
                args.append(self._or())
                start, end = self.tokens[first], self.tokens[self.position - 1]
                sources.append(self.text[start.index : end.index + len(end.raw)])
                separator = self._take()
                if separator.kind is TokenKind.END_GROUP:
                    break
                if separator.kind is not TokenKind.SEPARATOR:
                    raise self._error("Unexpected symbol", separator)
        self.nesting -= 1
        if len(args) < function.min_args:
            raise self._error("Too few parameters supplied", name)
        if function.max_args is not None and len(args) > function.max_args:
            raise self._error("Too many parameters supplied", name)
        if function.odd_args and len(args) % 2 == 0:
            raise self._error("An odd number of parameters is required", name)
        depth = self._depth(name, *args) if args else 1
        call = Call(function.key, name.raw, name.index, tuple(args), tuple(sources), depth)
        self.calls.append(call)
        return call


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Expression:
    """Parse one expression (surrounding whitespace ignored); raises ExpressionError."""
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"Exceeded max expression length {MAX_LENGTH}", text)
    return _Parser(text).parse()
