"""``hashFiles``: ``@actions/glob`` pattern matching over the workspace and the combined SHA-256.

This is blocking file-system work: callers on the Trio thread run it through
``trio.to_thread.run_sync`` (see ``calls_hash_files`` in the package API).

Matching follows ``@actions/glob`` with minimatch (dot files match, no braces,
no extended globs, case-sensitive): a pattern matching a directory also matches
everything below it, and a path is kept when the last pattern matching it is not
negated. The walk is depth-first, pre-order, names in byte order. Only regular
files under the workspace are hashed; search roots outside it are never walked.
"""

from __future__ import annotations

import enum
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

FOLLOW_OPTION = "--follow-symbolic-links"
_CHUNK = 1 << 20


class MatchKind(enum.IntFlag):
    NONE = 0
    DIRECTORY = 1
    FILE = 2
    ALL = 3


class _Globstar:
    """The ``**`` segment."""


_GLOBSTAR = _Globstar()
_Segment = _Globstar | str | re.Pattern[str]


def _literal(segment: str) -> str | None:
    """The literal text of a segment, or None when it contains glob syntax."""
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "\\" and index + 1 < len(segment):
            index += 1
            out.append(segment[index])
        elif char in "*?":
            return None
        elif char == "[" and (close := _class_end(segment, index)) >= 0:
            members = segment[index + 1 : close].replace("\\", "")
            if len(members) > 1:
                return None
            out.append(members)
            index = close
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _class_end(segment: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1."""
    index = start + 1
    if index < len(segment) and segment[index] in "!^":
        index += 1
    if index < len(segment) and segment[index] == "]":
        index += 1
    while index < len(segment):
        if segment[index] == "\\":
            index += 2
            continue
        if segment[index] == "]":
            return index
        index += 1
    return -1


def _class_regex(body: str) -> str | None:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    members: list[str] = []
    chars: list[str] = []
    index = 0
    while index < len(body):
        if body[index] == "\\" and index + 1 < len(body):
            index += 1
        chars.append(body[index])
        index += 1
    index = 0
    while index < len(chars):
        if index + 2 < len(chars) and chars[index + 1] == "-":
            low, high = chars[index], chars[index + 2]
            if low > high:
                return None
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            index += 3
        else:
            members.append(re.escape(chars[index]))
            index += 1
    return ("[^" if negate else "[") + "".join(members) + "]"


def _compile_segment(segment: str) -> _Segment:
    """``**``, the literal name, or a regex for a segment with glob syntax."""
    if segment == "**":
        return _GLOBSTAR
    parts: list[str] = []
    literal: list[str] = []
    magic = False
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "\\" and index + 1 < len(segment):
            index += 1
            parts.append(re.escape(segment[index]))
            literal.append(segment[index])
        elif char == "*":
            magic = True
            parts.append("[^/]*")
        elif char == "?":
            magic = True
            parts.append("[^/]")
        elif char == "[" and (close := _class_end(segment, index)) >= 0:
            regex = _class_regex(segment[index + 1 : close])
            if regex is None:
                parts.append(re.escape(segment[index : close + 1]))
                literal.append(segment[index : close + 1])
            else:
                magic = True
                parts.append(regex)
            index = close
        else:
            parts.append(re.escape(char))
            literal.append(char)
        index += 1
    if not magic:
        return "".join(literal)
    # Like minimatch, a magic segment never matches an empty name.
    return re.compile("(?=.)" + "".join(parts), re.DOTALL)


def _segment_matches(segment: _Segment, name: str) -> bool:
    if isinstance(segment, str):
        return segment == name
    assert isinstance(segment, re.Pattern)
    return segment.fullmatch(name) is not None


def _match_segments(pattern: Sequence[_Segment], names: Sequence[str], *, partial: bool) -> bool:
    """minimatch's matchOne, explored breadth-first over (pattern, name) positions."""
    pattern_count, name_count = len(pattern), len(names)
    pending = [(0, 0)]
    seen = {(0, 0)}

    def push(state: tuple[int, int]) -> None:
        if state not in seen:
            seen.add(state)
            pending.append(state)

    while pending:
        at_pattern, at_name = pending.pop()
        if at_name == name_count:
            if at_pattern == pattern_count or partial:
                return True
            continue
        if at_pattern == pattern_count:
            if at_name == name_count - 1 and names[at_name] == "":
                return True
            continue
        segment = pattern[at_pattern]
        if isinstance(segment, _Globstar):
            rest = names[at_name:]
            if at_pattern + 1 == pattern_count:
                if all(name not in (".", "..") for name in rest):
                    return True
                continue
            swallowed = at_name
            while swallowed < name_count:
                push((at_pattern + 1, swallowed))
                if names[swallowed] in (".", ".."):
                    break
                swallowed += 1
            if partial and swallowed == name_count:
                return True
        elif _segment_matches(segment, names[at_name]):
            push((at_pattern + 1, at_name + 1))
    return False


def _split(path: str) -> list[str]:
    return re.split(r"/+", path)


def _trim_trailing_separator(path: str) -> str:
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def _glob_escape(path: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", path)


@dataclass(frozen=True)
class _Pattern:
    negate: bool
    segments: tuple[_Segment, ...]
    search_path: str
    trailing_separator: bool
    implicit: bool

    def match(self, path: str) -> MatchKind:
        if self.segments[-1] is _GLOBSTAR:
            # "/a/**" must also match "/a" itself (minimatch needs the trailing slash).
            if not path.endswith("/") and not self.implicit:
                path += "/"
        else:
            path = _trim_trailing_separator(path)
        if _match_segments(self.segments, _split(path), partial=False):
            return MatchKind.DIRECTORY if self.trailing_separator else MatchKind.ALL
        return MatchKind.NONE

    def partial_match(self, path: str) -> bool:
        path = _trim_trailing_separator(path)
        if path == "/":
            return True
        return _match_segments(self.segments, _split(path), partial=True)


def _parse_pattern(line: str, workspace: str, home: str) -> list[_Pattern]:
    """One pattern line, plus its implicit ``/**`` descendant pattern where needed."""
    negate = False
    pattern = line
    while pattern.startswith("!"):
        negate = not negate
        pattern = pattern[1:].strip()
    if not pattern:
        raise ValueError(f"Invalid pattern '{line}': the pattern is empty")
    pattern = re.sub(r"/+", "/", pattern)
    segments = pattern.split("/")
    literals = [_literal(segment) for segment in segments]
    if any(text == ".." or (text == "." and number > 0) for number, text in enumerate(literals)):
        raise ValueError(f"Invalid pattern '{line}'. Relative pathing '.' and '..' is not allowed.")
    if pattern == "." or pattern.startswith("./"):
        pattern = _glob_escape(workspace) + pattern[1:]
    elif pattern == "~" or pattern.startswith("~/"):
        pattern = _glob_escape(home) + pattern[1:]
    elif not pattern.startswith("/"):
        pattern = _glob_escape(workspace).rstrip("/") + "/" + pattern
    pattern = re.sub(r"/+", "/", pattern)
    trailing = pattern.endswith("/")
    pattern = _trim_trailing_separator(pattern)
    raw_segments = _split(pattern) if pattern != "/" else [""]
    search: list[str] = []
    for segment in raw_segments[1:]:
        literal = _literal(segment)
        if literal is None:
            break
        search.append(literal)
    search_path = "/" + "/".join(search)
    compiled = tuple(_compile_segment(segment) for segment in raw_segments)
    patterns = [_Pattern(negate, compiled, search_path, trailing, implicit=False)]
    if trailing or compiled[-1] is not _GLOBSTAR:
        patterns.append(_Pattern(negate, (*compiled, _GLOBSTAR), search_path, False, True))
    return patterns


def _match(patterns: Sequence[_Pattern], path: str) -> MatchKind:
    result = MatchKind.NONE
    for pattern in patterns:
        if pattern.negate:
            result &= ~pattern.match(path)
        else:
            result |= pattern.match(path)
    return result


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _search_roots(patterns: Sequence[_Pattern], workspace: str) -> list[str]:
    """Distinct search paths with no ancestor among them, clamped to the workspace."""
    candidates: list[str] = []
    for pattern in patterns:
        if pattern.negate:
            continue
        path = pattern.search_path
        if _is_within(workspace, path):
            path = workspace
        elif not _is_within(path, workspace):
            continue
        if path not in candidates:
            candidates.append(path)
    return [
        path
        for path in candidates
        if not any(other != path and _is_within(path, other) for other in candidates)
    ]


def _walk(patterns: Sequence[_Pattern], roots: Sequence[str], follow: bool) -> Iterator[str]:
    stack: list[tuple[str, int]] = []
    for root in reversed(roots):
        try:
            os.lstat(root)
        except FileNotFoundError:
            continue
        stack.append((root, 1))
    chain: list[str] = []
    while stack:
        path, level = stack.pop()
        match = _match(patterns, path)
        if not match and not any(p.partial_match(path) for p in patterns if not p.negate):
            continue
        try:
            info = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if follow:
                real = os.path.realpath(path)
                del chain[level - 1 :]
                if real in chain:
                    continue
                chain.append(real)
            children = sorted(os.listdir(path), key=os.fsencode)
            stack.extend((posixpath.join(path, name), level + 1) for name in reversed(children))
        elif match & MatchKind.FILE:
            yield path


def _file_digest(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def hash_files(
    workspace: str | os.PathLike[str], arguments: Sequence[str], *, home: str | None = None
) -> str:
    """The ``hashFiles(...)`` result for ``arguments`` (the call's string arguments).

    Raises ValueError for a bad option or pattern and OSError for unreadable files.
    """
    root = os.path.abspath(os.fspath(workspace))
    follow = False
    if arguments and arguments[0].startswith("--"):
        if arguments[0].lower() != FOLLOW_OPTION:
            raise ValueError(
                f"Invalid glob option {arguments[0]}, available option: '{FOLLOW_OPTION}'"
            )
        follow = True
        arguments = arguments[1:]
    home_dir = home if home is not None else os.path.expanduser("~")
    patterns: list[_Pattern] = []
    for line in re.split(r"\r?\n", "\n".join(arguments)):
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.extend(_parse_pattern(line, root, home_dir))
    outer = hashlib.sha256()
    count = 0
    for path in _walk(patterns, _search_roots(patterns, root), follow):
        if not path.startswith(root.rstrip("/") + "/") or os.path.isdir(path):
            continue
        outer.update(_file_digest(path))
        count += 1
    return outer.hexdigest() if count else ""
