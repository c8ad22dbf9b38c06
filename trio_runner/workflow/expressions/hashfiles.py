"""``hashFiles``: ``@actions/glob`` pattern matching over the workspace and the combined SHA-256.

This is blocking file-system work: callers on the Trio thread run it through
``trio.to_thread.run_sync`` (see ``calls_hash_files`` in the package API).

Matching follows ``@actions/glob`` with minimatch (dot files match, no braces,
no extended globs, case-sensitive): a pattern matching a directory also matches
everything below it, and a path is kept when the last pattern matching it is not
negated. The walk is depth-first, pre-order, names in byte order. Only regular
files under the workspace are hashed; search roots outside it are never walked.

The walk reads a :class:`Tree`: this machine's file system (:class:`LocalTree`) or
one known from tar archives (:class:`ArchiveTree`, a container read through the
engine's archive API), so both give the same result for the same files.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, NamedTuple, Protocol

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


class Kind(enum.Enum):
    """What a path is, as ``lstat`` (or ``stat``, following symlinks) tells."""

    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    OTHER = "other"


class Tree(Protocol):
    """The file system the walk reads: absolute POSIX paths of the job environment.

    ``lstat`` and ``stat`` return None for a missing path (or a broken link, for
    ``stat``) and raise OSError for anything else that goes wrong, as ``os`` does.
    """

    def lstat(self, path: str) -> Kind | None: ...

    def stat(self, path: str) -> Kind | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def realpath(self, path: str) -> str: ...

    def digest(self, path: str) -> bytes:
        """SHA-256 of the content of the file ``path`` names (symlinks followed)."""
        ...


def _kind(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return Kind.DIRECTORY
    if stat.S_ISREG(mode):
        return Kind.FILE
    return Kind.SYMLINK if stat.S_ISLNK(mode) else Kind.OTHER


class LocalTree:
    """This machine's file system."""

    def lstat(self, path: str) -> Kind | None:
        try:
            return _kind(os.lstat(path).st_mode)
        except FileNotFoundError:
            return None

    def stat(self, path: str) -> Kind | None:
        try:
            return _kind(os.stat(path).st_mode)
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def digest(self, path: str) -> bytes:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
        return digest.digest()


def _walk(
    tree: Tree, patterns: Sequence[_Pattern], roots: Sequence[str], follow: bool
) -> Iterator[str]:
    stack: list[tuple[str, int]] = []
    for root in reversed(roots):
        if tree.lstat(root) is not None:
            stack.append((root, 1))
    chain: list[str] = []
    while stack:
        path, level = stack.pop()
        match = _match(patterns, path)
        if not match and not any(p.partial_match(path) for p in patterns if not p.negate):
            continue
        kind = tree.stat(path) if follow else tree.lstat(path)
        if kind is None:
            continue
        if kind is Kind.DIRECTORY:
            if follow:
                real = tree.realpath(path)
                del chain[level - 1 :]
                if real in chain:
                    continue
                chain.append(real)
            children = sorted(tree.listdir(path), key=os.fsencode)
            stack.extend((posixpath.join(path, name), level + 1) for name in reversed(children))
        elif match & MatchKind.FILE:
            yield path


def _is_dir(tree: Tree, path: str) -> bool:
    try:
        return tree.stat(path) is Kind.DIRECTORY
    except OSError:
        return False


def hash_files(
    workspace: str | os.PathLike[str],
    arguments: Sequence[str],
    *,
    home: str | None = None,
    tree: Tree | None = None,
) -> str:
    """The ``hashFiles(...)`` result for ``arguments`` (the call's string arguments).

    ``tree`` is the file system holding ``workspace`` (this machine's by default);
    ``home`` is the ``~`` of patterns (this process's home by default).
    Raises ValueError for a bad option or pattern and OSError for unreadable files.
    """
    files = tree if tree is not None else LocalTree()
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
    for path in _walk(files, patterns, _search_roots(patterns, root), follow):
        if not path.startswith(root.rstrip("/") + "/") or _is_dir(files, path):
            continue
        outer.update(files.digest(path))
        count += 1
    return outer.hexdigest() if count else ""


class PathInfo(NamedTuple):
    """What a path is (symlinks not followed); ``target`` is a symlink's target."""

    kind: Kind
    target: str = ""


