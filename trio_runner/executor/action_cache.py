"""The on-disk action cache: remote action repositories cloned with ``git``, and patches.

Each ``uses`` string gets its own clone, ``<cache dir>/<sha256 of uses>``, kept across
jobs (workflow-execution 3.6). Jobs that need the same clone at the same time take
turns on a per-directory lock (a trio lock inside this process, ``flock`` between
processes). The toolkit compatibility patches of 9.4 are applied to the clone while the
lock is held, after every fetch.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import trio

__all__ = [
    "ActionFetchError",
    "CloneSettings",
    "FetchedAction",
    "clone_action",
    "patch_file",
    "patch_toolkit",
    "url_host",
]

#: Files larger than this are never patched (9.4).
MAX_PATCH_SIZE = 64 * 1024 * 1024
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_locks: dict[str, trio.Lock] = {}


class ActionFetchError(Exception):
    """A remote action could not be cloned, fetched or resolved."""


@dataclass(frozen=True)
class CloneSettings:
    """How to clone: shallow first, offline (no fetch of existing clones), credentials.

    ``token`` is sent (HTTP basic, user ``token``) only to hosts in ``auth_hosts``;
    TLS verification is skipped only for hosts in ``insecure_hosts``.
    """

    shallow: bool = True
    offline: bool = False
    token: str = ""
    auth_hosts: frozenset[str] = frozenset()
    insecure_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FetchedAction:
    """A clone checked out at ``sha``."""

    directory: Path
    sha: str


def url_host(url: str) -> str:
    """``host[:port]`` of a URL, without user info, lower-cased."""
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2].lower()


def _has_user_info(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def git_environment(url: str, settings: CloneSettings) -> dict[str, str]:
    """The environment of the git processes: no prompts, credentials only where allowed.

    The credential goes through ``GIT_CONFIG_*`` variables rather than the command
    line, so it never shows in a process listing.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    for name in list(env):
        if name.startswith("GIT_CONFIG_"):
            del env[name]
    host = url_host(url)
    config: list[tuple[str, str]] = []
    if settings.token and host in settings.auth_hosts and not _has_user_info(url):
        basic = base64.b64encode(f"token:{settings.token}".encode()).decode()
        config.append((f"http.{url}.extraHeader", f"Authorization: Basic {basic}"))
    if host in settings.insecure_hosts:
        config.append((f"http.{url}.sslVerify", "false"))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class _Git:
    """git commands in one clone directory."""

    def __init__(self, directory: Path, env: Mapping[str, str], redact: Callable[[str], str]):
        self.directory = directory
        self.env = dict(env)
        self.redact = redact

    async def run(self, *args: str, cwd: Path | None = None) -> tuple[int, str]:
        done = await trio.run_process(
            ["git", *args],
            cwd=cwd or self.directory,
            env=self.env,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        text = (done.stdout or b"").decode(errors="replace").strip()
        if done.returncode != 0:
            text = (done.stderr or b"").decode(errors="replace").strip()
        return done.returncode, text

    async def must(self, *args: str) -> str:
        code, text = await self.run(*args)
        if code != 0:
            raise ActionFetchError(f"git {args[0]} failed: {self.redact(text)}")
        return text

    async def commit_of(self, name: str) -> str | None:
        code, text = await self.run("rev-parse", "--verify", "-q", f"{name}^{{commit}}")
        return text if code == 0 and text else None


async def _clone(git: _Git, url: str, ref: str, shallow: bool) -> None:
    target = str(git.directory)
    parent = git.directory.parent
    if shallow:
        code, _ = await git.run(
            "clone", "--quiet", "--depth", "1", "--single-branch", "--branch", ref, url, target,
            cwd=parent,
        )  # fmt: skip
        if code == 0:
            return
        await trio.to_thread.run_sync(_remove_tree, git.directory)
    code, text = await git.run("clone", "--quiet", url, target, cwd=parent)
    if code != 0:
        await trio.to_thread.run_sync(_remove_tree, git.directory)
        raise ActionFetchError(f"git clone failed: {git.redact(text)}")


async def _fetch(git: _Git, ref: str) -> bool:
    """Update an existing clone; True when FETCH_HEAD holds the ref (shallow clones)."""
    if (git.directory / ".git" / "shallow").exists():
        code, _ = await git.run("fetch", "--quiet", "--depth", "1", "--force", "origin", ref)
        return code == 0
    await git.must(
        "fetch", "--quiet", "--force", "--update-head-ok", "--tags", "origin", "+refs/*:refs/*"
    )
    return False


async def _resolve(git: _Git, ref: str, fetch_head: bool) -> str:
    """Tag, else remote branch, else commit SHA (3.6)."""
    names = [f"refs/tags/{ref}", f"refs/remotes/origin/{ref}", f"refs/heads/{ref}"]
    if fetch_head:
        names.insert(0, "FETCH_HEAD")
    for name in names:
        if sha := await git.commit_of(name):
            return sha
    if _HEX.fullmatch(ref) and (sha := await git.commit_of(ref)):
        if sha.lower() != ref.lower():
            raise ActionFetchError(
                f"Unable to resolve action '{ref}': short commit SHAs are not supported; "
                f"use the full commit SHA {sha} instead"
            )
        return sha
    raise ActionFetchError(f"Unable to resolve action ref '{ref}': no tag, branch or commit")


@contextlib.asynccontextmanager
async def directory_lock(directory: Path) -> AsyncIterator[None]:
    """Exclusive use of one cache directory, within this process and between processes."""
    key = str(directory)
    lock = _locks.setdefault(key, trio.Lock())
    async with lock:
        directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await trio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX, abandon_on_cancel=True)
            yield
        finally:
            os.close(fd)


