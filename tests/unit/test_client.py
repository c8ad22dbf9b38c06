"""RunnerClient against the fake Gitea, base URL rules, headers, and the retry helper."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from tests.fake_gitea import FakeGitea, serve_fake_gitea
from trio_runner import __version__
from trio_runner.errors import ConfigError
from trio_runner.gitea.client import RunnerClient, api_base_url, retry
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import (
    DeclareRequest,
    RegisterRequest,
    Result,
    TaskState,
    UpdateLogRequest,
    UpdateTaskRequest,
)

WORKFLOW = """\
name: ci
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: make test
"""


@pytest.fixture
async def gitea() -> AsyncIterator[FakeGitea]:
    async with serve_fake_gitea() as fake:
        yield fake


@pytest.mark.parametrize(
    ("address", "base"),
    [
        ("https://git.example.com/", "https://git.example.com/api/actions"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api/actions"),
        ("https://example.com/gitea/", "https://example.com/gitea/api/actions"),
        ("https://example.com/gitea///", "https://example.com/gitea/api/actions"),
        (" http://h:1/ ", "http://h:1/api/actions"),
    ],
)
def test_base_url(address: str, base: str) -> None:
    assert api_base_url(address) == base


@pytest.mark.parametrize(
    "address",
    ["git.example.com", "ftp://git.example.com", "http://", "https://h/?x=1", "http://h:99999/"],
)
def test_bad_address_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="invalid Gitea address"):
        RunnerClient(address)


async def recording_client(**kwargs: Any) -> tuple[RunnerClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"content-type": "application/json"}
        if request.url.path.endswith("/Declare"):
            headers["X-Gitea-Actions-Capabilities"] = " job-summary "
        return httpx.Response(200, content=b"{}", headers=headers)

    client = RunnerClient(
        "https://git.example.com/sub/",
        transport=httpx.MockTransport(handler),
        **kwargs,
    )
    return client, seen


async def test_urls_and_headers_of_every_call() -> None:
    client, seen = await recording_client(uuid="the-uuid", token="the-token")
    async with client:
        await client.ping("build-01")
        await client.register(RegisterRequest(name="n", token="reg"))
        _, capabilities = await client.declare(DeclareRequest(labels=["a"]))
        await client.fetch_task(0, 5.0)
        await client.update_task(UpdateTaskRequest(state=TaskState(id=1)))
        await client.update_log(UpdateLogRequest())
    assert capabilities == "job-summary"
    paths = [request.url.path for request in seen]
    assert paths == [
        "/sub/api/actions/ping.v1.PingService/Ping",
        "/sub/api/actions/runner.v1.RunnerService/Register",
        "/sub/api/actions/runner.v1.RunnerService/Declare",
        "/sub/api/actions/runner.v1.RunnerService/FetchTask",
        "/sub/api/actions/runner.v1.RunnerService/UpdateTask",
        "/sub/api/actions/runner.v1.RunnerService/UpdateLog",
    ]
    for request in seen:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["connect-protocol-version"] == "1"
        assert request.headers["user-agent"] == f"trio-runner/{__version__}"
        assert "x-runner-version" not in request.headers
        authenticated = not request.url.path.endswith(("/Ping", "/Register"))
        assert ("x-runner-uuid" in request.headers) is authenticated
        assert ("x-runner-token" in request.headers) is authenticated
    assert seen[2].headers["x-runner-uuid"] == "the-uuid"
    assert seen[2].headers["x-runner-token"] == "the-token"
    assert seen[3].content == b"{}"
    assert json.loads(seen[4].content) == {"state": {"id": 1}}
    assert "connect-timeout-ms" not in seen[4].headers


async def test_no_credentials_means_no_auth_headers() -> None:
    client, seen = await recording_client()
    async with client:
        await client.fetch_task(3, 5.0)
    assert "x-runner-uuid" not in seen[0].headers
    assert "x-runner-token" not in seen[0].headers
    assert json.loads(seen[0].content) == {"tasksVersion": 3}


@pytest.mark.parametrize(("limit", "expected"), [(5.0, 4500), (60.0, 59000), (0.5, 450)])
async def test_fetch_task_sends_a_server_deadline_below_its_own(
    limit: float, expected: int
) -> None:
    client, seen = await recording_client()
    async with client:
        await client.fetch_task(0, limit)
    assert int(seen[0].headers["connect-timeout-ms"]) == expected


async def test_client_outside_context_refuses() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await RunnerClient("http://127.0.0.1:1").ping("x")


async def test_register_declare_fetch_against_fake(gitea: FakeGitea) -> None:
    token = gitea.add_registration_token()
    async with RunnerClient(gitea.url) as client:
        assert (await client.ping("build-01")).data == "Hello, build-01!"
        answer = await client.register(
            RegisterRequest(
                name="build-01",
                token=f"  {token}\n",
                version="0.1.0",
                labels=["ubuntu-latest"],
                capabilities=["cancelling"],
            )
        )
    runner = answer.runner
    assert runner is not None
    assert runner.id >= 1
    assert re.fullmatch(r"[0-9a-f]{40}", runner.token)
    assert runner.name == "build-01"
    async with RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token) as client:
        declared, capabilities = await client.declare(
            DeclareRequest(version="0.1.0", labels=["ubuntu-latest"], capabilities=["cancelling"])
        )
        assert capabilities == "job-summary"
        assert declared.runner is not None
        assert declared.runner.token == ""
        assert declared.runner.labels == ["ubuntu-latest"]
        empty = await client.fetch_task(0, 5.0)
        assert empty.task is None
        assert empty.tasks_version == 1
        task_id = gitea.queue_task(WORKFLOW)
        fetched = await client.fetch_task(empty.tasks_version, 5.0)
    assert fetched.task is not None
    assert fetched.task.id == task_id
    assert fetched.task.workflow_payload == WORKFLOW.encode()
    assert fetched.task.context is not None
    assert fetched.task.context["token"] == gitea.task(task_id).token
    assert gitea.connect_timeouts[-1] == 4500
    assert gitea.violations == []


async def test_sub_path_address() -> None:
    async with serve_fake_gitea(prefix="/gitea/") as sub:
        assert sub.url.endswith("/gitea/")
        async with RunnerClient(sub.url + "//") as client:
            assert (await client.ping("x")).data == "Hello, x!"
        async with RunnerClient(sub.url.removesuffix("gitea/")) as client:
            with pytest.raises(ConnectError) as info:
                await client.ping("x")
    assert info.value.derived
    assert info.value.http_status == 404


async def test_register_error_is_final_and_names_the_problem(gitea: FakeGitea) -> None:
    async with RunnerClient(gitea.url) as client:
        with pytest.raises(ConnectError) as info:
            await client.register(RegisterRequest(name="n", token="not-a-token"))
    error = info.value
    assert error.code == "unknown"
    assert error.message == "runner registration token not found"
    assert "not-a-token" not in str(error)
    assert not error.is_unregistered


async def test_one_connection_is_reused(gitea: FakeGitea) -> None:
    async with RunnerClient(gitea.url) as client:
        for _ in range(20):
            await client.ping("x")
    assert sum(gitea.peers.values()) == 20
    assert len(gitea.peers) == 1


async def test_gzip_answers_are_decoded(gitea: FakeGitea) -> None:
    runner = gitea.add_runner()
    task_id = gitea.queue_task(WORKFLOW, context={"event": {"blob": "x" * 5000}})
    async with RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token) as client:
        answer = await client.fetch_task(0, 5.0)
    assert answer.task is not None
    assert answer.task.id == task_id
    assert answer.task.context is not None
    assert answer.task.context["event"] == {"blob": "x" * 5000}


async def test_server_gives_up_on_fetch_before_the_client(gitea: FakeGitea) -> None:
    runner = gitea.add_runner()
    task_id = gitea.queue_task(WORKFLOW)
    gitea.delay_next("FetchTask", 30)
    async with RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token) as client:
        with trio.fail_after(10), pytest.raises(ConnectError) as info:
            await client.fetch_task(0, 0.5)
        assert info.value.code == "deadline_exceeded"
        assert info.value.is_transient
        # The abandoned request did not claim the task: the next poll gets it.
        answer = await client.fetch_task(0, 5.0)
    assert answer.task is not None
    assert answer.task.id == task_id


async def test_client_timeout_bounds_a_slow_server(gitea: FakeGitea) -> None:
    gitea.delay_next("Ping", 30)
    async with RunnerClient(gitea.url, timeout=0.3) as client:
        with trio.fail_after(10), pytest.raises(ConnectError) as info:
            await client.ping("x")
    assert info.value.code == "deadline_exceeded"
    assert info.value.http_status is None


async def test_token_never_in_error_text(gitea: FakeGitea) -> None:
    token = "f" * 40
    async with RunnerClient(gitea.url, uuid="u", token=token) as client:
        with pytest.raises(ConnectError) as info:
            await client.update_task(UpdateTaskRequest(state=TaskState(id=1)))
    assert info.value.is_unregistered
    assert token not in str(info.value)


def transient() -> ConnectError:
    return ConnectError("unavailable", "down", 503, False)


async def test_retry_until_success(autojump_clock: trio.abc.Clock) -> None:
    outcomes: list[ConnectError | str] = [transient(), transient(), "ok"]
    delays: list[tuple[int, float]] = []

    async def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, ConnectError):
            raise outcome
        return outcome

    result = await retry(
        call,
        base_delay=1.0,
        max_delay=1.5,
        on_retry=lambda error, attempt, delay: delays.append((attempt, delay)),
    )
    assert result == "ok"
    assert [attempt for attempt, _ in delays] == [1, 2]
    assert 0.8 <= delays[0][1] <= 1.2
    # The second delay would be 2.0 but is capped at max_delay before the jitter.
    assert 1.2 <= delays[1][1] <= 1.8


async def test_retry_gives_up_after_attempts(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise transient()

    with pytest.raises(ConnectError):
        await retry(call, attempts=3, base_delay=0.1)
    assert calls == 3


@pytest.mark.parametrize(
    "error",
    [
        ConnectError("unknown", f"rpc error: code = Unauthenticated desc = {'x'}", 500, False),
        ConnectError("unimplemented", "no Declare", 501, False),
        ConnectError("unavailable", "certificate verify failed", None, True, config_error=True),
    ],
    ids=["unregistered", "unimplemented", "config"],
)
async def test_retry_does_not_repeat_final_errors(error: ConnectError) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(ConnectError):
        await retry(call)
    assert calls == 1


@pytest.mark.parametrize(("sent", "calls_expected"), [(True, 1), (False, 2)])
async def test_non_idempotent_retry_only_when_nothing_was_sent(
    autojump_clock: trio.abc.Clock, sent: bool, calls_expected: int
) -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectError("deadline_exceeded", "timeout", None, True, sent=sent)
        return "registered"

    if calls_expected == 1:
        with pytest.raises(ConnectError):
            await retry(call, idempotent=False)
    else:
        assert await retry(call, idempotent=False) == "registered"
    assert calls == calls_expected


async def test_retry_against_fake_recovers_from_outage(gitea: FakeGitea) -> None:
    runner = gitea.add_runner()
    gitea.fail_next("Declare", count=2, status=502, connect_body=False)
    async with RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token) as client:
        answer, _ = await retry(
            lambda: client.declare(DeclareRequest(labels=["x"])), base_delay=0.01
        )
    assert answer.runner is not None
    assert runner.labels == ["x"]
    assert gitea.calls["Declare"] == 3


async def test_final_result_round_trip(gitea: FakeGitea) -> None:
    runner = gitea.add_runner()
    task_id = gitea.queue_task(WORKFLOW)
    async with RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token) as client:
        await client.fetch_task(0, 5.0)
        gitea.end_task(task_id, Result.FAILURE)
        answer = await client.update_task(UpdateTaskRequest(state=TaskState(id=task_id)))
    assert answer.state is not None
    assert answer.state.result_enum is Result.FAILURE
