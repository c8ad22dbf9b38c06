"""Job-token registry, bearer parsing, signed URLs and the signing key file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from trio_runner.cache.auth import (
    Credential,
    SignatureError,
    TokenRegistry,
    UrlSigner,
    bearer_token,
    load_signing_key,
)
from trio_runner.errors import RunnerError


def test_registry_is_reference_counted_and_first_credential_wins() -> None:
    registry = TokenRegistry()
    registry.register("t", Credential("owner/a"))
    registry.register("t", Credential("owner/b"))
    assert registry.lookup("t") == Credential("owner/a")
    registry.revoke("t")
    assert registry.lookup("t") == Credential("owner/a")
    registry.revoke("t")
    assert registry.lookup("t") is None
    registry.revoke("t")  # unknown: a no-op
    registry.register("", Credential("x"))
    assert len(registry) == 0
    assert registry.lookup("") is None


def test_registry_keeps_no_raw_tokens() -> None:
    registry = TokenRegistry()
    registry.register("very-secret-token", Credential("o/r"))
    assert "very-secret-token" not in repr(vars(registry))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer ", None),
        ("Bearer abc", "abc"),
        ("bEaReR abc def", "abc def"),
        ("Bearer  two-spaces", " two-spaces"),
        ("Basic abc", None),
        ("Bearerabc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_signed_urls_verify_in_order() -> None:
    signer = UrlSigner(b"k" * 32)
    exp = int(time.time()) + 60
    good = signer.signature("", 7, exp)
    signer.verify("", 7, str(exp), good)
    cases = [
        ((None, good), "missing signature"),
        ((str(exp), ""), "missing signature"),
        (("12a", good), "invalid expiry"),
        (("-5", good), "invalid expiry"),
        ((str(exp - 120), signer.signature("", 7, exp - 120)), "signature expired"),
        ((str(exp), good.upper()), "bad signature"),
        ((str(exp + 1), good), "bad signature"),
    ]
    for (exp_text, sig), message in cases:
        with pytest.raises(SignatureError, match=message):
            signer.verify("", 7, exp_text, sig)
    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify("upload:", 7, str(exp), good)
    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify("", 8, str(exp), good)
    with pytest.raises(SignatureError, match="bad signature"):
        UrlSigner(b"x" * 32).verify("", 7, str(exp), good)


def test_signature_matches_the_documented_message() -> None:
    import hashlib
    import hmac

    key = bytes(range(32))
    expected = hmac.new(key, b"upload:42:1767225600", hashlib.sha256).hexdigest()
    assert UrlSigner(key).signature("upload:", 42, 1767225600) == expected
    assert UrlSigner(key).query("", 42, 600).startswith("exp=")


def test_signing_key_is_created_private_and_reused(tmp_path: Path) -> None:
    cache_dir = tmp_path / "a" / "b"
    key = load_signing_key(cache_dir)
    secret = cache_dir / ".secret"
    assert len(key) == 32
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text() == key.hex()
    assert load_signing_key(cache_dir) == key


def test_invalid_key_is_replaced_and_loose_mode_fixed(tmp_path: Path) -> None:
    secret = tmp_path / ".secret"
    secret.write_text("not hex")
    key = load_signing_key(tmp_path)
    assert secret.read_text() == key.hex()
    secret.write_text("ab" * 16)  # 16 bytes: too short
    assert load_signing_key(tmp_path) != bytes.fromhex("ab" * 16)
    longer = os.urandom(40)
    secret.write_text(f"  {longer.hex()}\n")
    secret.chmod(0o644)
    assert load_signing_key(tmp_path) == longer
    assert secret.stat().st_mode & 0o777 == 0o600


def test_unreadable_key_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / ".secret").mkdir()
    with pytest.raises(RunnerError, match="cannot read the cache signing key"):
        load_signing_key(tmp_path)
