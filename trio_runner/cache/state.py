"""What every route of one cache server shares: the store, the registry, the signer and
the artifact forwarder."""

from __future__ import annotations

from dataclasses import dataclass, field

from trio_runner.cache.auth import Credential, TokenRegistry, UrlSigner
from trio_runner.cache.forward import Forwarder
from trio_runner.cache.store import Store

MAX_ID = 2**63 - 1


@dataclass(slots=True)
class CacheState:
    store: Store
    registry: TokenRegistry
    signer: UrlSigner
    #: guards ``/_internal``; empty on an embedded server, where those routes answer 404
    shared_secret: str = ""
    #: ``http://<host>:<port>`` without a trailing slash, known once the socket is bound
    base_url: str = ""
    #: forwards the artifact half of the results service (spec 12.6)
    forwarder: Forwarder = field(default_factory=Forwarder)

    def base_for(self, credential: Credential) -> str:
        """The origin this job reaches the server at (spec 2, ``public_url``)."""
        return credential.public_url.rstrip("/") or self.base_url


def parse_id(text: str) -> int | None:
    """An entry id from a path segment: 1 to 19 ASCII digits, 1 <= value <= 2^63-1."""
    if not (1 <= len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
