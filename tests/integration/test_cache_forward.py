"""The results-service front: artifact calls of a registered job reach its Gitea through
the cache server, streamed both ways; everyone else gets a twirp 404 (spec 12.6)."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from trio_runner.cache.server import CacheService, RemoteCache, serve_cache
from trio_runner.cache.settings import CacheSettings, EvictionPolicy

TOKEN = "job-runtime-token"
ARTIFACTS = "twirp/github.actions.results.api.v1.ArtifactService"
BIG = 24 * 1024 * 1024
SECRET = "control-plane-secret"


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeResults:
    """Stands in for Gitea's ArtifactService: records each call; ``/Big`` answers with
    ``BIG`` bytes in 1 MiB pieces, everything else echoes a JSON document."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            Seen(scope["method"], scope["path"], scope["query_string"], headers, bytes(body))
        )
        if scope["path"].endswith("/Big"):
            start = {"type": "http.response.start", "status": 200}
            start["headers"] = [(b"content-type", b"application/octet-stream")]
            await send(start)
            for index in range(BIG // (1024 * 1024)):
                piece = bytes([index % 251]) * (1024 * 1024)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        answer = b'{"ok":true,"signed_upload_url":"http://gitea.example/upload"}'
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"x-upstream", b"yes")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def big_body() -> bytes:
    return b"".join(bytes([i % 251]) * (1024 * 1024) for i in range(BIG // (1024 * 1024)))


@pytest.fixture
async def results() -> AsyncIterator[FakeResults]:
    fake = FakeResults()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, cast(ASGIFramework, fake), config))
        fake.url = binds[0]
        yield fake
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def cache(tmp_path: Path, secret: str = "") -> AsyncIterator[CacheService]:
    settings = CacheSettings(
        dir=tmp_path / "cache",
        host="127.0.0.1",
        bind_host="127.0.0.1",
        shared_secret=secret,
        policy=EvictionPolicy(min_free_disk=0),
    )
    async with serve_cache(settings) as service:
        yield service


def job_client(service: CacheService, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=service.url, headers=headers, timeout=30)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_artifact_call_is_forwarded_with_the_upstream_host(
    tmp_path: Path, results: FakeResults
) -> None:
    with trio.fail_after(30):
        async with (
            cache(tmp_path) as service,
            service.job_token(TOKEN, "o/r", results=results.url + "/") as results_url,
            job_client(service) as client,
        ):
            answer = await client.post(
                f"{ARTIFACTS}/CreateArtifact?x=1&y=%2F",
                json={"name": "dist", "version": 4},
                headers={"X-Job-Header": "kept"},
            )
    assert results_url == service.url
    assert answer.status_code == 201
    assert answer.headers["x-upstream"] == "yes"
    assert answer.json()["signed_upload_url"] == "http://gitea.example/upload"
    (seen,) = results.seen
    assert seen.method == "POST"
    assert seen.path == "/" + ARTIFACTS + "/CreateArtifact"
    assert seen.query == b"x=1&y=%2F"
    assert seen.headers["host"] == results.url.removeprefix("http://")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["x-job-header"] == "kept"
    assert not [name for name in seen.headers if name.startswith("x-forwarded")]
    assert seen.body == b'{"name":"dist","version":4}'


async def test_large_bodies_stream_both_ways(tmp_path: Path, results: FakeResults) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        for index in range(BIG // (1024 * 1024)):
            yield bytes([index % 251]) * (1024 * 1024)

    with trio.fail_after(60):
        async with (
            cache(tmp_path) as service,
            service.job_token(TOKEN, "o/r", results=results.url),
            job_client(service) as client,
        ):
            digest = hashlib.sha256()
            async with client.stream("POST", f"{ARTIFACTS}/Big", content=chunked()) as answer:
                status = answer.status_code
                async for piece in answer.aiter_bytes():
                    digest.update(piece)
    expected = hashlib.sha256(big_body()).hexdigest()
    assert status == 200
    assert digest.hexdigest() == expected
    (seen,) = results.seen
    assert hashlib.sha256(seen.body).hexdigest() == expected


async def test_refused_without_a_forwarding_registration(
    tmp_path: Path, results: FakeResults
) -> None:
    with trio.fail_after(30):
        async with cache(tmp_path) as service:
            async with (
                service.job_token("no-results", "o/r") as results_url,
                job_client(service, "no-results") as client,
            ):
                no_results = await client.post(f"{ARTIFACTS}/CreateArtifact", json={})
            async with service.job_token(TOKEN, "o/r", results=results.url):
                async with job_client(service, "unknown") as client:
                    unknown = await client.post(f"{ARTIFACTS}/CreateArtifact", json={})
                async with job_client(service, None) as client:
                    anonymous = await client.post(f"{ARTIFACTS}/CreateArtifact", json={})
                async with job_client(service) as client:
                    other_service = await client.post(
                        "twirp/github.actions.results.api.v1.OtherService/Call", json={}
                    )
            async with job_client(service) as client:
                revoked = await client.post(f"{ARTIFACTS}/CreateArtifact", json={})
    assert results_url == ""
    for answer in (no_results, unknown, anonymous, other_service, revoked):
        assert answer.status_code == 404
        assert answer.json()["code"] == "bad_route"
    assert results.seen == []


async def test_unreachable_upstream_is_a_twirp_502(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            cache(tmp_path) as service,
            service.job_token(TOKEN, "o/r", results=f"http://127.0.0.1:{closed_port()}"),
            job_client(service) as client,
        ):
            answer = await client.post(f"{ARTIFACTS}/CreateArtifact", json={})
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["code"] == "unavailable"
    assert TOKEN not in answer.text


async def test_remote_registration_learns_that_the_server_forwards(
    tmp_path: Path, results: FakeResults
) -> None:
    with trio.fail_after(30):
        async with cache(tmp_path, SECRET) as service:
            remote = RemoteCache(service.url, SECRET)
            async with (
                remote.job_token(TOKEN, "o/r", results=results.url) as results_url,
                job_client(service) as client,
            ):
                forwarded = await client.post(f"{ARTIFACTS}/ListArtifacts", json={})
            async with remote.job_token("plain", "o/r") as plain_url:
                pass
            async with job_client(service) as client:
                after = await client.post(f"{ARTIFACTS}/ListArtifacts", json={})
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SECRET}"}) as admin:
                answer = await admin.post(
                    f"{service.url}_internal/register",
                    json={"token": "t", "results": results.url, "public_url": "https://c.example/"},
                )
    assert results_url == remote.url == service.url
    assert plain_url == ""
    assert forwarded.status_code == 201
    assert after.status_code == 404
    assert answer.json() == {"results_url": "https://c.example"}
    assert [seen.path for seen in results.seen] == ["/" + ARTIFACTS + "/ListArtifacts"]
