"""Per-task credentials: revocation however a task ends, the remote variant against a real
``trio-runner cache-server`` process, and that command's refusals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from trio_runner.cache.server import CacheService, RemoteCache, outbound_ip, serve_cache
from trio_runner.cache.settings import CacheSettings, EvictionPolicy
from trio_runner.errors import ConfigError

TOKEN = "task-token"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CacheService]:
    settings = CacheSettings(
        dir=tmp_path,
        host="127.0.0.1",
        bind_host="127.0.0.1",
        policy=EvictionPolicy(min_free_disk=0),
    )
    async with serve_cache(settings) as svc:
        yield svc


async def status(url: str, token: str = TOKEN) -> int:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.get("_apis/artifactcache/cache", params={"keys": "k", "version": "v"})
    return r.status_code


class Boom(Exception):
    pass


async def ends_normally(scope: trio.CancelScope) -> None:
    return


async def fails(scope: trio.CancelScope) -> None:
    raise Boom


async def server_cancel(scope: trio.CancelScope) -> None:
    scope.cancel()
    await trio.sleep_forever()


async def times_out(scope: trio.CancelScope) -> None:
    scope.deadline = trio.current_time()
    await trio.sleep_forever()


ENDINGS: dict[str, Callable[[trio.CancelScope], Awaitable[None]]] = {
    "success": ends_normally,
    "failure": fails,
    "server cancel": server_cancel,
    "timeout": times_out,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_token_is_revoked_however_the_task_nursery_exits(
    service: CacheService, ending: str
) -> None:
    seen_inside: list[int] = []

    async def task(scope: trio.CancelScope) -> None:
        async with trio.open_nursery() as nursery, service.job_token(TOKEN, "o/r"):
            seen_inside.append(await status(service.url))
            nursery.start_soon(ENDINGS[ending], scope)

    with trio.fail_after(10), trio.CancelScope() as scope:
        try:
            await task(scope)
        except* Boom:
            pass
    assert seen_inside == [204]
    assert await status(service.url) == 401


async def test_token_is_revoked_on_shutdown_of_the_daemon_nursery(service: CacheService) -> None:
    registered = trio.Event()

    async def task() -> None:
        async with service.job_token(TOKEN, "o/r"):
            registered.set()
            await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as daemon:
            daemon.start_soon(task)
            await registered.wait()
            assert await status(service.url) == 204
            daemon.cancel_scope.cancel()
    assert await status(service.url) == 401


def test_outbound_ip_is_a_usable_address() -> None:
    address = outbound_ip()
    assert address not in ("0.0.0.0", "::", "127.0.0.1", "::1")


def test_remote_cache_requires_the_secret() -> None:
    with pytest.raises(ConfigError, match="no shared secret"):
        RemoteCache("http://127.0.0.1:1/", "")
    assert RemoteCache("http://h:1//", "s").url == "http://h:1/"


def write_config(tmp_path: Path, cache: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"cache:\n{cache}")
    return config


async def run_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "trio_runner", "cache-server", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_cache_server_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    done = await run_command("-c", str(write_config(tmp_path, "  dir: x\n")))
    assert done.returncode == 2
    assert b"needs a shared secret" in done.stderr
    secret_file = tmp_path / "secret"
    secret_file.write_text("abc\n")
    both = write_config(tmp_path, f"  external_secret: s\n  external_secret_file: {secret_file}\n")
    done = await run_command("-c", str(both))
    assert done.returncode == 2
    assert b"both set" in done.stderr


async def test_standalone_server_with_remote_registration(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("  shared-secret\n")
    config = write_config(
        tmp_path, f"  external_secret_file: {secret_file}\n  retention: 1h\n  size_limit: 1g\n"
    )
    args = [sys.executable, "-m", "trio_runner", "cache-server", "-c", str(config)]
    args += ["--dir", str(tmp_path / "store"), "--host", "127.0.0.1", "--port", "0"]
    args += ["--bind", "127.0.0.1"]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, args, stderr=subprocess.PIPE, check=False)
        )
        assert process.stderr is not None
        url = ""
        output = b""
        with trio.fail_after(30):
            while not url:
                chunk = await process.stderr.receive_some()
                assert chunk, output
                output += chunk
                match = re.search(rb"reach it at (http://127\.0\.0\.1:\d+/)", output)
                url = match[1].decode() if match else ""

        remote = RemoteCache(url.rstrip("/"), "shared-secret")
        assert remote.url == url
        warnings: list[str] = []
        with trio.fail_after(30):
            async with remote.job_token(TOKEN, "o/r", warn=warnings.append):
                async with remote.job_token(TOKEN, "o/r", warn=warnings.append):
                    assert await status(url) == 204
                assert await status(url) == 204
            assert await status(url) == 401
            assert warnings == []

            wrong = RemoteCache(url, "not-the-secret")
            async with wrong.job_token(TOKEN, "o/r", warn=warnings.append):
                assert await status(url) == 401
            assert len(warnings) == 1
            assert "HTTP 401" in warnings[0]
            assert "not-the-secret" not in warnings[0] and TOKEN not in warnings[0]

            unreachable = RemoteCache("http://127.0.0.1:9", "s")
            async with unreachable.job_token(TOKEN, "o/r", warn=warnings.append):
                pass
            assert len(warnings) == 2

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
