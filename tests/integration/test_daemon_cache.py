"""The daemon's embedded cache: a job can use it while it runs, and its token is revoked
however the task ends (success, failure, server cancel, timeout, shutdown)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.fake_gitea.state import FakeGitea
from tests.integration.runner_process import register_locally, start_runner, write_config
from trio_runner.gitea.messages import Result

# The step prints the cache URL and the status of a lookup with the job's own token.
PROBE = (
    'python3 -c "import os,urllib.request as u,urllib.error as e\n'
    "url=os.environ['ACTIONS_CACHE_URL']\n"
    "print('cache-url=' + url)\n"
    "print('results-url=' + os.environ['ACTIONS_RESULTS_URL'])\n"
    "print('v2=' + os.environ.get('ACTIONS_CACHE_SERVICE_V2', ''))\n"
    "r=u.Request(url+'_apis/artifactcache/cache?keys=k&version=v',"
    "headers={'Authorization':'Bearer '+os.environ['ACTIONS_RUNTIME_TOKEN']})\n"
    "try:\n  print('inside=%d' % u.urlopen(r).status)\n"
    "except e.HTTPError as x:\n  print('inside=%d' % x.code)\n"
    '"'
)


def job(*after_probe: str, extra: str = "") -> str:
    steps = [f"      - run: |\n          {line}\n" for line in after_probe]
    probe = "      - run: |\n" + "".join(f"          {line}\n" for line in PROBE.split("\n"))
    return (
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n"
        f"{extra}    steps:\n{probe}{''.join(steps)}"
    )


async def lookup_status(url: str, token: str) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
        answer = await client.get(
            f"{url}_apis/artifactcache/cache", params={"keys": "k", "version": "v"}
        )
    return answer.status_code


def cache_url(gitea: FakeGitea, task_id: int) -> str:
    for row in gitea.task(task_id).contents:
        if row.startswith("cache-url="):
            return row.removeprefix("cache-url=")
    raise AssertionError("the job did not print its cache URL")


ENDINGS = {
    "success": (job("echo done"), Result.SUCCESS),
    "failure": (job("exit 1"), Result.FAILURE),
    "server cancel": (job("echo wait-for-cancel; sleep 300"), Result.CANCELLED),
    "timeout": (job("echo wait-for-timeout; sleep 300"), Result.FAILURE),
    "shutdown": (job("echo wait-for-shutdown; sleep 300"), Result.CANCELLED),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_job_token_revoked_when_the_task_ends(
    gitea: FakeGitea, tmp_path: Path, ending: str
) -> None:
    register_locally(gitea, tmp_path, ["ubuntu-latest:host"])
    config = write_config(
        tmp_path,
        cache={"enabled": True, "dir": str(tmp_path / "cache"), "host": "127.0.0.1"},
        runner={"timeout": "4s" if ending == "timeout" else "1h"},
    )
    workflow, expected = ENDINGS[ending]
    task_id = gitea.queue_task(workflow)
    async with start_runner(tmp_path, config) as runner:
        await gitea.wait_rows(
            task_id, lambda rows: any(content.startswith("inside=") for _, content in rows)
        )
        url = cache_url(gitea, task_id)
        token = gitea.task(task_id).runtime_token
        if ending == "server cancel":
            gitea.cancel_task(task_id)
        elif ending == "shutdown":
            runner.signal(signal.SIGTERM)
        assert await gitea.wait_task_final(task_id) is expected
        # The daemon is still serving the cache (except after shutdown): the token is dead.
        if ending != "shutdown":
            assert await lookup_status(url, token) == 401
            runner.signal(signal.SIGTERM)
        assert await runner.wait() == 0
    rows = gitea.task(task_id).contents
    assert "inside=204" in rows
    # The cache fronts Gitea's results service, so both v1 and v2 clients reach it.
    assert f"results-url={url.rstrip('/')}" in rows or f"results-url={url}" in rows
    assert "v2=true" in rows
    assert token not in "\n".join(gitea.task(task_id).contents)
