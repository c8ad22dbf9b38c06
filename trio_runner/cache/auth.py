"""Who may use the cache: the job-token registry, the signing key and signed URLs.

Job tokens are kept only as SHA-256 digests, reference counted (spec 5.1). Download and
upload URLs carry an HMAC over ``<purpose><id>:<exp>`` made with a 32-byte key that lives in
``<cache dir>/.secret`` (spec 5.4, 5.5).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trio_runner.errors import RunnerError

log = logging.getLogger(__name__)

DOWNLOAD_PURPOSE = ""
UPLOAD_PURPOSE = "upload:"
DOWNLOAD_LIFETIME = 600
UPLOAD_LIFETIME = 3600
SECRET_FILE = ".secret"
_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Credential:
    """What a registration says about a job; the wire names of ``/_internal/register``."""

    repo: str
    results: str = ""
    insecure_tls: bool = False
    public_url: str = ""


class TokenRegistry:
    """In-memory map of job tokens to credentials, reference counted.

    A second registration of a live token only adds a reference (the first credential
    wins); the token stays valid until every registration has been revoked.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[Credential, int]] = {}

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def register(self, token: str, credential: Credential) -> None:
        if not token:
            return
        digest = self._digest(token)
        current = self._entries.get(digest)
        if current is None:
            self._entries[digest] = (credential, 1)
        else:
            self._entries[digest] = (current[0], current[1] + 1)

    def revoke(self, token: str) -> None:
        digest = self._digest(token)
        current = self._entries.get(digest)
        if current is None:
            return
        if current[1] <= 1:
            del self._entries[digest]
        else:
            self._entries[digest] = (current[0], current[1] - 1)

    def lookup(self, token: str) -> Credential | None:
        if not token:
            return None
        found = self._entries.get(self._digest(token))
        return None if found is None else found[0]

    def __len__(self) -> int:
        return len(self._entries)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None (spec 5.2)."""
    if header is None or len(header) < 8:
        return None
    if header[:7].lower() != "bearer ":
        return None
    return header[7:]


class SignatureError(Exception):
    """A signed URL that must be refused with 401; the text is safe to show."""


class UrlSigner:
    """Signs and verifies ``exp``/``sig`` pairs bound to a purpose and an entry id."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def signature(self, purpose: str, entry_id: int, expires: int) -> str:
        message = f"{purpose}{entry_id}:{expires}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, purpose: str, entry_id: int, lifetime: int) -> str:
        """``exp=..&sig=..`` for a URL valid ``lifetime`` seconds from now."""
        expires = int(time.time()) + lifetime
        return f"exp={expires}&sig={self.signature(purpose, entry_id, expires)}"

    def verify(self, purpose: str, entry_id: int, exp: str | None, sig: str | None) -> None:
        """Raise SignatureError unless the pair is valid now, in act_runner's check order."""
        if not exp or not sig:
            raise SignatureError("missing signature")
        if not (exp.isascii() and exp.isdigit()):
            raise SignatureError("invalid expiry")
        expires = int(exp)
        if time.time() > expires:
            raise SignatureError("signature expired")
        expected = self.signature(purpose, entry_id, expires)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise SignatureError("bad signature")


def load_signing_key(cache_dir: Path) -> bytes:
    """Read ``<cache_dir>/.secret``, creating or replacing it when missing or invalid.

    Read errors other than "missing" stop the start-up: a key that exists but cannot be
    read must never be silently replaced (URLs issued with it would all break).
    """
    cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = cache_dir / SECRET_FILE
    try:
        text = path.read_text("ascii", errors="replace")
    except FileNotFoundError:
        return _write_new_key(path)
    except OSError as exc:
        raise RunnerError(f"cannot read the cache signing key {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) < _KEY_BYTES:
        log.warning("cache signing key %s is invalid; generating a new one", path)
        return _write_new_key(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("cache signing key %s was readable by others; setting mode 0600", path)
        path.chmod(0o600)
    return key


def _write_new_key(path: Path) -> bytes:
    key = secrets.token_bytes(_KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=".secret-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.hex().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    return key
