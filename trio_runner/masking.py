"""Secret masking of log rows, and the repair that makes a masked line a valid row.

Every registered secret contributes several *forms* (trimmed value, each line, base64
and other encodings). A row is masked by finding every occurrence of every form,
merging overlapping or touching ranges and replacing each merged range by ``***``.
All forms are searched with one compiled alternation, longest form first, so that at
any start position the longest form wins; rebuilding happens only when forms change.
A block of many lines is masked with one search over the whole block whenever that
gives the same rows as masking line by line (no form holds a LF), which keeps
the per-line cost of a busy log in C.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_FORM_LENGTH = 2
ROW_LIMIT_BYTES = 64 * 1024

_HTML_JSON = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_SPLIT_LINES = re.compile(r"[\r\n]")
# No string of this many characters or fewer can exceed ROW_LIMIT_BYTES in UTF-8.
_SAFE_ROW_CHARS = ROW_LIMIT_BYTES // 4


def escape_command_data(text: str) -> str:
    """Workflow-command data escaping: ``%`` first, then CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_forms(value: str) -> set[str]:
    """Every form of ``value`` that is searched for, shorter ones excluded."""
    trimmed = value.strip()
    if not trimmed:
        return set()
    forms = {trimmed}
    forms.update(line.strip() for line in _SPLIT_LINES.split(trimmed))
    raw = trimmed.encode("utf-8")
    forms.add(_base64(raw))
    # The value inside a longer base64 blob at offset 1 or 2 mod 3: its middle
    # characters do not depend on the neighbouring bytes.
    for filler in (b"\0", b"\0\0"):
        middle = _base64(filler + raw)[4:-4]
        if len(middle) >= 8:
            forms.add(middle)
    plain_json = json.dumps(trimmed, ensure_ascii=False)[1:-1]
    forms.add(plain_json)
    forms.add(plain_json.translate(_HTML_JSON))
    forms.add(quote_plus(trimmed, safe=""))
    forms.add(quote(trimmed, safe="$&+:=@"))
    if any(c in trimmed for c in "%\r\n"):
        forms.add(escape_command_data(trimmed))
    return {form for form in forms if len(form) >= MIN_FORM_LENGTH}


class Masker:
    """The set of registered secrets of one job and the masking of rows."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False
        self._multiline = False

    def add(self, value: str) -> None:
        """Register a secret; rows masked from now on hide all of its forms."""
        new = secret_forms(value) - self._forms
        if new:
            self._forms |= new
            self._stale = True
            self._multiline |= any("\n" in form for form in new)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def _compiled(self) -> re.Pattern[str] | None:
        if self._stale:
            ordered = sorted(self._forms, key=lambda form: (-len(form), form))
            self._pattern = re.compile("|".join(map(re.escape, ordered)))
            self._stale = False
        return self._pattern

    def mask(self, text: str) -> str:
        """``text`` with every merged range of secret occurrences replaced by ``***``."""
        pattern = self._compiled()
        if pattern is None:
            return text
        match = pattern.search(text)
        if match is None:
            return text
        search = pattern.search
        pieces: list[str] = []
        done = 0
        range_start, end = match.span()
        last_start = range_start
        while True:
            # A match may start inside the current range and reach past it, so the
            # search resumes one character after the last start, not at the end.
            match = search(text, last_start + 1)
            while match is not None and match.start() <= end:
                last_start = match.start()
                end = max(end, match.end())
                match = search(text, last_start + 1)
            pieces.append(text[done:range_start])
            pieces.append(MASK)
            done = end
            if match is None:
                break
            range_start, end = match.span()
            last_start = range_start
        pieces.append(text[done:])
        return "".join(pieces)

    def mask_lines(self, text: str) -> str:
        """``text`` of LF-separated lines with each line masked as by :meth:`mask`."""
        if self._multiline:
            # A form spanning lines could match across a LF in the block.
            return "\n".join(map(self.mask, text.split("\n")))
        return self.mask(text)


def decode_output(raw: bytes) -> str:
    """Text of raw process output for masking; invalid bytes survive as lone surrogates.

    Masks never contain lone surrogates, so a mask cannot match half a character;
    :func:`row_safe` turns each invalid byte into ``?`` after masking.
    """
    return raw.decode("utf-8", "surrogateescape")


def row_safe(line: str) -> str:
    """A masked line made fit for one row: valid UTF-8, no LF, at most 64 KiB.

    Invalid bytes (lone surrogates) become ``?``; an LF (callers split lines first, see
    :func:`split_rows`) becomes a space; the cut happens at a character boundary.
    """
    if line.isascii():
        if len(line) <= ROW_LIMIT_BYTES and "\n" not in line:
            return line
        return line.replace("\n", " ")[:ROW_LIMIT_BYTES]
    data = line.replace("\n", " ").encode("utf-8", "replace")
    if len(data) > ROW_LIMIT_BYTES:
        return data[:ROW_LIMIT_BYTES].decode("utf-8", "ignore")
    return data.decode("utf-8")


def split_rows(text: str) -> list[str]:
    """A multi-line runner message as rows: split at LF, a trailing CR dropped, repaired."""
    return safe_rows(drop_line_end_cr(text))


def drop_line_end_cr(text: str) -> str:
    """LF-separated ``text`` without the one CR that may end each line."""
    if "\r" not in text:
        return text
    text = text.replace("\r\n", "\n")
    return text[:-1] if text.endswith("\r") else text


def safe_rows(text: str) -> list[str]:
    """The lines of LF-separated ``text``, each made fit for a row as by :func:`row_safe`.

    The common block (short lines, no invalid bytes) is only split: the checks run over
    the whole block in C rather than line by line.
    """
    rows = text.split("\n")
    long = len(text) > _SAFE_ROW_CHARS and max(map(len, rows)) > _SAFE_ROW_CHARS
    if long or not (text.isascii() or _is_valid_unicode(text)):
        return list(map(row_safe, rows))
    return rows


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: invalid bytes of the output
        return False
    return True
