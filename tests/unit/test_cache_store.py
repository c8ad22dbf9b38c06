"""The store without HTTP: matching details, eviction, reconciliation, id reuse."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_runner.cache import store as store_module
from trio_runner.cache.index import Entry, EntryIndex
from trio_runner.cache.settings import EvictionPolicy
from trio_runner.cache.store import IN_USE_GRACE_MS, Blob, Store, StoreError, read_blob


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def save(store: Store, key: str, data: bytes, repo: str = "o/r", version: str = "v") -> int:
    entry_id = await store.reserve(repo, key, version, len(data), api=1)
    entry = await store.reservation(entry_id, repo)
    if data:
        await store.write_part(entry, 0, len(data) - 1, None, body(data))
    await store.commit(entry, len(data))
    return entry_id


def age(store: Store, entry_id: int, millis: int) -> None:
    store.write_stamps()
    store.conn.execute("UPDATE entries SET used_at = used_at - ? WHERE id = ?", (millis, entry_id))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(tmp_path, EvictionPolicy(min_free_disk=0, repo_size_limit=0))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_prefix_matching_is_literal_and_handles_unicode(store: Store) -> None:
    await save(store, "a%b_c", b"1")
    await save(store, "\u00e9t\u00e9-\U0001f600", b"2")
    await save(store, "abc", b"3")
    assert (await store.find("o/r", ["a%"], "v")).key == "a%b_c"  # type: ignore[union-attr]
    assert await store.find("o/r", ["a_"], "v") is None
    assert (await store.find("o/r", ["\u00e9t"], "v")).key.endswith("\U0001f600")  # type: ignore[union-attr]
    assert (await store.find("o/r", [""], "v")) is not None


async def test_ids_are_never_reused(store: Store) -> None:
    first = await save(store, "k", b"x")
    age(store, first, 10 * 24 * 3600 * 1000)
    await store.sweep()
    assert await store.find("o/r", ["k"], "v") is None
    assert await save(store, "k", b"y") > first


async def test_stale_reservation_is_replaced(store: Store) -> None:
    first = await store.reserve("o/r", "k", "v", 3, api=1)
    with pytest.raises(StoreError) as live:
        await store.reserve("o/r", "k", "v", 3, api=1)
    assert live.value.status == 409
    age(store, first, 6 * 60 * 1000)
    second = await store.reserve("o/r", "k", "v", 3, api=1)
    assert second > first


async def test_sweep_evicts_least_recently_used_over_the_repo_limit(tmp_path: Path) -> None:
    store = Store(tmp_path, EvictionPolicy(min_free_disk=0, repo_size_limit=25))
    await store.open()
    try:
        ids = [await save(store, f"k{i}", b"x" * 10) for i in range(3)]
        other_repo = await save(store, "k0", b"x" * 10, repo="o/other")
        # 30 bytes in o/r, all in use (just written): nothing may go yet
        await store.sweep()
        assert len(await store.list_key("o/r", "k0")) == 1
        for offset, entry_id in enumerate(ids):
            age(store, entry_id, IN_USE_GRACE_MS + 1000 * (3 - offset))
        await store.sweep()
        assert await store.find("o/r", ["k0"], "v") is None
        assert await store.find("o/r", ["k1"], "v") is not None
        assert await store.find("o/other", ["k0"], "v") is not None
        assert other_repo
    finally:
        await store.close()


async def test_sweep_never_deletes_a_blob_being_read(store: Store) -> None:
    entry_id = await save(store, "k", b"payload")
    async with store.open_blob(entry_id) as blob:
        age(store, entry_id, 10 * 24 * 3600 * 1000)
        await store.sweep()
        assert blob.handle.read() == b"payload"
        assert blob.size == 7
        assert blob.head == b""
        assert store.blob_path(entry_id).exists()
    age(store, entry_id, 10 * 24 * 3600 * 1000)
    await store.sweep()
    assert not store.blob_path(entry_id).exists()


async def test_superseded_duplicates_are_removed(tmp_path: Path) -> None:
    policy = EvictionPolicy(min_free_disk=0)
    store = Store(tmp_path, policy)
    await store.open()
    older = await save(store, "k", b"1")
    newer = await save(store, "k2", b"2")
    await store.close()
    # a duplicate written by another server: same (repo, key, version)
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.sqlite3")) as conn:
        conn.execute("UPDATE entries SET key = 'k' WHERE id = ?", (newer,))
        conn.commit()
    store = Store(tmp_path, policy)
    await store.open()
    try:
        age(store, older, IN_USE_GRACE_MS + 1)
        await store.sweep()
        found = await store.find("o/r", ["k"], "v")
        assert found is not None and found.id == newer
        assert not store.blob_path(older).exists()
    finally:
        await store.close()


async def test_reopen_reconciles_leftovers(tmp_path: Path) -> None:
    policy = EvictionPolicy(min_free_disk=0)
    store = Store(tmp_path, policy)
    await store.open()
    kept = await save(store, "kept", b"k")
    lost = await save(store, "lost", b"l")
    pending = await store.reserve("o/r", "pending", "v", 5, api=1)
    entry = await store.reservation(pending, "o/r")
    await store.write_part(entry, 0, 1, None, body(b"pe"))
    await store.close()

    store.blob_path(lost).unlink()
    (tmp_path / "uploads" / "999").mkdir()
    (tmp_path / "uploads" / str(pending) / "x.tmp").write_bytes(b"half")
    orphan = tmp_path / "blobs" / "ff" / "12345"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"orphan")

    store = Store(tmp_path, policy)
    await store.open()
    try:
        assert await store.find("o/r", ["kept"], "v") is not None
        assert await store.list_key("o/r", "lost") == []
        assert not (tmp_path / "uploads" / "999").exists()
        assert not (tmp_path / "uploads" / str(pending) / "x.tmp").exists()
        assert not orphan.exists()
        # the reservation survived and can still be finished
        entry = await store.reservation(pending, "o/r")
        await store.write_part(entry, 2, 4, None, body(b"ndi"))
        await store.commit(entry, 5)
        async with store.open_blob(pending, read_ahead=3) as blob:
            assert blob.head == b"pen"
            assert await trio.to_thread.run_sync(blob.handle.read) == b"pendi"
        assert kept
    finally:
        await store.close()


async def test_concurrent_overlapping_parts_are_refused(store: Store) -> None:
    entry_id = await store.reserve("o/r", "k", "v", 100, api=1)
    entry = await store.reservation(entry_id, "o/r")
    release = trio.Event()
    statuses: list[int] = []

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await release.wait()
        yield b"x" * 40

    async def write(first: int, last: int, data: AsyncIterator[bytes]) -> None:
        try:
            await store.write_part(entry, first, last, None, data)
            statuses.append(200)
        except StoreError as exc:
            statuses.append(exc.status)
            release.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, 0, 49, slow())
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, 40, 59, body(os.urandom(20)))
    assert statuses == [400, 200]


async def test_blob_of_the_wrong_size_counts_as_lost(store: Store) -> None:
    entry_id = await save(store, "k", b"0123456789")
    await trio.to_thread.run_sync(os.truncate, store.blob_path(entry_id), 0)
    assert await store.find("o/r", ["k"], "v") is None
    assert await store.list_key("o/r", "k") == []


async def test_a_lookup_protects_its_entry_until_the_stamp_is_written(store: Store) -> None:
    entry_id = await save(store, "k", b"data")
    age(store, entry_id, 10 * 24 * 3600 * 1000)
    # the hit's stamp waits in memory; the sweep must see it
    assert await store.find("o/r", ["k"], "v") is not None
    await store.sweep()
    assert store.blob_path(entry_id).exists()
    store.write_stamps()
    (used_at,) = store.conn.execute(
        "SELECT used_at FROM entries WHERE id = ?", (entry_id,)
    ).fetchone()
    assert used_at > store_module.now_ms() - IN_USE_GRACE_MS


async def test_reopen_drops_a_blob_of_the_wrong_size(tmp_path: Path) -> None:
    policy = EvictionPolicy(min_free_disk=0)
    store = Store(tmp_path, policy)
    await store.open()
    entry_id = await save(store, "k", b"0123456789")
    await store.close()
    os.truncate(store.blob_path(entry_id), 4)
    store = Store(tmp_path, policy)
    await store.open()
    try:
        assert await store.find("o/r", ["k"], "v") is None
        assert not store.blob_path(entry_id).exists()
    finally:
        await store.close()


async def test_a_blob_lost_while_serving_is_dropped_by_its_download(store: Store) -> None:
    entry_id = await save(store, "k", b"data")
    store.blob_path(entry_id).unlink()
    with pytest.raises(StoreError) as lost:
        async with store.open_blob(entry_id):
            pass
    assert lost.value.status == 404
    assert await store.list_key("o/r", "k") == []


@pytest.mark.parametrize("cached", [True, False])
async def test_download_reads_cached_and_uncached_bytes(
    store: Store, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    data = os.urandom(3 * store_module.READ_CHUNK + 5)
    entry_id = await save(store, "k", data)
    if not cached:
        monkeypatch.setattr(store_module, "_read_cached", lambda fd, into, position: 0)
    received: list[bytes] = []

    async def deliver(chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        received.append(chunk)

    async with store.open_blob(entry_id, read_ahead=7) as blob:
        assert isinstance(blob, Blob)
        await read_blob(blob, 7, blob.size - 3, deliver)
    assert b"".join(received) == data[7:-3]


def test_index_matches_like_the_spec() -> None:
    index = EntryIndex()

    def entry(entry_id: int, key: str, created: int, complete: bool = True) -> Entry:
        return Entry(entry_id, "o/r", key, "v", 1, complete, created, created)

    index.load([entry(1, "p_a_b_c", 1), entry(2, "p_a_b", 2), entry(3, "p_a", 3)])
    index.put(entry(4, "p_a_b_d", 4, complete=False))
    assert index.match("o/r", ["p_a_b", "p_a"], "v").id == 2  # type: ignore[union-attr]
    assert index.match("o/r", ["p_a_"], "v").id == 2  # type: ignore[union-attr]
    assert index.match("o/r", ["p_a_b_d"], "v") is None  # incomplete: never found
    assert (
        index.match(
            "o/r",
            ["p"],
            "v",
        ).id
        == 3
    )  # type: ignore[union-attr]
    assert index.match("o/other", ["p"], "v") is None
    assert index.match("o/r", ["p"], "w") is None
    index.put(entry(4, "p_a_b_d", 5))
    assert index.match("o/r", ["p_a_b"], "v").id == 2  # type: ignore[union-attr]
    assert index.match("o/r", ["p_a_b_"], "v").id == 4  # type: ignore[union-attr]
    index.drop(3)
    index.drop(2)
    assert index.match("o/r", ["p_a_b", "x"], "v").id == 4  # type: ignore[union-attr]
    assert len(index) == 2
