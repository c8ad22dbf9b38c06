"""Tokens of the expression language.

Malformed input becomes an UNEXPECTED token rather than an immediate error, so
the parser reports the first problem in reading order.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from .values import parse_number


class TokenKind(enum.Enum):
    LITERAL = enum.auto()  # null, true, false, numbers, strings, NaN, Infinity
    NAMED_VALUE = enum.auto()  # a context name
    FUNCTION = enum.auto()  # a keyword followed by "("
    PROPERTY = enum.auto()  # a keyword after "."
    START_GROUP = enum.auto()
    END_GROUP = enum.auto()
    START_INDEX = enum.auto()
    END_INDEX = enum.auto()
    SEPARATOR = enum.auto()
    DEREFERENCE = enum.auto()
    WILDCARD = enum.auto()
    OPERATOR = enum.auto()
    UNEXPECTED = enum.auto()


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    raw: str
    index: int  # 0-based offset in the expression
    value: Any = None


_BOUNDARY = frozenset("([)],.!><=&|")
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_KEYWORD_LITERALS: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "NaN": math.nan,
    "Infinity": math.inf,
}
# After these a "." starts a number (".5"), elsewhere it dereferences.
_OPERAND_EXPECTED = frozenset(
    {TokenKind.SEPARATOR, TokenKind.START_GROUP, TokenKind.START_INDEX, TokenKind.OPERATOR}
)
_PUNCTUATION = {
    "(": TokenKind.START_GROUP,
    ")": TokenKind.END_GROUP,
    "[": TokenKind.START_INDEX,
    "]": TokenKind.END_INDEX,
    ",": TokenKind.SEPARATOR,
    "*": TokenKind.WILDCARD,
}
_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||", "!", "<", ">")


def _is_boundary(char: str) -> bool:
    return char in _BOUNDARY or char.isspace()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.last: Token | None = None

    def _word_end(self, start: int, *, dots: bool) -> int:
        end = start + 1
        while end < len(self.text) and (
            not _is_boundary(self.text[end]) or (dots and self.text[end] == ".")
        ):
            end += 1
        return end

    def _number(self, start: int) -> Token:
        end = self._word_end(start, dots=True)
        raw = self.text[start:end]
        number = parse_number(raw)
        if math.isnan(number):
            return Token(TokenKind.UNEXPECTED, raw, start)
        return Token(TokenKind.LITERAL, raw, start, number)

    def _string(self, start: int) -> Token:
        chars: list[str] = []
        index = start + 1
        text = self.text
        while index < len(text):
            char = text[index]
            index += 1
            if char == "'":
                if index < len(text) and text[index] == "'":
                    index += 1
                else:
                    return Token(TokenKind.LITERAL, text[start:index], start, "".join(chars))
            chars.append(char)
        return Token(TokenKind.UNEXPECTED, text[start:], start)

    def _keyword(self, start: int) -> Token:
        end = self._word_end(start, dots=False)
        raw = self.text[start:end]
        if not _KEYWORD.match(raw):
            return Token(TokenKind.UNEXPECTED, raw, start)
        if self.last is not None and self.last.kind is TokenKind.DEREFERENCE:
            return Token(TokenKind.PROPERTY, raw, start)
        if raw in _KEYWORD_LITERALS:
            return Token(TokenKind.LITERAL, raw, start, _KEYWORD_LITERALS[raw])
        ahead = end
        while ahead < len(self.text) and self.text[ahead].isspace():
            ahead += 1
        if ahead < len(self.text) and self.text[ahead] == "(":
            return Token(TokenKind.FUNCTION, raw, start)
        return Token(TokenKind.NAMED_VALUE, raw, start)

    def _next(self) -> Token:
        text, start = self.text, self.index
        char = text[start]
        if char in _PUNCTUATION:
            return Token(_PUNCTUATION[char], char, start)
        if char == "'":
            return self._string(start)
        if char == ".":
            if self.last is None or self.last.kind in _OPERAND_EXPECTED:
                return self._number(start)
            return Token(TokenKind.DEREFERENCE, char, start)
        if char in "-+" or "0" <= char <= "9":
            return self._number(start)
        if char in "!<>=&|":
            for operator in _OPERATORS:
                if text.startswith(operator, start):
                    return Token(TokenKind.OPERATOR, operator, start)
            return Token(TokenKind.UNEXPECTED, char, start)
        return self._keyword(start)

    def tokens(self) -> list[Token]:
        result: list[Token] = []
        while True:
            while self.index < len(self.text) and self.text[self.index].isspace():
                self.index += 1
            if self.index >= len(self.text):
                return result
            token = self._next()
            self.index = token.index + len(token.raw)
            self.last = token
            result.append(token)


def tokenize(text: str) -> list[Token]:
    return _Lexer(text).tokens()
