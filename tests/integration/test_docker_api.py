"""The Engine API client against a real engine (Docker, or Podman's compatible API)."""

from __future__ import annotations

import io
import secrets
import tarfile
from collections.abc import AsyncIterator

import pytest
import trio

from tests.integration.engine import BUSYBOX, CONTAINER_MODULE
from trio_runner.backends import docker_api
from trio_runner.backends.docker_api import ContainerSpec, DockerClient, EngineError, HealthConfig

pytestmark = CONTAINER_MODULE


@pytest.fixture
async def container(engine: DockerClient) -> AsyncIterator[str]:
    labels = {"trio-runner-test": secrets.token_hex(4)}
    spec = ContainerSpec(image=BUSYBOX, entrypoint=["/bin/sleep", "600"], labels=labels)
    name = f"trio-runner-api-{secrets.token_hex(6)}"
    container_id = await engine.container_create(name, spec)
    try:
        await engine.container_start(container_id)
        yield container_id
    finally:
        with trio.CancelScope(shield=True):
            await engine.container_remove(container_id, force=True)


async def run(
    engine: DockerClient, container: str, argv: list[str], **kwargs: object
) -> tuple[int, bytes]:
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    with trio.fail_after(60):
        code = await engine.exec_run(container, argv, output=collect, **kwargs)  # type: ignore[arg-type]
    return code, b"".join(chunks)


async def test_ping_and_version(engine: DockerClient) -> None:
    assert await engine.ping()
    version = await engine.version()
    assert version.api_version
    assert engine.api_version.startswith("1.")
    # Told from /_ping's headers, as /version's components tell it.
    assert engine.podman == version.podman


async def test_podman_runs_a_health_check_on_request(engine: DockerClient) -> None:
    if not engine.podman:
        pytest.skip("the libpod API is Podman's")
    check = HealthConfig(test=["CMD-SHELL", "echo probed; exit 1"], retries=1)
    spec = ContainerSpec(image=BUSYBOX, entrypoint=["/bin/sleep", "600"], healthcheck=check)
    name = f"trio-runner-api-{secrets.token_hex(6)}"
    await engine.container_create(name, spec)
    try:
        with trio.fail_after(60):
            await engine.container_start(name)
            assert await engine.container_healthcheck(name) == "unhealthy"
            health = (await engine.container_inspect(name)).state.health
            assert health is not None and health.status == "unhealthy"
            assert health.log and health.log[-1].output.strip() == "probed"
            await engine.container_kill(name)
            # Stopped: no check runs.
            await engine.container_wait(name)
            assert await engine.container_healthcheck(name) is None
    finally:
        with trio.CancelScope(shield=True):
            await engine.container_remove(name, force=True)


async def test_exec_output_and_exit_code(engine: DockerClient, container: str) -> None:
    code, output = await run(engine, container, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert code == 7
    assert sorted(output.decode().split()) == ["err", "out"]


async def test_exec_env_cwd_and_user(engine: DockerClient, container: str) -> None:
    code, output = await run(
        engine,
        container,
        ["sh", "-c", 'echo "$GREETING"; pwd; id -u'],
        env={"GREETING": "hello there"},
        cwd="/tmp",
        user="65534",
    )
    assert code == 0
    assert output.decode().splitlines() == ["hello there", "/tmp", "65534"]


async def test_large_output_is_complete(engine: DockerClient, container: str) -> None:
    code, output = await run(engine, container, ["sh", "-c", "seq 1 20000"])
    assert code == 0
    assert output.decode().split() == [str(n) for n in range(1, 20001)]


async def test_archive_round_trip(engine: DockerClient, container: str) -> None:
    await engine.archive_put(container, "/tmp", docker_api.tar_single_file("a.txt", b"data", 0o600))
    archive = await engine.archive_get(container, "/tmp/a.txt")
    assert docker_api.untar_single_file(archive, "/tmp/a.txt") == b"data"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getmembers()[0].mode & 0o777 == 0o600
    with pytest.raises(docker_api.NotFoundError):
        await engine.archive_get(container, "/no/such/file")


async def test_inspect_and_list_by_label(engine: DockerClient, container: str) -> None:
    info = await engine.container_inspect(container)
    assert info.state.running
    listed = await engine.containers_list(["trio-runner-test"])
    assert container in {summary.id for summary in listed}


async def test_missing_objects(engine: DockerClient) -> None:
    assert await engine.image_inspect("trio-runner-test/no-such-image:latest") is None
    assert not await engine.container_remove("trio-runner-no-such-container")
    assert not await engine.network_remove("trio-runner-no-such-network")
    with pytest.raises(docker_api.NotFoundError, match="container engine"):
        await engine.container_inspect("trio-runner-no-such-container")


async def test_create_with_unknown_image_fails_clearly(engine: DockerClient) -> None:
    spec = ContainerSpec(image="trio-runner-test/no-such-image:latest")
    with pytest.raises(EngineError, match="no-such-image"):
        await engine.container_create(f"trio-runner-api-{secrets.token_hex(6)}", spec)


async def test_networks_and_volumes_by_label(engine: DockerClient) -> None:
    labels = {"trio-runner-test": secrets.token_hex(6)}
    name = f"trio-runner-api-{secrets.token_hex(6)}"
    await engine.network_create(name, labels=labels)
    await engine.volume_create(name, labels=labels)
    try:
        assert [n.name for n in await engine.networks_list(labels)] == [name]
        assert [v.name for v in await engine.volumes_list(labels)] == [name]
    finally:
        assert await engine.network_remove(name)
        assert await engine.volume_remove(name)
    assert await engine.networks_list(labels) == []
    assert await engine.volumes_list(labels) == []


async def test_container_wait_and_logs(engine: DockerClient) -> None:
    spec = ContainerSpec(image=BUSYBOX, cmd=["sh", "-c", "echo to-log; exit 4"])
    name = f"trio-runner-api-{secrets.token_hex(6)}"
    container_id = await engine.container_create(name, spec)
    try:
        await engine.container_start(container_id)
        with trio.fail_after(60):
            assert await engine.container_wait(container_id) == 4
        assert await engine.container_logs(container_id) == b"to-log\n"
    finally:
        await engine.container_remove(container_id)


async def test_build_image_from_tar_context(engine: DockerClient) -> None:
    dockerfile = f"FROM {BUSYBOX}\nRUN echo built > /built.txt\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    tag = f"trio-runner-test/built-{secrets.token_hex(4)}:latest"
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    with trio.fail_after(300):
        await engine.image_build(buffer.getvalue(), tag, progress=progress)
    try:
        assert await engine.image_inspect(tag) is not None
        assert lines
    finally:
        await engine.image_remove(tag, force=True)


def test_split_reference() -> None:
    assert docker_api.split_reference("alpine") == ("alpine", "latest")
    assert docker_api.split_reference("host:5000/a/b:1.2") == ("host:5000/a/b", "1.2")
    assert docker_api.split_reference("a@sha256:ab") == ("a", "sha256:ab")


def test_negotiated_version_respects_engine_minimum() -> None:
    newer = docker_api.VersionInfo(api_version="1.51", min_api_version="1.44")
    assert docker_api.negotiate_version(newer) == "1.44"
    older = docker_api.VersionInfo(api_version="1.41", min_api_version="1.24")
    assert docker_api.negotiate_version(older) == "1.41"
