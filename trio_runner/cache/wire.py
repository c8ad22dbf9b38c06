"""JSON bodies the cache routes accept, as msgspec Structs (v1, twirp v2, control plane).

Twirp requests accept both the proto field names and their lowerCamel JSON names, and
int64 values as strings or numbers (spec 7.1); unknown fields are ignored.
"""

from __future__ import annotations

import msgspec


class ReserveRequest(msgspec.Struct):
    key: str
    version: str
    cacheSize: int | None = None  # wire name


class CommitRequest(msgspec.Struct):
    size: int | None = None


class CreateEntryRequest(msgspec.Struct):
    key: str = ""
    version: str = ""


class FinalizeRequest(msgspec.Struct):
    key: str = ""
    version: str = ""
    size_bytes: int | str | None = None
    sizeBytes: int | str | None = None  # wire name


class DownloadUrlRequest(msgspec.Struct):
    key: str = ""
    version: str = ""
    restore_keys: list[str] | None = None
    restoreKeys: list[str] | None = None  # wire name


class RegisterRequest(msgspec.Struct):
    token: str = ""
    repo: str = ""
    results: str = ""
    insecure_tls: bool = False
    public_url: str = ""


class RevokeRequest(msgspec.Struct):
    token: str = ""
