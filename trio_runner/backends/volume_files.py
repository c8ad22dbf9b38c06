"""Direct file access to a job's volumes through their host mountpoints.

The executor writes and reads several small files per step (the script and the
file-command files under ``/var/run/act``). Through the Engine API each read is an
archive download, which Podman serves in about 100 ms. When the engine runs on this
machine and the runner may use a volume's mountpoint (a root runner, or rootless Podman
of the same user), those files are read and written in place instead.

A step controls what lies inside its volumes, so every path component is opened relative
to its parent with ``O_NOFOLLOW``: a symlink planted by a step can never lead the runner
outside the volume. Whatever is not a plain directory or file raises :class:`NotLocal`
and the caller goes through the Engine API, which resolves paths inside the container.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager

# O_NONBLOCK: a FIFO planted by a step must not block the open.
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK


class NotLocal(Exception):
    """The path cannot be served from a mountpoint; use the Engine API."""


class VolumeFiles:
    """Container paths under volume targets, mapped to the volumes' host directories."""

    def __init__(self) -> None:
        self._mounts: list[tuple[str, str]] = []

    def add(self, target: str, mountpoint: str) -> None:
        """Serve ``target`` (a container path) from ``mountpoint`` when it is usable here."""
        if mountpoint and os.access(mountpoint, os.R_OK | os.W_OK | os.X_OK):
            self._mounts.append((target.rstrip("/") or "/", mountpoint))

    def read(self, path: str) -> bytes:
        mountpoint, parts = self._locate(path)
        with _directory(mountpoint, parts[:-1], create=False) as parent:
            fd = _open(parts[-1], os.O_RDONLY | _FILE_FLAGS, parent)
        with os.fdopen(fd, "rb") as file:
            if not _is_regular(file.fileno()):
                raise NotLocal(path)
            return file.read()

    def write(self, path: str, data: bytes, mode: int) -> None:
        mountpoint, parts = self._locate(path)
        with _directory(mountpoint, parts[:-1], create=True) as parent:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _FILE_FLAGS
            fd = _open(parts[-1], flags, parent, mode)
        with os.fdopen(fd, "wb") as file:
            if not _is_regular(file.fileno()):
                raise NotLocal(path)
            os.fchmod(file.fileno(), mode)
            file.write(data)

    def _locate(self, path: str) -> tuple[str, list[str]]:
        normal = posixpath.normpath(path)
        for target, mountpoint in self._mounts:
            if normal.startswith(target + "/"):
                parts = normal[len(target) + 1 :].split("/")
                if all(part not in ("", ".", "..") for part in parts):
                    return mountpoint, parts
        raise NotLocal(path)


@contextmanager
def _directory(mountpoint: str, parts: list[str], *, create: bool) -> Iterator[int]:
    """A descriptor of ``mountpoint/parts...``, reached without following any symlink."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                child = _open(part, flags, fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                child = _open(part, flags, fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open(name: str, flags: int, dir_fd: int, mode: int = 0o644) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP: a symlink; ENOTDIR: a symlink or file where a directory was expected;
        # ENXIO: a FIFO without a reader.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise NotLocal(name) from None
        raise


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)