async def clone_action(
    directory: Path,
    url: str,
    ref: str,
    settings: CloneSettings,
    *,
    redact: Callable[[str], str],
    after_checkout: Callable[[Path], None] = lambda _directory: None,
) -> FetchedAction:
    """Clone (or update) ``url`` into ``directory`` and check ``ref`` out, detached.

    ``after_checkout`` runs in a worker thread while the directory is still locked
    (reading the metadata, patching). ``redact`` cleans git's messages (they may quote
    URLs carrying credentials) before they become errors.
    """
    async with directory_lock(directory):
        git = _Git(directory, git_environment(url, settings), redact)
        fetch_head = False
        if not (directory / ".git").is_dir():
            await trio.to_thread.run_sync(_remove_tree, directory)
            await _clone(git, url, ref, settings.shallow)
        elif not settings.offline:
            fetch_head = await _fetch(git, ref)
        sha = await _resolve(git, ref, fetch_head)
        await git.must("checkout", "--quiet", "--detach", "--force", sha)
        await git.must("reset", "--quiet", "--hard", sha)
        await trio.to_thread.run_sync(after_checkout, directory)
        return FetchedAction(directory, sha)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- toolkit patches (9.4) -----------------------------------------------------------

_LOCALHOST_TEST = re.compile(rb"""(endsWith\(\s*(['"`]))\.LOCALHOST(\2\s*\))""")


def _env_read(name: bytes, group: bytes) -> bytes:
    """``process.env.NAME`` or ``process.env['NAME']`` (any quote) as a regex."""
    quote = rb"(?P<" + group + rb">['\"`])"
    return rb"process\.env(?:\." + name + rb"|\[\s*" + quote + name + rb"(?P=" + group + rb")\s*\])"


_CACHE_GETTER = re.compile(
    rb"(?P<head>"
    + _env_read(b"ACTIONS_CACHE_URL", b"q1")
    + rb"\s*\|\|\s*)"
    + _env_read(b"ACTIONS_RESULTS_URL", b"q2")
    + rb"(?P<gap>[\s\S]{0,256}?)"
    + _env_read(b"ACTIONS_RESULTS_URL", b"q3")
)
_PREFER_CACHE = b"(process.env.ACTIONS_CACHE_URL||process.env.ACTIONS_RESULTS_URL)"


def patch_toolkit(data: bytes) -> bytes | None:
    """The patched content of a bundled script, or None when it needs no patch (9.4)."""
    artifact = b"GHESNotSupportedError" in data
    cache = b"ACTIONS_CACHE_SERVICE_V2" in data and _CACHE_GETTER.search(data) is not None
    if not (artifact or cache) or not _LOCALHOST_TEST.search(data):
        return None
    patched = _LOCALHOST_TEST.sub(rb"\1\3", data)
    if cache:
        patched = _CACHE_GETTER.sub(
            lambda m: m["head"] + _PREFER_CACHE + m["gap"] + _PREFER_CACHE, patched
        )
    return patched


def patch_file(root: Path, name: str, warn: Callable[[str], None]) -> None:
    """Apply :func:`patch_toolkit` to ``root/name`` if it is a file inside ``root``."""
    try:
        path = (root / name).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return
        if path.stat().st_size > MAX_PATCH_SIZE:
            return
        patched = patch_toolkit(path.read_bytes())
        if patched is not None:
            path.write_bytes(patched)
    except OSError as exc:
        warn(f"Unable to patch '{name}' of the action: {exc.strerror}; it runs unpatched")
