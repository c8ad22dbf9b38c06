"""The Docker backend's shortcuts give the answers of the slow ways they replace.

``which`` in a root job container is answered from the engine's file stats instead of an
exec; the API version comes from ``/_ping`` instead of ``/version``; a numeric container
user needs no ``id`` exec before the workspace is handed over; a run of host jobs does
not load the container modules at all.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.integration.engine import BOOKWORM, BUSYBOX, needs_engine
from trio_runner.backends import docker_api
from trio_runner.backends.docker import (
    _WHICH,
    DockerEnvironment,
    DockerSettings,
    JobSpec,
    job_container_name,
)
from trio_runner.backends.docker_api import DockerClient


class SilentLog:
    async def info(self, message: str) -> None:
        pass

    async def warning(self, message: str) -> None:
        pass


class Collected:
    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self.data.extend(chunk)


def job_spec(image: str, options: str = "") -> JobSpec:
    task_id = secrets.randbelow(10**9)
    return JobSpec(
        runner_uuid=f"test-{secrets.token_hex(8)}",
        task_id=task_id,
        name=job_container_name(str(task_id), "ci", "fast"),
        job_id="fast",
        alias="fast",
        image=image,
        workspace="/workspace/owner/repo",
        options=options,
        lifetime=600.0,
    )


def count_execs(engine: DockerClient, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the argv of every exec the engine client creates from now on."""
    created: list[list[str]] = []
    original = engine.exec_create

    async def recording(container: str, argv: list[str], **kwargs: object) -> str:
        created.append(list(argv))
        return await original(container, argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "exec_create", recording)
    return created


async def shell_which(env: DockerEnvironment, command: str, path: str) -> str | None:
    """The answer of the shell search the stats replace."""
    out = Collected()
    code = await env.exec(["sh", "-c", _WHICH, "sh", command, path], env={}, cwd="/", output=out)
    return out.data.decode().strip() or None if code == 0 else None


def test_host_exec_does_not_load_the_container_modules(tmp_path: Path) -> None:
    workflows = tmp_path / "repo" / ".gitea" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo on-the-host\n"
    )
    argv = [sys.executable, "-X", "importtime", "-m", "trio_runner", "exec"]
    done = subprocess.run(
        [*argv, "--image=-self-hosted", "--workdir-parent", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path / "repo",
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "| on-the-host" in done.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "trio_runner.backends.host" in modules  # the probe sees what the run loads
    assert "trio_runner.backends.docker_api" not in modules
    assert "trio_runner.backends.docker" not in modules


def test_podman_is_told_by_its_version_components() -> None:
    podman = docker_api.VersionInfo(
        components=[docker_api.VersionComponent(name="Podman Engine", version="4.3.1")]
    )
    assert podman.podman
    assert not docker_api.VersionInfo(
        components=[docker_api.VersionComponent(name="Engine", version="27.0.1")]
    ).podman
    assert not docker_api.VersionInfo().podman


def test_api_version_from_ping() -> None:
    assert docker_api.version_from_ping("1.41") == "1.41"
    assert docker_api.version_from_ping(" 1.40 ") == "1.40"
    # Newer engines may have raised their minimum: /version decides.
    assert docker_api.version_from_ping("1.44") is None
    assert docker_api.version_from_ping("") is None
    assert docker_api.version_from_ping(None) is None
    assert docker_api.version_from_ping("v2") is None


@pytest.mark.container
@needs_engine
@pytest.mark.parametrize("image", [BUSYBOX, BOOKWORM])
async def test_which_from_stats_matches_the_shell(
    engine: DockerClient, monkeypatch: pytest.MonkeyPatch, image: str
) -> None:
    job = job_spec(image)
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), SilentLog()) as env:
            tool = f"{env.workspace}/bin/tool"
            await env.write_file(tool, b"#!/bin/sh\necho tool\n", 0o755)
            await env.write_file(f"{env.workspace}/bin/data", b"not a program\n", 0o644)
            bin_dir = f"{env.workspace}/bin"
            cases = [
                ("sh", env.default_path),
                ("sh", "/usr/bin:/bin"),
                ("bash", env.default_path),
                ("env", "/nonexistent:/usr/bin:/bin"),
                ("no-such-tool", env.default_path),
                ("passwd", "/etc"),  # a regular file without an execute bit
                ("bin", "/usr"),  # a directory
                ("tool", f"/usr/bin:{bin_dir}"),
                ("data", bin_dir),
                ("tool", f"{bin_dir}:"),
                ("/bin/sh", ""),
                ("/etc/passwd", env.default_path),
                (tool, ""),
                ("sh", ""),
            ]
            execs = count_execs(engine, monkeypatch)
            answers = [await env.which(command, path) for command, path in cases]
            assert execs == []
            expected = [await shell_which(env, command, path) for command, path in cases]
            assert answers == expected
            assert answers[7] == tool
            assert answers[5] is None and answers[6] is None and answers[8] is None


@pytest.mark.container
@needs_engine
@pytest.mark.parametrize("path", [".", "relative/bin:/bin", "/usr/bin::/bin"])
async def test_which_with_relative_path_entries_asks_the_shell(
    engine: DockerClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    job = job_spec(BUSYBOX)
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), SilentLog()) as env:
            execs = count_execs(engine, monkeypatch)
            answer = await env.which("no-such-tool", path)
            assert answer is None
            assert len(execs) == 1
            assert await env.which("sh", path) == await shell_which(env, "sh", path)


@pytest.mark.container
@needs_engine
async def test_numeric_user_gets_the_workspace_without_an_id_lookup(
    engine: DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    execs = count_execs(engine, monkeypatch)
    job = job_spec(BUSYBOX, options="--user 1234:2345")
    with trio.fail_after(120):
        async with DockerEnvironment.start(engine, job, DockerSettings(), SilentLog()) as env:
            assert execs == [["chown", "-R", "1234:2345", env.workspace]]
            out = Collected()
            argv = ["stat", "-c", "%u:%g", env.workspace]
            assert await env.exec(argv, env={}, cwd="/", output=out) == 0
            assert out.data.strip() == b"1234:2345"
            # Steps of a non-root user are searched for by the shell, which knows `-x`.
            assert await env.which("sh", "/bin") == "/bin/sh"


@pytest.mark.container
@needs_engine
async def test_engine_calls_are_traced_at_debug(
    engine: DockerClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="trio_runner.backends.docker_api"):
        assert await engine.image_inspect("trio-runner-test/no-such-image:latest") is None
    traced = [record.getMessage() for record in caplog.records]
    assert any(
        message.startswith("GET /images/trio-runner-test%2Fno-such-image%3Alatest/json -> 404 in ")
        for message in traced
    )
