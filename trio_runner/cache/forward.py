"""The results-service front: a job's artifact calls forwarded to its Gitea (spec 12.6).

``ACTIONS_RESULTS_URL`` names one origin for every ``github.actions.results.api.v1``
service; this server answers the cache half and passes the artifact half through to the
``results`` origin the job's registration named. Bodies stream both ways, the upstream
sees the job's own method, headers and body with ``Host`` set to its own host (Gitea
builds the URLs it hands out from it), and nothing is added (no ``X-Forwarded-*``: a
forwarded scheme would make an https Gitea mint http URLs).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
import trio

from trio_runner.cache.asgi import ClientGone, Receive, Request, Scope, Send, send_json
from trio_runner.cache.auth import TokenRegistry, bearer_token

log = logging.getLogger(__name__)

PREFIX = "/twirp/github.actions.results.api.v1.ArtifactService/"
#: Connection-level headers that describe one hop and are never passed on.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Artifact twirp calls are small and quick; the read timeout is an idle bound, not a
#: deadline for the whole exchange.
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def claims(scope: Scope) -> bool:
    """Whether this request is for the artifact service (forwarded or refused with 404)."""
    path: str = scope["path"]
    return path.startswith(PREFIX)


class Forwarder:
    """Forwards artifact calls; holds one connection pool per TLS verification mode."""

    def __init__(self) -> None:
        self._clients: dict[bool, httpx.AsyncClient] = {}

    def _client(self, verify: bool) -> httpx.AsyncClient:
        client = self._clients.get(verify)
        if client is None:
            client = httpx.AsyncClient(verify=verify, timeout=TIMEOUT, follow_redirects=False)
            # Only the job's own headers go upstream; httpx would add its defaults.
            client.headers = httpx.Headers()
            self._clients[verify] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def handle(
        self, registry: TokenRegistry, scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = Request(scope, receive)
        token = bearer_token(request.headers.get("authorization"))
        credential = registry.lookup(token) if token else None
        if credential is None or not credential.results:
            await send_json(send, 404, {"code": "bad_route", "msg": "not found"})
            return
        origin = credential.results.rstrip("/")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        url = origin + raw_path.decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name.lower() not in HOP_BY_HOP and name.lower() != b"host"
        ]
        has_body = any(
            name.lower() in (b"content-length", b"transfer-encoding")
            for name, _ in scope["headers"]
        )
        client = self._client(not credential.insecure_tls)
        upstream = client.build_request(
            request.method,
            url,
            headers=headers,
            content=request.body() if has_body else None,
        )
        try:
            response = await client.send(upstream, stream=True)
        except ClientGone:
            return
        except httpx.HTTPError as exc:
            log.warning(
                "cache server: the results service %s is unreachable (%s)",
                _origin(origin),
                type(exc).__name__,
            )
            message = "the results service is unreachable"
            await send_json(send, 502, {"code": "unavailable", "msg": message})
            return
        try:
            await _relay(response, send)
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()


async def _relay(response: httpx.Response, send: Send) -> None:
    headers = [
        (name, value) for name, value in response.headers.raw if name.lower() not in HOP_BY_HOP
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    try:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as exc:
        # The status is already sent: ending without the final message drops the
        # connection, so the job sees a truncated answer rather than a short one.
        log.warning(
            "cache server: the results service broke off an answer (%s)", type(exc).__name__
        )
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _origin(url: str) -> str:
    """Scheme, host and port only: a configured address may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