class ArchiveSource(Protocol):
    """A file system read through tar archives (a container engine's archive API).

    Both calls resolve symlinks in the parent directories of ``path``; ``archive``
    is only asked for paths that are not symlinks. A missing path raises
    FileNotFoundError from ``archive`` and gives None from ``stat``.
    """

    def stat(self, path: str) -> PathInfo | None: ...

    def archive(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A tar stream of ``path``: its own entry first, named by its base name."""
        ...


@dataclass
class _Entry:
    kind: Kind
    target: str = ""
    #: A directory's names; None until its archive is read.
    children: set[str] | None = None
    #: A file's SHA-256; None until its archive is read.
    digest: bytes | None = None


_MAX_SYMLINKS = 40


class ArchiveTree:
    """A file system known from tar archives: ``workspace`` read whole at once, each
    file hashed as it streams by (contents are never kept), and any other path asked
    of ``source`` when a symlink leads there. Symlinks resolve with the semantics of
    the system the archives come from (absolute targets are paths of that system).
    """

    def __init__(self, workspace: str, source: ArchiveSource) -> None:
        self._source = source
        self._entries: dict[str, _Entry] = {"/": _Entry(Kind.DIRECTORY)}
        #: Directories read whole: a path below one of them that has no entry is missing.
        self._complete: list[str] = []
        self._load(workspace)

    def lstat(self, path: str) -> Kind | None:
        return self._kind(path, follow=False)

    def stat(self, path: str) -> Kind | None:
        return self._kind(path, follow=True)

    def listdir(self, path: str) -> list[str]:
        real, entry = self._resolve(path, follow=True)
        if entry is None:
            raise _error(errno.ENOENT, path)
        if entry.kind is not Kind.DIRECTORY:
            raise _error(errno.ENOTDIR, path)
        if entry.children is None:
            self._load(real)
        assert entry.children is not None
        return list(entry.children)

    def realpath(self, path: str) -> str:
        return self._resolve(path, follow=True)[0]

    def digest(self, path: str) -> bytes:
        real, entry = self._resolve(path, follow=True)
        if entry is None:
            raise _error(errno.ENOENT, path)
        if entry.kind is Kind.DIRECTORY:
            raise _error(errno.EISDIR, path)
        if entry.kind is not Kind.FILE:
            raise OSError(errno.EINVAL, "not a regular file", path)
        if entry.digest is None:
            self._load(real)
        assert entry.digest is not None
        return entry.digest

    def _kind(self, path: str, *, follow: bool) -> Kind | None:
        try:
            entry = self._resolve(path, follow=follow)[1]
        except FileNotFoundError:
            return None
        return entry.kind if entry is not None else None

    def _resolve(self, path: str, *, follow: bool, hops: int = 0) -> tuple[str, _Entry | None]:
        """The path with every symlink resolved (the last one only when ``follow``)
        and its entry (None when missing); the number of links followed so far is
        ``hops``."""
        current, entry = "/", self._entries["/"]
        names = [name for name in path.split("/") if name not in ("", ".")]
        for index, name in enumerate(names):
            last = index == len(names) - 1
            if name == "..":
                current = posixpath.dirname(current)
                entry = self._entries[current]
                continue
            candidate = posixpath.join(current, name)
            found = self._entry(candidate)
            if found is not None and found.kind is Kind.SYMLINK and (follow or not last):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise _error(errno.ELOOP, path)
                target = posixpath.join(current, found.target)
                candidate, found = self._resolve(target, follow=True, hops=hops)
            if found is None:
                if last:
                    return candidate, None
                raise _error(errno.ENOENT, path)
            if not last and found.kind is not Kind.DIRECTORY:
                raise _error(errno.ENOTDIR, path)
            current, entry = candidate, found
        return current, entry

    def _entry(self, path: str) -> _Entry | None:
        """The entry of a path whose parent is resolved; asks the source when unknown."""
        if path in self._entries:
            return self._entries[path]
        if any(_is_within(path, root) for root in self._complete):
            return None
        info = self._source.stat(path)
        if info is None:
            return None
        entry = _Entry(info.kind, info.target)
        self._entries[path] = entry
        return entry

    def _load(self, path: str) -> None:
        """Read the archive of ``path`` (a directory or file, not a symlink)."""
        try:
            with (
                self._source.archive(path) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                for member in tar:
                    full = _member_path(path, member.name)
                    if full is not None:
                        self._add(full, _member_entry(tar, member, path, self._entries), path)
        except tarfile.TarError as error:
            raise OSError(f"unreadable archive of {path}: {error}") from None
        self._complete.append(path)

    def _add(self, path: str, entry: _Entry, root: str) -> None:
        """Record a member of the archive of ``root``, which lists each directory whole."""
        known = self._entries.get(path)
        # Entries already handed out (known from a stat) are completed in place.
        if known is not None and known.kind is entry.kind is Kind.DIRECTORY:
            known.children = set()
        elif known is not None and known.kind is entry.kind is Kind.FILE:
            known.digest = entry.digest
        else:
            self._entries[path] = entry
        if path != root:
            parent = self._entries[posixpath.dirname(path)]
            assert parent.children is not None
            parent.children.add(posixpath.basename(path))


def _member_path(root: str, name: str) -> str | None:
    """The absolute path of an archive member of ``root`` (named ``<base name>/...``)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return posixpath.join(root, *parts[1:]) if len(parts) > 1 else root


def _member_entry(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, entries: dict[str, _Entry]
) -> _Entry:
    if member.isdir():
        return _Entry(Kind.DIRECTORY, children=set())
    if member.issym():
        return _Entry(Kind.SYMLINK, member.linkname)
    if member.islnk():
        # A hard link names an earlier member, whose digest is already known.
        original = _member_path(root, member.linkname)
        known = entries.get(original) if original is not None else None
        return known if known is not None and known.kind is Kind.FILE else _Entry(Kind.OTHER)
    if member.isfile():
        digest = hashlib.sha256()
        stream = tar.extractfile(member)
        assert stream is not None
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
        return _Entry(Kind.FILE, digest=digest.digest())
    return _Entry(Kind.OTHER)


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)
