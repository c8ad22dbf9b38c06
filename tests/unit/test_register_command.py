"""``trio-runner register`` against a small local stand-in answering Ping and Register."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import queue
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from trio_runner.cli import main as cli_main
from trio_runner.config import load_config
from trio_runner.errors import ConfigError
from trio_runner.gitea.client import RunnerClient
from trio_runner.labels import DEFAULT_LABELS, label_names, label_strings, parse_labels
from trio_runner.register_command import (
    RegisterInputs,
    RegistrationFailed,
    ask_inputs,
    configure,
    inputs_from_options,
    register_runner,
)
from trio_runner.registration import hold_registration_lock, load_registration

REG_TOKEN = "Qm5kT2tLb3N0X3JlZ2lzdHJhdGlvbg"
RUNNER_TOKEN = "3c0f6b1c9e8a4d2f7b5e1a0c9d8e7f6a5b4c3d2e"
ENV_NAMES = (
    "GITEA_INSTANCE_URL",
    "GITEA_RUNNER_REGISTRATION_TOKEN",
    "GITEA_RUNNER_REGISTRATION_TOKEN_FILE",
    "GITEA_RUNNER_NAME",
    "GITEA_RUNNER_LABELS",
    "GITEA_RUNNER_EPHEMERAL",
)


class Stub:
    """Ping and Register as Gitea answers them, with scripted failures."""

    def __init__(self, *, failing_pings: int = 0, hang_register: bool = False) -> None:
        self.failing_pings = failing_pings
        self.hang_register = hang_register
        self.pings: list[dict[str, Any]] = []
        self.five_pings = trio.Event()
        self.registers: list[dict[str, Any]] = []
        self.app = QuartTrio(__name__)
        self.app.add_url_rule(
            "/api/actions/ping.v1.PingService/Ping", "ping", self.ping, methods=["POST"]
        )
        self.app.add_url_rule(
            "/api/actions/runner.v1.RunnerService/Register",
            "register",
            self.register,
            methods=["POST"],
        )

    async def ping(self) -> Response:
        body = json.loads(await request.get_data())
        self.pings.append(body)
        if len(self.pings) >= 5:
            self.five_pings.set()
        if len(self.pings) <= self.failing_pings:
            return Response("<html>bad gateway</html>", status=502, content_type="text/html")
        return _json({"data": f"Hello, {body.get('data', '')}!"})

    async def register(self) -> Response:
        body = json.loads(await request.get_data())
        self.registers.append(body)
        if self.hang_register:
            await trio.sleep_forever()
        if body.get("token") != REG_TOKEN:
            return _json({"code": "unknown", "message": "runner registration token not found"}, 500)
        runner = {
            "id": "17",
            "uuid": "6f1f2e52-2b7a-4a64-9d2f-1c5d0c8e1b3a",
            "token": RUNNER_TOKEN,
            "name": body["name"],
            "version": body["version"],
            "labels": body["labels"],
        }
        if body.get("ephemeral"):
            runner["ephemeral"] = True
        return _json({"runner": runner})


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _hypercorn() -> HypercornConfig:
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    return config


@contextlib.asynccontextmanager
async def running(stub: Stub) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, stub.app, _hypercorn())
        yield binds[0]
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def running_in_thread(stub: Stub) -> Iterator[str]:
    """For tests of ``main``, which runs its own trio loop."""
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, stub.app, _hypercorn())
            started.put((binds[0], trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    thread = threading.Thread(target=trio.run, args=(run,))
    thread.start()
    url, token, scope = started.get(timeout=30)
    try:
        yield url
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=30)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def inputs(address: str, **changes: Any) -> RegisterInputs:
    values: dict[str, Any] = {
        "instance": address,
        "token": REG_TOKEN,
        "name": "build-01",
        "labels": parse_labels(["ubuntu-latest:docker://img:latest", "linux-host"]),
    }
    values.update(changes)
    return RegisterInputs(**values)


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


async def test_pings_until_answered_then_registers() -> None:
    stub = Stub(failing_pings=2)
    with trio.fail_after(30):
        async with running(stub) as address:
            reg = await register_runner(inputs(address), ping_attempts=5, ping_interval=0.01)
    assert [p["data"] for p in stub.pings] == ["build-01"] * 3
    (sent,) = stub.registers
    assert sent["name"] == "build-01"
    assert sent["token"] == REG_TOKEN
    assert sent["labels"] == ["ubuntu-latest", "linux-host"]
    assert sent["capabilities"] == ["cancelling"]
    assert sent["version"]
    assert "agentLabels" not in sent and "customLabels" not in sent
    assert (reg.id, reg.uuid, reg.token) == (
        17,
        "6f1f2e52-2b7a-4a64-9d2f-1c5d0c8e1b3a",
        RUNNER_TOKEN,
    )
    assert reg.address == address
    assert reg.labels == ["ubuntu-latest:docker://img:latest", "linux-host:host"]
    assert reg.ephemeral is False


async def test_refused_token_is_final_and_not_echoed() -> None:
    stub = Stub()
    with trio.fail_after(30):
        async with running(stub) as address:
            with pytest.raises(RegistrationFailed, match="token not found") as caught:
                await register_runner(inputs(address, token="wrong-token-value"))
    assert len(stub.registers) == 1
    assert "wrong-token-value" not in str(caught.value)


async def test_non_interactive_gives_up_after_bounded_pings() -> None:
    stub = Stub(failing_pings=1000)
    with trio.fail_after(30):
        async with running(stub) as address:
            with pytest.raises(RegistrationFailed, match="after 3 attempts"):
                await register_runner(inputs(address), ping_attempts=3, ping_interval=0.01)
    assert len(stub.pings) == 3
    assert stub.registers == []


async def test_interactive_pings_until_cancelled() -> None:
    stub = Stub(failing_pings=1000)
    with trio.fail_after(30):
        async with running(stub) as address, trio.open_nursery() as nursery:

            async def attempt() -> None:
                await register_runner(inputs(address), ping_attempts=None, ping_interval=0.01)

            nursery.start_soon(attempt)
            await stub.five_pings.wait()
            nursery.cancel_scope.cancel()
    assert stub.registers == []


async def test_lost_register_answer_is_not_retried() -> None:
    stub = Stub(hang_register=True)

    def short_client(address: str, insecure: bool) -> RunnerClient:
        return RunnerClient(address, insecure=insecure, timeout=0.5)

    with trio.fail_after(30):
        async with running(stub) as address:
            with pytest.raises(RegistrationFailed, match="may have been created"):
                await register_runner(inputs(address), client_factory=short_client)
    assert len(stub.registers) == 1


async def test_tls_to_a_plain_port_stops_at_once() -> None:
    stub = Stub()
    with trio.fail_after(30):
        async with running(stub) as address:
            secure = address.replace("http://", "https://")
            with pytest.raises(RegistrationFailed, match="cannot reach"):
                await register_runner(inputs(secure), ping_attempts=None)
    assert stub.registers == []


async def test_ephemeral_flag_is_sent_and_kept() -> None:
    stub = Stub()
    with trio.fail_after(30):
        async with running(stub) as address:
            reg = await register_runner(inputs(address, ephemeral=True))
    assert stub.registers[0]["ephemeral"] is True
    assert reg.ephemeral is True


def test_cli_no_interactive_writes_the_registration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = Stub()
    config = tmp_path / "config.yaml"
    config.write_text("runner:\n  file: state/.runner\n")
    (tmp_path / "state").mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(REG_TOKEN + "\n")
    with running_in_thread(stub) as address:
        code = cli_main(
            [
                "-c",
                str(config),
                "register",
                "--no-interactive",
                "--instance",
                address,
                "--token-file",
                str(token_file),
                "--name",
                "build-01",
                "--labels",
                "a:host,b:docker://img:1",
            ]
        )
    assert code == 0
    out = capsys.readouterr().out
    assert "Runner registered successfully." in out
    assert REG_TOKEN not in out and RUNNER_TOKEN not in out
    path = tmp_path / "state" / ".runner"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reg = load_registration(path)
    assert (reg.id, reg.name, reg.token, reg.address) == (17, "build-01", RUNNER_TOKEN, address)
    assert reg.labels == ["a:host", "b:docker://img:1"]
    assert stub.registers[0]["labels"] == ["a", "b"]


def test_cli_refuses_while_another_process_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["register", "--no-interactive", "--instance", "http://127.0.0.1:9", "--token", "t"]
    with hold_registration_lock(tmp_path / ".runner"):
        assert cli_main(argv) == 1
    assert "already using" in capsys.readouterr().err
    assert not (tmp_path / ".runner").exists()


def test_cli_interactive_keeps_an_existing_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".runner").write_text("{}")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli_main(["register"]) == 0
    assert (tmp_path / ".runner").read_text() == "{}"


def test_options_take_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITEA_INSTANCE_URL", "https://git.example.com/")
    monkeypatch.setenv("GITEA_RUNNER_REGISTRATION_TOKEN", "env-token")
    monkeypatch.setenv("GITEA_RUNNER_NAME", "env-name")
    monkeypatch.setenv("GITEA_RUNNER_LABELS", "x:host")
    got = inputs_from_options(options(), load_config(None))
    assert (got.instance, got.token, got.name) == (
        "https://git.example.com/",
        "env-token",
        "env-name",
    )
    assert label_strings(got.labels) == ["x:host"]
    flagged = inputs_from_options(
        options("--instance", "http://a/", "--token", "t", "--name", "n", "--labels", "y"),
        load_config(None),
    )
    assert (flagged.instance, flagged.token, flagged.name) == ("http://a/", "t", "n")
    assert label_names(flagged.labels) == ["y"]


def test_options_defaults(tmp_path: Path) -> None:
    got = inputs_from_options(options("--instance", "http://a/", "--token", "t"), load_config(None))
    assert got.name == socket.gethostname()
    assert label_strings(got.labels) == list(DEFAULT_LABELS)
    config = tmp_path / "c.yaml"
    config.write_text("runner:\n  labels: ['cfg:host']\n")
    got = inputs_from_options(
        options("--instance", "http://a/", "--token", "t"), load_config(config)
    )
    assert label_names(got.labels) == ["cfg"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--token", "t"], "no instance address"),
        (["--instance", "ftp://a/", "--token", "t"], "invalid Gitea address"),
        (["--instance", "http://a/"], "no registration token"),
        (["--instance", "http://a/", "--token", "t", "--token-file", "f"], "not both"),
        (["--instance", "http://a/", "--token-file", "absent"], "cannot read the token file"),
        (["--instance", "http://a/", "--token", "t", "--labels", "x:docker://"], "no image"),
    ],
)
def test_options_are_validated(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        inputs_from_options(options(*argv), load_config(None))


def scripted(*answers: str) -> tuple[list[str], Any]:
    asked: list[str] = []
    pending = list(answers)

    def ask(question: str, secret: bool) -> str:
        asked.append(("secret: " if secret else "") + question)
        return pending.pop(0)

    return asked, ask


def test_interactive_reasks_invalid_answers(capsys: pytest.CaptureFixture[str]) -> None:
    asked, ask = scripted(
        "not a url", "https://git.example.com/", "", REG_TOKEN, "", "bad:docker://", ""
    )
    got = ask_inputs(options(), load_config(None), ask)
    assert got.instance == "https://git.example.com/"
    assert got.token == REG_TOKEN
    assert got.name == socket.gethostname()
    assert label_strings(got.labels) == list(DEFAULT_LABELS)
    assert len(asked) == 7
    assert asked[2].startswith("secret: Enter the runner token")
    out = capsys.readouterr().out
    assert "Invalid instance URL" in out and "Invalid labels" in out


def test_interactive_skips_what_is_given(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("runner:\n  labels: ['cfg:host']\n")
    asked, ask = scripted("my-runner")
    got = ask_inputs(options("--instance", "http://a/", "--token", "t"), load_config(config), ask)
    assert len(asked) == 1 and "runner name" in asked[0]
    assert got.name == "my-runner"
    assert label_names(got.labels) == ["cfg"]
