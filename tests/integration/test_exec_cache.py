"""The Actions cache of ``trio-runner exec``: served for runs with actions, to each job
with a token of its own, and not even imported for runs of plain scripts.

The action under test runs the real ``@actions/cache`` client from tests/node (install it
with ``scripts/install-node-deps.sh``; without it that test skips).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.engine import BUSYBOX, needs_engine
from tests.integration.test_exec import TIMEOUT, WORKFLOWS, exec_env, run_exec

CACHE_WORKFLOWS = WORKFLOWS.parent / "exec-cache"
TOOLKIT_CACHE = (
    Path(__file__).resolve().parent.parent
    / "node"
    / "node_modules"
    / "@actions"
    / "cache"
    / "lib"
    / "cache.js"
)
CACHE_SERVER_MODULE = "trio_runner.cache.server"


def make_repo(root: Path) -> Path:
    """A git checkout holding the cache workflow and its local node action."""
    repo = root / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(CACHE_WORKFLOWS / "cache.yml", repo / ".github" / "workflows" / "cache.yml")
    shutil.copytree(
        CACHE_WORKFLOWS / "toolkit-cache", repo / ".github" / "actions" / "toolkit-cache"
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "cache"]):
        subprocess.run([*git, *args], check=True, timeout=TIMEOUT)
    return repo


def write_config(root: Path) -> Path:
    config = root / "config.yaml"
    config.write_text(
        f"cache:\n  dir: {root / 'cache'}\n"
        # Saves are refused below the free-disk floor; keep it out of the way.
        "health_check:\n  enabled: true\n  min_free_disk_space_mb: 1\n"
    )
    return config


def exec_with_import_times(*args: str, cwd: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """``trio-runner exec`` with ``-X importtime``: stderr names every module it loaded."""
    argv = [sys.executable, "-X", "importtime", "-m", "trio_runner", "exec"]
    return subprocess.run(
        [*argv, "--workdir-parent", str(work), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=exec_env(),
        check=False,
    )


def loaded(module: str, stderr: str) -> bool:
    return any(line.rsplit("|", 1)[-1].strip() == module for line in stderr.splitlines())


def row(out: str, job: str, prefix: str) -> str:
    """The content of the first row of ``job`` starting with ``prefix``."""
    marker = f"[cache/{job}]   | {prefix}"
    for line in out.splitlines():
        if line.startswith(marker):
            return line.removeprefix(f"[cache/{job}]   | ")
    raise AssertionError(f"no row {prefix!r} of {job}:\n{out}")


@pytest.mark.node
@pytest.mark.skipif(
    shutil.which("node") is None or not TOOLKIT_CACHE.is_file(),
    reason="node or tests/node/node_modules missing (run scripts/install-node-deps.sh)",
)
def test_second_job_restores_what_the_first_saved_with_the_real_client(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    token_log = tmp_path / "tokens"
    done = exec_with_import_times(
        "-c", str(write_config(tmp_path)),
        "--env", f"TOOLKIT_CACHE={TOOLKIT_CACHE}",
        "--env", f"TOKEN_LOG={token_log}",
        "--env", f"PYTHON={sys.executable}",
        cwd=repo, work=tmp_path / "work",
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert loaded(CACHE_SERVER_MODULE, done.stderr)
    # The job's token is masked; the server is on the loopback and speaks v1 only.
    assert row(out, "save", "token=").startswith("token=*** url=http://127.0.0.1:")
    assert row(out, "save", "v2=") == "v2=[] results=[]"
    saved = row(out, "save", "saved=").removeprefix("saved=")
    assert int(saved) > 0
    assert row(out, "restore", "restored=") == (
        f"restored=data-{git_head(repo)} content=saved by the first job"
    )
    # Each job has a token of its own, accepted only while that job runs.
    first, second = token_log.read_text().split()
    assert first != second
    assert first not in out and second not in out
    assert row(out, "restore", "first job's token:") == "first job's token: 401, own token: 204"
    assert any((tmp_path / "cache").iterdir())  # the configured cache.dir


def git_head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    ).stdout.strip()  # fmt: skip


def test_a_run_without_actions_does_not_load_the_cache_server(tmp_path: Path) -> None:
    done = exec_with_import_times(
        "-W", str(WORKFLOWS / "needs.yml"), cwd=tmp_path, work=tmp_path / "work"
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "[needs/third]   | third got from-first-again exec=true" in done.stdout
    assert loaded("trio", done.stderr)  # the probe sees what the run loads
    assert not loaded(CACHE_SERVER_MODULE, done.stderr)


def uses_workflow(root: Path, script: str) -> Path:
    """A workflow whose ``uses:`` step never runs but asks for a cache, then ``script``."""
    path = root / "uses.yml"
    path.write_text(
        "name: uses\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: docker://busybox\n        if: false\n"
        f"      - run: {json.dumps(script)}\n"
    )
    return path


def test_a_cache_that_cannot_start_costs_the_jobs_their_cache_not_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").touch()
    config = tmp_path / "config.yaml"
    config.write_text(f"cache:\n  dir: {tmp_path / 'file' / 'cache'}\n")
    workflow = uses_workflow(tmp_path, 'echo "cache=[${ACTIONS_CACHE_URL:-}]"')
    done = run_exec("-c", str(config), "-W", str(workflow), workdir=tmp_path / "work")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[exec] Warning: the jobs of this run get no cache: " in done.stdout
    assert "[uses/build]   | cache=[]" in done.stdout


@pytest.mark.container
@needs_engine
def test_job_containers_reach_the_cache_with_their_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    query = "${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=k&version=1"
    workflow = uses_workflow(
        tmp_path,
        'echo "url=$ACTIONS_CACHE_URL"; '
        f'wget -S -O /dev/null --header "Authorization: Bearer $ACTIONS_RUNTIME_TOKEN" "{query}"'
        " 2>&1 | grep HTTP/",
    )
    done = run_exec(
        "-c", str(config), "-W", str(workflow), "-i", BUSYBOX, workdir=tmp_path / "work"
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    url = next(line for line in out.splitlines() if "| url=" in line).split("| url=")[1]
    assert url.startswith("http://") and not url.startswith("http://127.")
    # An answer of the cache's own (no entry for the key) to the job's own token.
    assert "[uses/build]   |   HTTP/1.1 204" in out
