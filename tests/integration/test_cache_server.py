"""The cache server over HTTP: every route, status code and refusal of the spec."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio

from trio_runner.cache.server import CacheService, serve_cache
from trio_runner.cache.settings import CacheSettings, EvictionPolicy

TOKEN_A = "token-of-repo-a"
TOKEN_B = "token-of-repo-b"
V1 = "_apis/artifactcache"
TWIRP = "twirp/github.actions.results.api.v1.CacheService"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"


def settings(path: Path, **policy: object) -> CacheSettings:
    return CacheSettings(
        dir=path,
        host="127.0.0.1",
        bind_host="127.0.0.1",
        policy=EvictionPolicy(min_free_disk=0, **policy),  # type: ignore[arg-type]
    )


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CacheService]:
    async with (
        serve_cache(settings(tmp_path)) as svc,
        svc.job_token(TOKEN_A, "owner/a"),
        svc.job_token(TOKEN_B, "owner/b"),
    ):
        yield svc


def client(svc: CacheService, token: str | None = TOKEN_A) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=svc.url, headers=headers, timeout=30)


async def save_v1(c: httpx.AsyncClient, key: str, data: bytes, version: str = VERSION) -> int:
    r = await c.post(f"{V1}/caches", json={"key": key, "version": version, "cacheSize": len(data)})
    assert r.status_code == 200, r.text
    cache_id: int = r.json()["cacheId"]
    if data:
        headers = {"Content-Range": f"bytes 0-{len(data) - 1}/*"}
        r = await c.patch(f"{V1}/caches/{cache_id}", content=data, headers=headers)
        assert r.status_code == 200, r.text
    r = await c.post(f"{V1}/caches/{cache_id}", json={"size": len(data)})
    assert r.status_code == 200, r.text
    return cache_id


async def lookup(c: httpx.AsyncClient, keys: list[str], version: str = VERSION) -> httpx.Response:
    return await c.get(f"{V1}/cache", params={"keys": ",".join(keys), "version": version})


async def download(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.get(url, headers=headers)


# -- authentication ----------------------------------------------------------------------


# httpx refuses to send "Bearer " with its trailing space; the unit tests cover that one.
@pytest.mark.parametrize("authorization", [None, "Basic abc", "Bearer", "bearer"])
async def test_missing_bearer_is_401_on_v1(
    service: CacheService, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=service.url, headers=headers) as c:
        r = await lookup(c, ["k"])
    assert r.status_code == 401
    assert r.json() == {"error": "missing bearer token", "message": "missing bearer token"}


async def test_unknown_token_is_401_everywhere(service: CacheService) -> None:
    async with client(service, "nobody") as c:
        responses = [
            await lookup(c, ["k"]),
            await c.post(f"{V1}/caches", json={"key": "k", "version": "v"}),
            await c.get(f"{V1}/caches", params={"key": "k"}),
            await c.patch(f"{V1}/caches/1", content=b"x", headers={"Content-Range": "bytes 0-0/*"}),
            await c.post(f"{V1}/caches/1", json={}),
            await c.post(f"{V1}/clean"),
        ]
        twirp = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "k", "version": "v"})
    assert [r.status_code for r in responses] == [401] * 6
    assert all(r.json()["message"] == "unknown bearer token" for r in responses)
    assert twirp.status_code == 401
    assert twirp.json() == {"code": "unauthenticated", "msg": "unknown bearer token"}


async def test_bearer_scheme_is_case_insensitive(service: CacheService) -> None:
    async with httpx.AsyncClient(
        base_url=service.url, headers={"Authorization": f"BEARER {TOKEN_A}"}
    ) as c:
        assert (await lookup(c, ["k"])).status_code == 204


async def test_revoked_token_is_refused_and_refcount_keeps_it(service: CacheService) -> None:
    async with client(service, "job") as c:
        async with service.job_token("job", "owner/a"):
            async with service.job_token("job", "owner/other"):
                assert (await lookup(c, ["k"])).status_code == 204
            # the first registration still holds the token, with its own repository
            await save_v1(c, "k", b"data")
            assert (await lookup(c, ["k"])).status_code == 200
        assert (await lookup(c, ["k"])).status_code == 401
    async with client(service) as c:
        assert (await lookup(c, ["k"])).json()["cacheKey"] == "k"


async def test_repository_isolation(service: CacheService) -> None:
    async with client(service, TOKEN_A) as a, client(service, TOKEN_B) as b:
        await save_v1(a, "shared-key", b"from a")
        assert (await lookup(b, ["shared-key"])).status_code == 204
        r = await b.post(f"{TWIRP}/GetCacheEntryDownloadURL", json={"key": "s", "version": VERSION})
        assert r.json() == {"ok": False}
        listing = await b.get(f"{V1}/caches", params={"key": "shared-key"})
        assert listing.json() == {"totalCount": 0, "artifactCaches": []}
        # the same key in repo B is its own entry
        await save_v1(b, "shared-key", b"from b")
        hit = (await lookup(b, ["shared-key"])).json()
        assert (await download(hit["archiveLocation"])).content == b"from b"


async def test_foreign_reservation_cannot_be_written_or_committed(service: CacheService) -> None:
    async with client(service, TOKEN_A) as a, client(service, TOKEN_B) as b:
        r = await a.post(f"{V1}/caches", json={"key": "k", "version": VERSION, "cacheSize": 3})
        cache_id = r.json()["cacheId"]
        patch = await b.patch(
            f"{V1}/caches/{cache_id}", content=b"abc", headers={"Content-Range": "bytes 0-2/*"}
        )
        commit = await b.post(f"{V1}/caches/{cache_id}", json={"size": 3})
        finalize = await b.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "k", "version": VERSION, "size_bytes": "3"},
        )
    assert patch.status_code == 403
    assert patch.json()["error"] == f"cache {cache_id}: forbidden"
    assert commit.status_code == 403
    assert finalize.json() == {"ok": False}


# -- v1 lookup and matching ------------------------------------------------------------


async def test_matching_order_and_stored_case(service: CacheService) -> None:
    async with client(service) as c:
        await save_v1(c, "p_a_b_c", b"1")
        await save_v1(c, "p_a_b", b"2")
        await save_v1(c, "p_a", b"3")
        await save_v1(c, "Key_ABC", b"4")
        assert (await lookup(c, ["p_a_b_x", "p_a_b", "p_a"])).json()["cacheKey"] == "p_a_b"
        assert (await lookup(c, ["unrelated", "p_a", "p_a_b"])).json()["cacheKey"] == "p_a"
        assert (await lookup(c, ["Key_"])).json()["cacheKey"] == "Key_ABC"
        assert (await lookup(c, ["key_abc"])).status_code == 204
        assert (await lookup(c, ["p%"])).status_code == 204
        assert (await lookup(c, ["p_a"], version="other")).status_code == 204


async def test_exact_beats_newer_prefix_and_newest_prefix_wins(service: CacheService) -> None:
    async with client(service) as c:
        await save_v1(c, "p_a", b"old exact")
        await save_v1(c, "p_a_b_c", b"prefix 1")
        await save_v1(c, "p_a_b", b"prefix 2")
        assert (await lookup(c, ["p_a", "p_a_b"])).json()["cacheKey"] == "p_a"
        assert (await lookup(c, ["p_a_"])).json()["cacheKey"] == "p_a_b"


async def test_lookup_validation(service: CacheService) -> None:
    async with client(service) as c:
        no_keys = await c.get(f"{V1}/cache", params={"version": "v"})
        no_version = await c.get(f"{V1}/cache", params={"keys": "k"})
        too_many = await lookup(c, [f"k{i}" for i in range(11)])
        too_long = await lookup(c, ["x" * 513])
    assert [r.status_code for r in (no_keys, no_version, too_many, too_long)] == [400] * 4


async def test_dangling_hit_is_dropped(service: CacheService) -> None:
    async with client(service) as c:
        cache_id = await save_v1(c, "gone", b"bytes")
        service.state.store.blob_path(cache_id).unlink()
        assert (await lookup(c, ["gone"])).status_code == 204
        assert await service.state.store.list_key("owner/a", "gone") == []


# -- v1 reserve, upload, commit ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": "v"}',
        b'{"key": "", "version": "v"}',
        b'{"key": "a,b", "version": "v"}',
        b'{"key": "k"}',
        b'{"key": "k", "version": "v", "cacheSize": -1}',
        b'{"key": "k", "version": "v", "cacheSize": "12"}',
        b'{"key": "k\\u0000", "version": "v"}',
    ],
)
async def test_reserve_validation(service: CacheService, body: bytes) -> None:
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"]


async def test_reserve_conflicts(service: CacheService) -> None:
    async with client(service) as c:
        await save_v1(c, "done", b"x")
        existing = await c.post(f"{V1}/caches", json={"key": "done", "version": VERSION})
        first = await c.post(f"{V1}/caches", json={"key": "busy", "version": VERSION})
        second = await c.post(f"{V1}/caches", json={"key": "busy", "version": VERSION})
        other_version = await c.post(f"{V1}/caches", json={"key": "busy", "version": "v2"})
        prefix_of_existing = await c.post(f"{V1}/caches", json={"key": "don", "version": VERSION})
    assert existing.status_code == 409
    assert existing.json()["message"] == "cache entry already exists"
    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["message"] == "another job is uploading this entry"
    assert other_version.status_code == 200
    assert prefix_of_existing.status_code == 200


async def test_concurrent_reserves_have_one_winner(service: CacheService) -> None:
    statuses: list[int] = []
    async with client(service) as c:

        async def reserve() -> None:
            r = await c.post(f"{V1}/caches", json={"key": "race", "version": VERSION})
            statuses.append(r.status_code)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(reserve)
    assert sorted(statuses) == [200] + [409] * 7


async def test_parts_out_of_order_and_chunked(service: CacheService) -> None:
    data = os.urandom(3 * 100_000 + 17)
    async with client(service) as c:
        r = await c.post(
            f"{V1}/caches", json={"key": "parts", "version": VERSION, "cacheSize": len(data)}
        )
        cache_id = r.json()["cacheId"]
        bounds = [(200_000, len(data)), (0, 100_000), (100_000, 200_000)]

        async def send(first: int, end: int) -> None:
            async def chunked() -> AsyncIterator[bytes]:
                for at in range(first, end, 7_000):
                    yield data[at : min(at + 7_000, end)]

            headers = {"Content-Range": f"bytes {first}-{end - 1}/*"}
            r = await c.patch(f"{V1}/caches/{cache_id}", content=chunked(), headers=headers)
            assert r.status_code == 200, r.text

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for first, end in bounds:
                    nursery.start_soon(send, first, end)
        assert (await c.post(f"{V1}/caches/{cache_id}", json={"size": len(data)})).json() == {}
        hit = (await lookup(c, ["parts"])).json()
    assert (await download(hit["archiveLocation"])).content == data


@pytest.mark.parametrize(
    ("content_range", "status"),
    [
        (None, 400),
        ("bytes 0-9", 400),
        ("bytes 5-2/*", 400),
        ("bytes a-9/*", 400),
        ("items 0-9/*", 400),
        ("bytes 0-10/*", 400),
        ("bytes 0-9/11", 400),
        ("bytes 95-104/*", 400),
    ],
)
async def test_bad_content_range(
    service: CacheService, content_range: str | None, status: int
) -> None:
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", json={"key": "cr", "version": VERSION, "cacheSize": 100})
        cache_id = r.json()["cacheId"]
        headers = {} if content_range is None else {"Content-Range": content_range}
        r = await c.patch(f"{V1}/caches/{cache_id}", content=b"0123456789", headers=headers)
    assert r.status_code == status
    assert r.json()["message"]


async def test_overlapping_and_replayed_parts(service: CacheService) -> None:
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", json={"key": "ov", "version": VERSION, "cacheSize": 20})
        cache_id = r.json()["cacheId"]

        async def patch(first: int, data: bytes) -> httpx.Response:
            headers = {"Content-Range": f"bytes {first}-{first + len(data) - 1}/*"}
            return await c.patch(f"{V1}/caches/{cache_id}", content=data, headers=headers)

        assert (await patch(0, b"a" * 10)).status_code == 200
        overlap = await patch(5, b"b" * 10)
        assert overlap.status_code == 400
        assert overlap.json()["message"] == "range overlaps bytes 0-9"
        assert (await patch(0, b"c" * 10)).status_code == 200  # an exact retry replaces
        short = await patch(10, b"d" * 10)
        assert short.status_code == 200
        long_body = await c.patch(
            f"{V1}/caches/{cache_id}", content=b"e" * 11, headers={"Content-Range": "bytes 10-19/*"}
        )
        assert long_body.status_code == 400
        assert "body length" in long_body.json()["message"]
        # the failed replay of 10-19 dropped that part, so the upload has a hole now
        incomplete = await c.post(f"{V1}/caches/{cache_id}", json={"size": 20})
        assert incomplete.status_code == 400
        assert incomplete.json()["message"].startswith("upload incomplete")
        assert (await lookup(c, ["ov"])).status_code == 204


async def test_commit_checks(service: CacheService) -> None:
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", json={"key": "sz", "version": VERSION, "cacheSize": 4})
        cache_id = r.json()["cacheId"]
        headers = {"Content-Range": "bytes 0-3/*"}
        await c.patch(f"{V1}/caches/{cache_id}", content=b"abcd", headers=headers)
        wrong = await c.post(f"{V1}/caches/{cache_id}", json={"size": 5})
        negative = await c.post(f"{V1}/caches/{cache_id}", json={"size": -1})
        bad_json = await c.post(f"{V1}/caches/{cache_id}", content=b"{")
        ok = await c.post(f"{V1}/caches/{cache_id}", content=b"")
        again = await c.post(f"{V1}/caches/{cache_id}", json={"size": 4})
        after = await c.patch(f"{V1}/caches/{cache_id}", content=b"abcd", headers=headers)
        missing = await c.post(f"{V1}/caches/999999", json={"size": 1})
    assert wrong.status_code == 400
    assert wrong.json()["message"] == "size does not match the reserved size"
    assert negative.status_code == 400
    assert bad_json.status_code == 400
    assert ok.status_code == 200
    assert again.status_code == 409
    assert after.status_code == 409
    assert missing.status_code == 404


async def test_unknown_size_commit_uses_uploaded_end(service: CacheService) -> None:
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", json={"key": "nosize", "version": VERSION})
        cache_id = r.json()["cacheId"]
        await c.patch(
            f"{V1}/caches/{cache_id}", content=b"xyz", headers={"Content-Range": "bytes 0-2/*"}
        )
        assert (await c.post(f"{V1}/caches/{cache_id}")).status_code == 200
        empty = await save_v1(c, "empty", b"")
        hit = (await lookup(c, ["nosize"])).json()
        assert (await download(hit["archiveLocation"])).content == b"xyz"
        empty_hit = (await lookup(c, ["empty"])).json()
        assert empty_hit["archiveLocation"].split("?")[0].endswith(f"/{empty}")
        assert (await download(empty_hit["archiveLocation"])).content == b""


@pytest.mark.parametrize(
    "raw_id", ["0", "-1", "abc", "9223372036854775808", "12345678901234567890", "..%2F..%2Fx"]
)
async def test_invalid_ids(service: CacheService, raw_id: str) -> None:
    async with client(service) as c:
        patch = await c.patch(
            f"{V1}/caches/{raw_id}", content=b"x", headers={"Content-Range": "bytes 0-0/*"}
        )
        commit = await c.post(f"{V1}/caches/{raw_id}", json={})
        get = await download(f"{service.url}{V1}/artifacts/{raw_id}?exp=1&sig=00")
        put = await c.put(f"{V1}/blobs/{raw_id}?exp=1&sig=00", content=b"x")
    assert [patch.status_code, commit.status_code, get.status_code, put.status_code] == [400] * 4


async def test_path_traversal_in_keys_and_versions_stays_in_the_database(
    service: CacheService, tmp_path: Path
) -> None:
    evil = "../../../../etc/passwd"
    async with client(service) as c:
        await save_v1(c, evil, b"payload", version=evil)
        hit = (await lookup(c, [evil], version=evil)).json()
    assert hit["cacheKey"] == evil
    assert (await download(hit["archiveLocation"])).content == b"payload"
    names = {p.name for p in await trio.to_thread.run_sync(lambda: list(tmp_path.rglob("*")))}
    assert not any("passwd" in n or n == "etc" for n in names)


async def test_oversized_reserve_and_part(tmp_path: Path) -> None:
    async with (
        serve_cache(settings(tmp_path, repo_size_limit=100)) as svc,
        svc.job_token(TOKEN_A, "owner/a"),
        client(svc) as c,
    ):
        big = await c.post(
            f"{V1}/caches", json={"key": "big", "version": VERSION, "cacheSize": 101}
        )
        r = await c.post(f"{V1}/caches", json={"key": "unknown", "version": VERSION})
        cache_id = r.json()["cacheId"]
        part = await c.patch(
            f"{V1}/caches/{cache_id}",
            content=b"x" * 10,
            headers={"Content-Range": "bytes 95-104/*"},
        )
        create = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "b", "version": "v"})
        url = create.json()["signed_upload_url"]
        blob = await c.put(url, content=b"y" * 101)
    assert big.status_code == 400
    assert "maximum entry size" in big.json()["message"]
    assert part.status_code == 413
    assert blob.status_code == 413


async def test_json_body_cap(service: CacheService) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"key": "'
        for _ in range(16):
            yield b"k" * 65536
        yield b'x", "version": "v"}'

    async with client(service) as c:
        v1 = await c.post(f"{V1}/caches", content=body())
        twirp = await c.post(f"{TWIRP}/CreateCacheEntry", content=body())
    assert v1.status_code == 413
    assert twirp.status_code == 413
    assert twirp.json()["code"] == "malformed"


async def test_list_and_clean(service: CacheService) -> None:
    async with client(service) as c:
        await save_v1(c, "listed", b"1")
        await save_v1(c, "listed", b"2", version="other")
        listing = await c.get(f"{V1}/caches", params={"key": "listed"})
        missing_key = await c.get(f"{V1}/caches")
        clean = await c.post(f"{V1}/clean")
    assert listing.status_code == 200
    body = listing.json()
    assert body["totalCount"] == 2
    assert {e["cacheVersion"] for e in body["artifactCaches"]} == {VERSION, "other"}
    assert all(e["scope"] == "owner/a" for e in body["artifactCaches"])
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["artifactCaches"][0]["creationTime"]
    )
    assert missing_key.status_code == 400
    assert (clean.status_code, clean.json()) == (200, {})


# -- downloads and signed URLs ------------------------------------------------------------


async def test_download_ranges_and_head(service: CacheService) -> None:
    data = bytes(range(256)) * 40
    async with client(service) as c:
        await save_v1(c, "ranged", data)
        url = (await lookup(c, ["ranged"])).json()["archiveLocation"]
    whole = await download(url)
    assert whole.headers["content-length"] == str(len(data))
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "application/octet-stream"
    part = await download(url, Range="bytes=10-19")
    assert (part.status_code, part.content) == (206, data[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = await download(url, Range="bytes=-5")
    assert tail.content == data[-5:]
    open_end = await download(url, **{"x-ms-range": "bytes=10000-"})
    assert (open_end.status_code, open_end.content) == (206, data[10000:])
    bad = await download(url, Range=f"bytes={len(data)}-")
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(data)}"
    async with httpx.AsyncClient() as plain:
        head = await plain.head(url)
        post = await plain.post(url)
    assert (head.status_code, head.headers["content-length"], head.content) == (
        200,
        str(len(data)),
        b"",
    )
    assert post.status_code == 405


async def test_signed_url_refusals(service: CacheService) -> None:
    async with client(service) as c:
        cache_id = await save_v1(c, "signed", b"secret bytes")
        url = (await lookup(c, ["signed"])).json()["archiveLocation"]
    base, query = url.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    exp, sig = params["exp"], params["sig"]
    signer = service.state.signer
    expired = int(exp) - 3600
    cases = {
        "missing signature": f"{base}?exp={exp}",
        "invalid expiry": f"{base}?exp=soon&sig={sig}",
        "signature expired": f"{base}?exp={expired}&sig={signer.signature('', cache_id, expired)}",
        "bad signature": f"{base}?exp={exp}&sig={sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
    }
    for message, bad_url in cases.items():
        r = await download(bad_url)
        assert r.status_code == 401, message
        assert r.json()["message"] == message
    upper = await download(f"{base}?exp={exp}&sig={sig.upper()}")
    other_id = await download(url.replace(f"/artifacts/{cache_id}?", f"/artifacts/{cache_id + 1}?"))
    upload_sig = signer.signature("upload:", cache_id, int(exp))
    wrong_purpose = await download(f"{base}?exp={exp}&sig={upload_sig}")
    import hmac as _hmac

    foreign = _hmac.new(b"k" * 32, f"{cache_id}:{exp}".encode(), hashlib.sha256).hexdigest()
    foreign_key = await download(f"{base}?exp={exp}&sig={foreign}")
    assert [r.status_code for r in (upper, other_id, wrong_purpose, foreign_key)] == [401] * 4


async def test_download_of_missing_or_incomplete_entry_is_404(service: CacheService) -> None:
    signer = service.state.signer
    async with client(service) as c:
        r = await c.post(f"{V1}/caches", json={"key": "half", "version": VERSION, "cacheSize": 9})
        cache_id = r.json()["cacheId"]
    for entry_id in (cache_id, 424242):
        url = f"{service.url}{V1}/artifacts/{entry_id}?{signer.query('', entry_id, 600)}"
        assert (await download(url)).status_code == 404


# -- v2 -----------------------------------------------------------------------------------


async def test_v2_blocks_and_finalize(service: CacheService) -> None:
    blocks = [os.urandom(50_000), os.urandom(50_000), os.urandom(1234)]
    ids = [base64.b64encode(f"block-{i:012d}+/".encode()).decode() for i in range(3)]
    async with client(service) as c:
        r = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "v2key", "version": VERSION})
        body = r.json()
        assert body["ok"] is True
        url = body["signed_upload_url"]
        assert re.search(r"/_apis/artifactcache/blobs/\d+\?exp=\d+&sig=[0-9a-f]{64}$", url)
        for index in (2, 0, 1):
            put = await c.put(
                f"{url}&comp=block&blockid={quote(ids[index], safe='')}",
                content=blocks[index],
                headers={"x-ms-version": "2026-02-06"},
            )
            assert put.status_code == 201
            assert put.headers["x-ms-request-id"]
            assert put.headers["x-ms-version"] == "2026-02-06"
            assert put.content == b""
        xml = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><BlockList>'
            + "".join(f"<Latest>{i}</Latest>" for i in ids)
            + "</BlockList>"
        )
        put = await c.put(f"{url}&comp=blocklist", content=xml)
        assert put.status_code == 201
        wrong = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "v2key", "version": VERSION, "size_bytes": "5"},
        )
        assert wrong.json() == {"ok": False, "message": "uploaded 101234 bytes, expected 5"}
        # the failed finalize dropped the reservation; start over with a single shot
        r = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "v2key", "version": VERSION})
        url = r.json()["signed_upload_url"]
        assert (await c.put(url, content=b"".join(blocks))).status_code == 201
        done = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "v2key", "version": VERSION, "sizeBytes": 101234},
        )
        assert done.json()["ok"] is True
        assert isinstance(done.json()["entry_id"], str)
        replay = await c.put(url, content=b"overwrite")
        assert replay.status_code == 409
        again = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "v2key", "version": VERSION})
        assert again.json() == {"ok": False}
        hit = await c.post(
            f"{TWIRP}/GetCacheEntryDownloadURL",
            json={"key": "nope", "restore_keys": ["v2"], "version": VERSION},
        )
        v1_hit = await lookup(c, ["v2key"])
    assert hit.json()["matched_key"] == "v2key"
    assert (await download(hit.json()["signed_download_url"])).content == b"".join(blocks)
    assert v1_hit.json()["cacheKey"] == "v2key"


async def test_v2_refusals(service: CacheService) -> None:
    async with client(service) as c:
        r = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "r", "version": VERSION})
        url = r.json()["signed_upload_url"]
        malformed = await c.post(f"{TWIRP}/CreateCacheEntry", content=b"{")
        protobuf = await c.post(
            f"{TWIRP}/CreateCacheEntry",
            content=b"\n\x01k",
            headers={"Content-Type": "application/protobuf"},
        )
        no_version = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "k"})
        bad_size = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload", json={"key": "r", "version": VERSION}
        )
        neg_size = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "r", "version": VERSION, "size_bytes": "-1"},
        )
        no_data = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "r", "version": VERSION, "size_bytes": "0"},
        )
        no_reservation = await c.post(
            f"{TWIRP}/FinalizeCacheEntryUpload",
            json={"key": "r", "version": VERSION, "size_bytes": "0"},
        )
        too_many = await c.post(
            f"{TWIRP}/GetCacheEntryDownloadURL",
            json={"key": "k", "restoreKeys": [str(i) for i in range(10)], "version": "v"},
        )
        unknown_method = await c.post(f"{TWIRP}/DeleteCacheEntry", json={})
        wrong_verb = await c.get(f"{TWIRP}/CreateCacheEntry")
        artifacts = await c.post(
            "twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact", json={}
        )
        blob_after = await c.put(url, content=b"x")
    assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed")
    assert (protobuf.status_code, protobuf.json()["code"]) == (400, "malformed")
    assert (no_version.status_code, no_version.json()["code"]) == (400, "invalid_argument")
    assert bad_size.json()["code"] == "invalid_argument"
    assert neg_size.json()["code"] == "invalid_argument"
    assert no_data.json() == {"ok": False, "message": "no data was uploaded"}
    assert no_reservation.json() == {"ok": False}
    assert too_many.json()["code"] == "invalid_argument"
    assert (unknown_method.status_code, unknown_method.json()["code"]) == (404, "bad_route")
    assert (wrong_verb.status_code, wrong_verb.json()["code"]) == (405, "bad_route")
    assert artifacts.status_code == 404
    assert artifacts.json()["code"] == "bad_route"
    assert blob_after.status_code == 404


async def test_blob_route_refusals(service: CacheService) -> None:
    signer = service.state.signer
    async with client(service) as c:
        r = await c.post(f"{TWIRP}/CreateCacheEntry", json={"key": "b", "version": VERSION})
        url = r.json()["signed_upload_url"]
        cache_id = int(url.split("/blobs/")[1].split("?")[0])
        download_sig = f"{service.url}{V1}/blobs/{cache_id}?{signer.query('', cache_id, 600)}"
        as_download = await c.put(download_sig, content=b"x")
        no_block_id = await c.put(f"{url}&comp=block", content=b"x")
        long_block_id = await c.put(f"{url}&comp=block&blockid={'A' * 1025}", content=b"x")
        bad_comp = await c.put(f"{url}&comp=appendblock", content=b"x")
        doctype = await c.put(
            f"{url}&comp=blocklist",
            content=b'<!DOCTYPE x [<!ENTITY a "b">]><BlockList><Latest>&a;</Latest></BlockList>',
        )
        unknown_block = await c.put(
            f"{url}&comp=blocklist", content=b"<BlockList><Latest>QUJD</Latest></BlockList>"
        )
        huge_list = await c.put(f"{url}&comp=blocklist", content=b" " * (8 * 1024 * 1024 + 1))
        get = await c.get(url)
        raw_plus = await c.put(f"{url}&comp=block&blockid=a+b", content=b"12")
        plus_list = await c.put(
            f"{url}&comp=blocklist", content=b"<BlockList><Latest>a+b</Latest></BlockList>"
        )
    assert as_download.status_code == 401
    assert [no_block_id.status_code, long_block_id.status_code, bad_comp.status_code] == [400] * 3
    assert doctype.status_code == 400
    assert unknown_block.status_code == 400
    assert unknown_block.json()["message"] == f"block 0 of cache {cache_id} was never uploaded"
    assert huge_list.status_code == 413
    assert get.status_code == 405
    assert (raw_plus.status_code, plus_list.status_code) == (201, 201)


# -- control plane and restart -----------------------------------------------------------


async def test_control_plane_is_404_on_an_embedded_server(service: CacheService) -> None:
    async with client(service) as c:
        r = await c.post("_internal/register", json={"token": "x", "repo": "r"})
    assert r.status_code == 404


async def test_control_plane_register_and_revoke(tmp_path: Path) -> None:
    config = CacheSettings(
        dir=tmp_path, host="127.0.0.1", bind_host="127.0.0.1", shared_secret="s3cret"
    )
    async with (
        serve_cache(config) as svc,
        client(svc, "s3cret") as admin,
        client(svc, "wrong") as intruder,
    ):
        denied = await intruder.post("_internal/register", json={"token": "job"})
        bad_json = await admin.post("_internal/register", content=b"[")
        no_token = await admin.post("_internal/register", json={"repo": "o/r"})
        first = await admin.post("_internal/register", json={"token": "job", "repo": "o/r"})
        await admin.post("_internal/register", json={"token": "job", "repo": "x/y"})
        async with client(svc, "job") as job:
            await save_v1(job, "k", b"1")
            await admin.post("_internal/revoke", json={"token": "job"})
            still = await lookup(job, ["k"])
            revoke = await admin.post("_internal/revoke", json={"token": "job"})
            gone = await lookup(job, ["k"])
            unknown = await admin.post("_internal/revoke", json={"token": "never"})
            empty = await admin.post("_internal/revoke", json={})
    assert denied.status_code == 401
    assert denied.json()["error"] == "internal: bad secret"
    assert bad_json.status_code == 400
    assert (no_token.status_code, no_token.json()["message"]) == (400, "token is required")
    assert first.json() == {"results_url": ""}
    assert still.json()["cacheKey"] == "k"
    assert (revoke.status_code, revoke.json()) == (200, {})
    assert gone.status_code == 401
    assert unknown.status_code == 200
    assert empty.status_code == 400


async def test_restart_keeps_entries_but_not_tokens(tmp_path: Path) -> None:
    async with (
        serve_cache(settings(tmp_path)) as svc,
        svc.job_token(TOKEN_A, "owner/a"),
        client(svc) as c,
    ):
        await save_v1(c, "kept", b"survives")
        old_url = (await lookup(c, ["kept"])).json()["archiveLocation"]
    async with serve_cache(settings(tmp_path)) as svc:
        async with client(svc) as c:
            assert (await lookup(c, ["kept"])).status_code == 401
        async with svc.job_token(TOKEN_A, "owner/a"), client(svc) as c:
            url = (await lookup(c, ["kept"])).json()["archiveLocation"]
            assert (await download(url)).content == b"survives"
            new_id = await save_v1(c, "next", b"x")
    # the signing key was reused, so a URL from before the restart stays valid
    port = url.split(":")[2].split("/")[0]
    assert int(old_url.split("/artifacts/")[1].split("?")[0]) < new_id
    assert old_url.split("?")[1] != ""
    assert port
    assert (tmp_path / ".secret").stat().st_mode & 0o777 == 0o600


# -- connections ------------------------------------------------------------------------


async def raw_exchange(svc: CacheService, request: bytes) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it, as the
    toolkit's requests (``Connection: close``) expect."""
    host, port = svc.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request)
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


async def test_connection_close_requests_are_answered_and_closed(service: CacheService) -> None:
    # Requests whose (empty) body the route never reads: the server must still close.
    lookup_miss = (
        f"GET /{V1}/cache?keys=absent&version={VERSION} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN_A}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert (await raw_exchange(service, lookup_miss)).startswith(b"HTTP/1.1 204")
    async with client(service) as c:
        await save_v1(c, "k", b"payload")
        url = (await lookup(c, ["k"])).json()["archiveLocation"]
    target = url.removeprefix(service.url.rstrip("/"))
    fetch = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = await raw_exchange(service, fetch)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\npayload")


async def test_refused_upload_is_answered_and_closed(service: CacheService) -> None:
    # A part refused before its body is read: the unread body must not wedge the connection.
    piece = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(64)) + b"0\r\n\r\n"
    head = (
        f"PATCH /{V1}/caches/999 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer unknown\r\n"
        "Content-Range: bytes 0-4194303/*\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = await raw_exchange(service, head + body)
    assert answer.startswith(b"HTTP/1.1 401")
    assert answer.endswith(b'{"error":"unknown bearer token","message":"unknown bearer token"}')
