"""The real ``@actions/cache`` client (tests/node, pinned in package.json) against the server.

Install its packages with ``scripts/install-node-deps.sh``; without them these tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from trio_runner.cache.server import CacheService, serve_cache
from trio_runner.cache.settings import CacheSettings, EvictionPolicy

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = NODE_DIR / "cache-client.mjs"
TOKEN = "job-token-for-node"

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(
        shutil.which("node") is None
        or not (NODE_DIR / "node_modules" / "@actions" / "cache").is_dir(),
        reason="node or tests/node/node_modules missing (run scripts/install-node-deps.sh)",
    ),
]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CacheService]:
    settings = CacheSettings(
        dir=tmp_path / "cache",
        host="127.0.0.1",
        bind_host="127.0.0.1",
        policy=EvictionPolicy(min_free_disk=0),
    )
    async with serve_cache(settings) as svc:
        yield svc


def job_env(svc: CacheService, workspace: Path, v2: bool) -> dict[str, str]:
    temp = workspace.parent / f"{workspace.name}-temp"
    temp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workspace.parent),
        "ACTIONS_RUNTIME_TOKEN": TOKEN,
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(temp),
        # 1 MiB parts so a few MiB already travel as parallel, out-of-order PATCHes
        "CACHE_UPLOAD_CHUNK_SIZE": "1",
        "no_proxy": "127.0.0.1",
    }
    if v2:
        # the toolkit speaks v2 only to hosts it does not take for GHES
        env |= {
            "ACTIONS_RESULTS_URL": svc.url,
            "ACTIONS_CACHE_SERVICE_V2": "true",
            "GITHUB_SERVER_URL": "https://github.com",
        }
    else:
        env |= {"ACTIONS_CACHE_URL": svc.url, "GITHUB_SERVER_URL": "http://gitea.test"}
    return env


async def run_client(env: dict[str, str], cwd: Path, *args: str) -> object:
    with trio.fail_after(120):
        done = await trio.run_process(
            ["node", str(SCRIPT), *args],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    return json.loads(out.strip().splitlines()[-1])["result"]


def api_of(svc: CacheService, entry_id: int) -> int:
    """Which API saved the entry, to prove the client really took the v1 or v2 path."""
    row = svc.state.store.conn.execute("SELECT api FROM entries WHERE id = ?", (entry_id,))
    return int(row.fetchone()[0])


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "data/small.txt": b"hello cache\n",
        "data/nested/random.bin": os.urandom(3 * 1024 * 1024 + 123),
        "data/nested/empty": b"",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return files


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
async def test_save_and_restore_with_the_real_client(
    service: CacheService, tmp_path: Path, v2: bool
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    files = make_tree(workspace)
    env = job_env(service, workspace, v2)
    async with service.job_token(TOKEN, "owner/repo"):
        saved = await run_client(env, workspace, "save", "deps-linux-abc", "data")
        assert isinstance(saved, int) and saved > 0
        assert api_of(service, saved) == (2 if v2 else 1)
        shutil.rmtree(workspace / "data")

        exact = await run_client(env, workspace, "restore", "deps-linux-abc", "", "data")
        assert exact == "deps-linux-abc"
        for name, content in files.items():
            assert (workspace / name).read_bytes() == content
        shutil.rmtree(workspace / "data")

        by_prefix = await run_client(
            env, workspace, "restore", "deps-linux-zzz", "nothing-,deps-linux-", "data"
        )
        assert by_prefix == "deps-linux-abc"
        assert (workspace / "data/nested/random.bin").read_bytes() == files[
            "data/nested/random.bin"
        ]
        shutil.rmtree(workspace / "data")

        miss = await run_client(env, workspace, "restore", "other", "deps-mac-", "data")
        assert miss is None
        assert not (workspace / "data").exists()
        # the same paths under another path list are another version: a miss
        other_version = await run_client(env, workspace, "restore", "deps-linux-abc", "", "dat*")
        assert other_version is None


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
async def test_a_finished_job_can_no_longer_use_the_cache(
    service: CacheService, tmp_path: Path, v2: bool
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    files = make_tree(workspace)
    env = job_env(service, workspace, v2)
    async with service.job_token(TOKEN, "owner/repo"):
        assert await run_client(env, workspace, "save", "k", "data")
    shutil.rmtree(workspace / "data")
    assert await run_client(env, workspace, "restore", "k", "", "data") is None
    assert not (workspace / "data").exists()
    make_tree(workspace)
    assert await run_client(env, workspace, "save", "k2", "data") == -1
    async with service.job_token(TOKEN, "owner/repo"):
        shutil.rmtree(workspace / "data")
        assert await run_client(env, workspace, "restore", "k2", "k", "data") == "k"
        assert (workspace / "data/small.txt").read_bytes() == files["data/small.txt"]
