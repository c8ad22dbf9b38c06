"""The fake Gitea itself: transport strictness, error shapes, and the semantics of each call."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.fake_gitea import FakeGitea, RunnerRecord, TaskStatus, serve_fake_gitea, wire
from trio_runner.gitea.client import RunnerClient
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import (
    DeclareRequest,
    FetchTaskRequest,
    LogRow,
    PingRequest,
    RegisterRequest,
    Result,
    StepState,
    TaskState,
    UpdateLogRequest,
    UpdateTaskRequest,
)

WORKFLOW = """\
name: ci
on: push
jobs:
  test:
    runs-on: [ubuntu-latest, big]
    steps:
      - run: one
      - run: two
"""
ANY_RUNNER = """\
jobs:
  any:
    steps:
      - run: x
"""
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
UNREGISTERED = {
    "code": "unknown",
    "message": "rpc error: code = Unauthenticated desc = unregistered runner",
}


@pytest.fixture
async def gitea() -> AsyncIterator[FakeGitea]:
    async with serve_fake_gitea() as fake:
        yield fake


@pytest.fixture
def runner(gitea: FakeGitea) -> RunnerRecord:
    return gitea.add_runner(labels=["ubuntu-latest", "big"])


def rows(*contents: str) -> list[LogRow]:
    return [LogRow(time=NOW, content=content) for content in contents]


async def post(
    gitea: FakeGitea,
    method: str,
    body: bytes | str | dict[str, Any],
    *,
    runner: RunnerRecord | None = None,
    content_type: str = "application/json",
    http_method: str = "POST",
) -> httpx.Response:
    service = "ping.v1.PingService" if method == "Ping" else "runner.v1.RunnerService"
    headers = {"Content-Type": content_type}
    if runner is not None:
        headers |= {"x-runner-uuid": runner.uuid, "x-runner-token": runner.token}
    content = json.dumps(body) if isinstance(body, dict) else body
    async with httpx.AsyncClient() as http:
        return await http.request(
            http_method,
            f"{gitea.url}api/actions/{service}/{method}",
            content=content,
            headers=headers,
        )


def client(gitea: FakeGitea, runner: RunnerRecord) -> RunnerClient:
    return RunnerClient(gitea.url, uuid=runner.uuid, token=runner.token)


async def started_task(gitea: FakeGitea, runner: RunnerRecord, api: RunnerClient) -> int:
    task_id = gitea.queue_task(WORKFLOW)
    answer = await api.fetch_task(0, 5.0)
    assert answer.task is not None
    assert answer.task.id == task_id
    return task_id


# -- transport --------------------------------------------------------------------------


async def test_only_post_is_routed(gitea: FakeGitea) -> None:
    response = await post(gitea, "Ping", "{}", http_method="GET")
    assert response.status_code == 405


async def test_unknown_procedure_is_404(gitea: FakeGitea) -> None:
    response = await post(gitea, "Nope", "{}")
    assert response.status_code == 404
    assert gitea.calls.total() == 0


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/json;charset=utf-8", 415),
        ("application/proto", 415),
        ("text/plain", 415),
    ],
)
async def test_content_types(gitea: FakeGitea, content_type: str, status: int) -> None:
    response = await post(gitea, "Ping", '{"data":"x"}', content_type=content_type)
    assert response.status_code == status
    assert bool(gitea.violations) is (status == 415)


async def test_zero_length_body_is_rejected(gitea: FakeGitea) -> None:
    response = await post(gitea, "Ping", b"")
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_argument",
        "message": "zero-length payload is not a valid JSON object",
    }
    assert gitea.violations


async def test_empty_object_is_an_empty_message(gitea: FakeGitea) -> None:
    response = await post(gitea, "Ping", "{}")
    assert response.status_code == 200
    assert response.json() == {"data": "Hello, !"}


@pytest.mark.parametrize(
    "body",
    [
        {"data": "x", "extra": 1},
        {"data": None},
        [1, 2],
        "{broken",
    ],
    ids=["unknown-field", "null", "not-object", "malformed"],
)
async def test_strict_decoding(gitea: FakeGitea, body: Any) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    response = await post(gitea, "Ping", raw)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert len(gitea.violations) == 1


async def test_unknown_nested_field_is_named(gitea: FakeGitea, runner: RunnerRecord) -> None:
    body = {"state": {"id": "1", "steps": [{"id": 0, "name": "x"}]}}
    response = await post(gitea, "UpdateTask", body, runner=runner)
    assert response.status_code == 400
    assert "$.state.steps[0].name" in response.json()["message"]


async def test_int64_as_string_or_number_and_answers_as_strings(
    gitea: FakeGitea, runner: RunnerRecord
) -> None:
    first = await post(gitea, "FetchTask", {"tasksVersion": 0}, runner=runner)
    assert first.json() == {"tasksVersion": "1"}
    task_id = gitea.queue_task(WORKFLOW)
    second = await post(gitea, "FetchTask", {"tasksVersion": "1"}, runner=runner)
    task = second.json()["task"]
    assert task["id"] == str(task_id)
    assert second.json()["tasksVersion"] == "2"
    assert task["workflowPayload"] == base64.b64encode(WORKFLOW.encode()).decode()
    assert task["context"]["ref_protected"] is False
    log = await post(
        gitea,
        "UpdateLog",
        {"taskId": task_id, "index": "0", "rows": [{"time": "2026-03-01T10:00:00+02:00"}]},
        runner=runner,
    )
    assert log.json() == {"ackIndex": "1"}


async def test_gzip_request_bodies_are_accepted(gitea: FakeGitea) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gitea.url}api/actions/ping.v1.PingService/Ping",
            content=gzip.compress(b'{"data":"z"}'),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert response.json() == {"data": "Hello, z!"}


# -- auth and errors --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Declare", "FetchTask", "UpdateTask", "UpdateLog"])
async def test_auth_error_shape(gitea: FakeGitea, method: str) -> None:
    body = {"state": {"id": 1}} if method == "UpdateTask" else {}
    response = await post(gitea, method, body)
    assert response.status_code == 500
    assert response.json() == UNREGISTERED


async def test_wrong_token_and_deleted_runner(gitea: FakeGitea, runner: RunnerRecord) -> None:
    impostor = RunnerRecord(id=runner.id, uuid=runner.uuid, token="0" * 40, name="x")
    response = await post(gitea, "FetchTask", {}, runner=impostor)
    assert response.json() == UNREGISTERED
    gitea.delete_runner(runner.uuid)
    response = await post(gitea, "FetchTask", {}, runner=runner)
    assert response.json() == UNREGISTERED


async def test_older_deleted_runner_message(gitea: FakeGitea, runner: RunnerRecord) -> None:
    gitea.delete_runner(runner.uuid, deleted_message=True)
    async with client(gitea, runner) as api:
        with pytest.raises(ConnectError) as info:
            await api.update_log(UpdateLogRequest(task_id=1))
    assert info.value.effective_code == "internal"
    assert info.value.is_unregistered


async def test_real_connect_codes_mode() -> None:
    async with serve_fake_gitea(connect_codes=True) as fake:
        response = await post(fake, "FetchTask", {})
    assert response.status_code == 401
    assert response.json() == {"code": "unauthenticated", "message": "unregistered runner"}


# -- Register and Declare ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "token", "message"),
    [
        ("", "good", "missing runner token, name"),
        ("n", "  ", "missing runner token, name"),
        ("n", "other", "runner registration token not found"),
        ("n", "old", "runner registration token has been invalidated, please use the latest one"),
    ],
)
async def test_register_errors(gitea: FakeGitea, name: str, token: str, message: str) -> None:
    gitea.add_registration_token("good")
    gitea.add_registration_token("old")
    gitea.invalidate_registration_token("old")
    response = await post(gitea, "Register", {"name": name, "token": token})
    assert response.status_code == 500
    assert response.json() == {"code": "unknown", "message": message}


async def test_register_is_reusable_and_creates_distinct_runners(gitea: FakeGitea) -> None:
    token = gitea.add_registration_token()
    async with RunnerClient(gitea.url) as api:
        request = RegisterRequest(name="r", token=token, labels=["a"], ephemeral=True)
        first = await api.register(request)
        second = await api.register(request)
    assert first.runner is not None
    assert second.runner is not None
    assert first.runner.uuid != second.runner.uuid
    assert first.runner.id != second.runner.id
    assert first.runner.ephemeral
    assert gitea.runners[first.runner.uuid].labels == ["a"]


async def test_labels_with_schema_are_a_violation(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        await api.declare(DeclareRequest(labels=["ubuntu-latest:docker://node:20"]))
    assert any("schema" in violation for violation in gitea.violations)


async def test_declare_replaces_labels_and_capabilities(
    gitea: FakeGitea, runner: RunnerRecord
) -> None:
    async with client(gitea, runner) as api:
        answer, header = await api.declare(DeclareRequest(version="2", labels=["x"]))
    assert header == "job-summary"
    assert runner.labels == ["x"]
    assert not runner.cancelling
    assert runner.declared
    assert answer.runner is not None
    assert answer.runner.version == "2"
    assert not answer.runner.ephemeral


async def test_declare_without_capabilities_header() -> None:
    async with serve_fake_gitea(server_capabilities=None) as fake:
        other = fake.add_runner()
        async with client(fake, other) as api:
            _, header = await api.declare(DeclareRequest(labels=["x"]))
    assert header == ""


# -- FetchTask --------------------------------------------------------------------------


async def test_tasks_version_semantics(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        first = await api.fetch_task(0, 5.0)
        assert (first.task, first.tasks_version) == (None, 1)
        first_id = gitea.queue_task(WORKFLOW)
        second_id = gitea.queue_task(WORKFLOW)
        got = await api.fetch_task(1, 5.0)
        assert got.task is not None
        assert got.task.id == first_id
        # Sending the current version again skips assignment, although a job waits.
        same = await api.fetch_task(got.tasks_version, 5.0)
        assert same.task is None
        assert same.tasks_version == got.tasks_version
        # Reset to 0 after a task (8.1): the second job is handed out.
        again = await api.fetch_task(0, 5.0)
    assert again.task is not None
    assert again.task.id == second_id
    assert gitea.task(first_id).status is TaskStatus.RUNNING
    assert gitea.task(first_id).runner_uuid == runner.uuid


async def test_assignment_by_labels(gitea: FakeGitea) -> None:
    small = gitea.add_runner(labels=["ubuntu-latest"])
    big = gitea.add_runner(labels=["ubuntu-latest", "big"])
    needs_big = gitea.queue_task(WORKFLOW)
    anywhere = gitea.queue_task(ANY_RUNNER)
    async with client(gitea, small) as api:
        got = await api.fetch_task(0, 5.0)
    assert got.task is not None
    assert got.task.id == anywhere
    async with client(gitea, big) as api:
        got = await api.fetch_task(0, 5.0)
    assert got.task is not None
    assert got.task.id == needs_big


async def test_task_payload_defaults(gitea: FakeGitea, runner: RunnerRecord) -> None:
    task_id = gitea.queue_task(
        WORKFLOW, context={"actor": "bob"}, secrets={"KEY": "v"}, vars={"V": "1"}
    )
    async with client(gitea, runner) as api:
        got = await api.fetch_task(0, 5.0)
    task = got.task
    assert task is not None
    record = gitea.task(task_id)
    assert task.context is not None
    assert task.context["actor"] == "bob"
    assert task.context["job"] == "test"
    assert task.context["server_url"] == gitea.url
    assert task.context["token"] == record.token
    assert task.context["gitea_runtime_token"] == record.runtime_token
    assert task.context["event"]["ref"] == "refs/heads/main"
    assert task.secrets == {"KEY": "v", "GITEA_TOKEN": record.token, "GITHUB_TOKEN": record.token}
    assert task.vars == {"V": "1"}


async def test_workflow_must_hold_one_job(gitea: FakeGitea) -> None:
    with pytest.raises(ValueError, match="exactly one job"):
        gitea.queue_task("jobs:\n  a: {}\n  b: {}\n")


async def test_concurrent_fetch_is_a_violation(gitea: FakeGitea, runner: RunnerRecord) -> None:
    gitea.delay_next("FetchTask", 2)
    async with client(gitea, runner) as api, trio.open_nursery() as nursery:
        nursery.start_soon(api.fetch_task, 0, 10.0)
        await gitea.wait_until(lambda: bool(gitea.in_flight_calls), within=10)
        await api.fetch_task(0, 10.0)
    assert any("two concurrent FetchTask" in v for v in gitea.violations)


# -- UpdateTask -------------------------------------------------------------------------


async def test_steps_outputs_and_final_report(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        step0 = StepState(id=0, started_at=NOW, log_index=1, log_length=1)
        answer = await api.update_task(
            UpdateTaskRequest(state=TaskState(id=task_id, steps=[step0, StepState(id=1)]))
        )
        assert answer.state is not None
        assert answer.state.result_enum is Result.UNSPECIFIED
        record = gitea.task(task_id)
        assert record.steps[0].status == "running"
        assert record.steps[1].status == "waiting"
        first = await api.update_task(
            UpdateTaskRequest(
                state=TaskState(id=task_id, steps=[step0, StepState(id=1)]),
                outputs={"a": "first"},
            )
        )
        assert first.sent_outputs == ["a"]
        await api.update_log(UpdateLogRequest(task_id=task_id, rows=rows("s", "o", "e")))
        await api.update_log(UpdateLogRequest(task_id=task_id, index=3, no_more=True))
        done0 = StepState(id=0, result="RESULT_SUCCESS", started_at=NOW, log_index=1, log_length=1)
        done1 = StepState(id=1, result="RESULT_SKIPPED")
        final = await api.update_task(
            UpdateTaskRequest(
                state=TaskState(id=task_id, result="RESULT_SUCCESS", steps=[done0, done1]),
                outputs={"a": "second", "b": "x"},
            )
        )
    assert final.state is not None
    assert final.state.result_enum is Result.SUCCESS
    assert final.sent_outputs == ["a", "b"]
    assert record.outputs == {"a": "first", "b": "x"}
    assert [step.status for step in record.steps] == ["success", "skipped"]
    assert await gitea.wait_task_final(task_id, within=5) is Result.SUCCESS
    assert len(record.states) == 3
    assert record.violations == []


async def test_missing_started_step_and_unsealed_final_are_violations(
    gitea: FakeGitea, runner: RunnerRecord
) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        done0 = StepState(id=0, result="RESULT_SUCCESS", started_at=NOW)
        await api.update_task(UpdateTaskRequest(state=TaskState(id=task_id, steps=[done0])))
        record = gitea.task(task_id)
        assert record.steps[0].status == "success"
        await api.update_task(UpdateTaskRequest(state=TaskState(id=task_id)))
        assert record.steps[0].status == "running"
        await api.update_task(
            UpdateTaskRequest(state=TaskState(id=task_id, result="RESULT_FAILURE", steps=[done0]))
        )
    text = "\n".join(record.violations)
    assert "step 0 had started but is missing from UpdateTask" in text
    assert "final UpdateTask before the log was sealed" in text
    assert "final UpdateTask leaves step 1 out" in text
    assert record.result is Result.FAILURE


async def test_final_task_ignores_steps_but_keeps_outputs(
    gitea: FakeGitea, runner: RunnerRecord
) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        gitea.end_task(task_id)
        answer = await api.update_task(
            UpdateTaskRequest(
                state=TaskState(
                    id=task_id, result="RESULT_SUCCESS", steps=[StepState(started_at=NOW)]
                ),
                outputs={"late": "1"},
            )
        )
    assert answer.state is not None
    assert answer.state.result_enum is Result.FAILURE
    assert answer.sent_outputs == ["late"]
    assert gitea.task(task_id).steps[0].status == "waiting"


@pytest.mark.parametrize(
    ("capabilities", "status_after_cancel"),
    [(["cancelling"], TaskStatus.CANCELLING), ([], TaskStatus.CANCELLED)],
)
async def test_cancel(
    gitea: FakeGitea, capabilities: list[str], status_after_cancel: TaskStatus
) -> None:
    runner = gitea.add_runner(labels=["ubuntu-latest", "big"], capabilities=capabilities)
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        gitea.cancel_task(task_id)
        assert gitea.task(task_id).status is status_after_cancel
        heartbeat = await api.update_task(UpdateTaskRequest(state=TaskState(id=task_id)))
        assert heartbeat.state is not None
        assert heartbeat.state.result_enum is Result.CANCELLED
        await api.update_task(
            UpdateTaskRequest(state=TaskState(id=task_id, result="RESULT_SUCCESS"))
        )
    assert gitea.task(task_id).status is TaskStatus.CANCELLED


async def test_cancel_waiting_task(gitea: FakeGitea) -> None:
    task_id = gitea.queue_task(WORKFLOW)
    gitea.cancel_task(task_id)
    assert gitea.task(task_id).result is Result.CANCELLED


async def test_update_task_of_other_or_missing_task(gitea: FakeGitea, runner: RunnerRecord) -> None:
    other = gitea.add_runner(labels=["ubuntu-latest", "big"])
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
    async with client(gitea, other) as api:
        with pytest.raises(ConnectError) as info:
            await api.update_task(UpdateTaskRequest(state=TaskState(id=task_id)))
        assert info.value.effective_message == "update task: invalid runner for task"
        assert info.value.is_task_rejected
        with pytest.raises(ConnectError) as info:
            await api.update_task(UpdateTaskRequest(state=TaskState(id=999)))
        assert info.value.effective_message == "update task: resource does not exist"
        with pytest.raises(ConnectError) as info:
            await api.update_log(UpdateLogRequest(task_id=999))
        assert info.value.effective_message == (
            "get task: task with id 999: resource does not exist"
        )


async def test_ephemeral_runner_is_deleted_by_its_final_report(gitea: FakeGitea) -> None:
    runner = gitea.add_runner(labels=["ubuntu-latest", "big"], ephemeral=True)
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        await api.update_log(UpdateLogRequest(task_id=task_id, rows=rows(""), no_more=True))
        await api.update_task(
            UpdateTaskRequest(state=TaskState(id=task_id, result="RESULT_SUCCESS"))
        )
        with pytest.raises(ConnectError) as info:
            await api.fetch_task(0, 5.0)
    assert info.value.is_unregistered


# -- UpdateLog --------------------------------------------------------------------------


async def test_update_log_semantics(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)

        async def send(index: int, *contents: str, no_more: bool = False) -> int:
            request = UpdateLogRequest(
                task_id=task_id, index=index, rows=rows(*contents), no_more=no_more
            )
            return (await api.update_log(request)).ack_index

        assert await send(0, "a", "b") == 2
        # A resend overlapping what is stored only appends the new tail.
        assert await send(1, "b", "c") == 3
        # A gap is ignored entirely and answered with the smaller ack.
        assert await send(5, "x") == 3
        # no_more with an empty batch beyond ack does not seal...
        assert await send(4, no_more=True) == 3
        assert not gitea.task(task_id).sealed
        # ...but at or below ack it does.
        assert await send(3, no_more=True) == 3
        assert gitea.task(task_id).sealed
        # A repeated seal is harmless; new rows after it are refused.
        assert await send(0, "a", no_more=True) == 3
        with pytest.raises(ConnectError) as info:
            await send(3, "late")
    assert info.value.is_log_archived
    assert info.value.effective_message == "log file has been archived"
    record = gitea.task(task_id)
    assert record.contents == ["a", "b", "c"]
    assert any("(a gap)" in violation for violation in record.violations)


async def test_rows_with_bad_content(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        await api.update_log(
            UpdateLogRequest(task_id=task_id, rows=rows("two\nlines", "x" * 70000))
        )
    record = gitea.task(task_id)
    assert len(record.rows[1][1].encode()) == 64 * 1024
    text = "\n".join(record.violations)
    assert "multi-line row content" in text
    assert "over 64 KiB" in text


@pytest.mark.parametrize(
    ("body", "violation"),
    [
        (b'{"taskId":"1","rows":[{"time":"2026-03-01T10:00:00","content":"a"}]}', "time zone"),
        (b'{"taskId":"1","rows":[{"time":"2026-03-01T10:00:00Z","content":"\\udc80"}]}', "UTF-8"),
        (b'{"taskId":"1","rows":[{"time":"2026-03-01T10:00:00Z","content":"\xff"}]}', "UTF-8"),
        (b'{"taskId":"1","rows":[{"content":"a"}]}', "time"),
    ],
    ids=["naive-time", "lone-surrogate", "invalid-utf8", "missing-time"],
)
async def test_rejected_log_batches(
    gitea: FakeGitea, runner: RunnerRecord, body: bytes, violation: str
) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
    assert task_id == 1
    response = await post(gitea, "UpdateLog", body, runner=runner)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    record = gitea.task(task_id)
    assert record.rows == []
    assert any(violation in v for v in record.violations)


async def test_concurrent_update_log_is_a_violation(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        gitea.delay_next("UpdateLog", 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.update_log, UpdateLogRequest(task_id=task_id, rows=rows("a")))
            await gitea.wait_until(lambda: bool(gitea.in_flight_calls), within=10)
            await api.update_log(UpdateLogRequest(task_id=task_id, rows=rows("a")))
    assert any("two concurrent UpdateLog" in v for v in gitea.task(task_id).violations)
    assert gitea.task(task_id).contents == ["a"]


# -- faults and waits -------------------------------------------------------------------


async def test_fault_injection(gitea: FakeGitea, runner: RunnerRecord) -> None:
    gitea.fail_next("FetchTask", status=503)
    gitea.fail_next("FetchTask", status=401, connect_body=False)
    gitea.fail_next("FetchTask", status=500, code="internal", message="db down")
    async with client(gitea, runner) as api:
        with pytest.raises(ConnectError) as first:
            await api.fetch_task(0, 5.0)
        with pytest.raises(ConnectError) as second:
            await api.fetch_task(0, 5.0)
        with pytest.raises(ConnectError) as third:
            await api.fetch_task(0, 5.0)
        assert (await api.fetch_task(0, 5.0)).tasks_version == 1
    assert (first.value.code, first.value.derived) == ("unavailable", False)
    assert (second.value.code, second.value.derived) == ("unauthenticated", True)
    assert not second.value.is_unregistered
    assert (third.value.code, third.value.message) == ("internal", "db down")
    assert gitea.calls["FetchTask"] == 4


async def test_lost_answer_is_applied(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        gitea.lose_next("UpdateLog")
        with pytest.raises(ConnectError) as info:
            await api.update_log(UpdateLogRequest(task_id=task_id, rows=rows("a", "b")))
        assert info.value.derived
        assert info.value.is_transient
        # The resend after the lost answer only acknowledges what is already stored.
        again = await api.update_log(UpdateLogRequest(task_id=task_id, rows=rows("a", "b")))
    assert again.ack_index == 2
    assert gitea.task(task_id).contents == ["a", "b"]


async def test_lost_fetch_leaves_task_assigned(gitea: FakeGitea, runner: RunnerRecord) -> None:
    task_id = gitea.queue_task(WORKFLOW)
    gitea.lose_next("FetchTask")
    async with client(gitea, runner) as api:
        with pytest.raises(ConnectError):
            await api.fetch_task(0, 5.0)
        assert (await api.fetch_task(0, 5.0)).task is None
    await gitea.wait_task_assigned(task_id, within=5)
    assert gitea.task(task_id).status is TaskStatus.RUNNING


async def test_waits_are_bounded(gitea: FakeGitea) -> None:
    task_id = gitea.queue_task(WORKFLOW)
    with pytest.raises(trio.TooSlowError):
        await gitea.wait_task_final(task_id, within=0.05)
    with pytest.raises(trio.TooSlowError):
        await gitea.wait_fetch_count(1, within=0.05)


async def test_waits_wake_on_progress(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                api.update_log, UpdateLogRequest(task_id=task_id, rows=rows("x", "done"))
            )
            found = await gitea.wait_rows(
                task_id, lambda stored: any(c == "done" for _, c in stored), within=10
            )
    assert [content for _, content in found] == ["x", "done"]
    await gitea.wait_fetch_count(1, within=1)


async def test_unknown_fault_method(gitea: FakeGitea) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        gitea.fail_next("Fetch")


async def test_many_rows_are_stored_in_order(gitea: FakeGitea, runner: RunnerRecord) -> None:
    async with client(gitea, runner) as api:
        task_id = await started_task(gitea, runner, api)
        offset = 0
        for batch in range(20):
            contents = [f"line {batch * 500 + i}" for i in range(500)]
            answer = await api.update_log(
                UpdateLogRequest(task_id=task_id, index=offset, rows=rows(*contents))
            )
            offset = answer.ack_index
    record = gitea.task(task_id)
    assert offset == 10000
    assert record.contents[9999] == "line 9999"
    assert record.log_calls == 20


# -- strict decoding: the C fast path and the named-problem walk agree -------------------

_ROW = {"time": "2026-03-01T10:00:00Z", "content": "x"}
_STATE = {"id": "7", "result": "RESULT_SUCCESS", "startedAt": "2026-03-01T10:00:00+02:00"}
DECODE_CASES: list[tuple[str, type[Any], Any]] = [
    ("empty object", PingRequest, {}),
    ("ping", PingRequest, {"data": "hello"}),
    ("register", RegisterRequest, {"name": "r", "labels": ["a", "b"], "ephemeral": True}),
    ("declare", DeclareRequest, {"version": "1", "labels": [], "capabilities": ["x"]}),
    ("int64 as string", FetchTaskRequest, {"tasksVersion": "12"}),
    ("int64 as number", FetchTaskRequest, {"tasksVersion": 12}),
    ("log rows", UpdateLogRequest, {"taskId": "3", "index": 0, "rows": [_ROW], "noMore": True}),
    ("task state", UpdateTaskRequest, {"state": {**_STATE, "steps": [{"id": 0}]}}),
    ("outputs", UpdateTaskRequest, {"state": {"id": 1}, "outputs": {"k": "v"}}),
    ("unknown field", PingRequest, {"data": "x", "extra": 1}),
    ("unknown nested field", UpdateTaskRequest, {"state": {"id": 1, "name": "x"}}),
    ("unknown field in a list", UpdateLogRequest, {"rows": [{**_ROW, "level": "info"}]}),
    ("null", PingRequest, {"data": None}),
    ("null message", UpdateTaskRequest, {"state": None}),
    ("null in a list", UpdateLogRequest, {"rows": [None]}),
    ("null map value", UpdateTaskRequest, {"state": {"id": 1}, "outputs": {"k": None}}),
    ("null timestamp", UpdateTaskRequest, {"state": {"id": 1, "startedAt": None}}),
    ("naive timestamp", UpdateLogRequest, {"rows": [{"time": "2026-03-01T10:00:00"}]}),
    ("naive nested timestamp", UpdateTaskRequest, {"state": {"id": 1, "steps": [
        {"id": 0, "stoppedAt": "2026-03-01T10:00:00"}]}}),
    ("snake_case name", UpdateLogRequest, {"task_id": 3, "rows": []}),
    ("snake_case nested name", UpdateTaskRequest, {"state": {"id": 1, "started_at": None}}),
    ("required field missing", UpdateTaskRequest, {}),
    ("wrong type", PingRequest, {"data": 5}),
]  # fmt: skip


def _fast_path_accepts(body: bytes, cls: type[Any]) -> bool:
    mirror = wire._strict_mirror(cls)
    assert mirror is not None, f"{cls.__name__} has no strict mirror"
    try:
        msgspec.json.decode(body, type=mirror, strict=False)
    except msgspec.DecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("cls", "payload"), [case[1:] for case in DECODE_CASES], ids=[case[0] for case in DECODE_CASES]
)
def test_fast_strict_decode_agrees_with_the_slow_path(cls: type[Any], payload: Any) -> None:
    body = json.dumps(payload).encode()
    try:
        slow: Any = wire._check_slowly(body, cls)
    except wire.DecodeProblem as problem:
        slow = problem
    assert _fast_path_accepts(body, cls) is not isinstance(slow, wire.DecodeProblem)
    if isinstance(slow, wire.DecodeProblem):
        with pytest.raises(wire.DecodeProblem) as refused:
            wire.decode_request(body, cls)
        assert refused.value.violation == slow.violation
    else:
        assert wire.decode_request(body, cls) == slow
