"""The host job's engine handle: an engine that does not answer is asked once per job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from trio_runner.backends import docker_api
from trio_runner.backends.host_engine import HostEngine, NoEngine


def _never_started(_api: Any) -> Any:
    raise AssertionError("set-up must not run without an engine")


async def test_a_missing_engine_is_probed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    real_connect = docker_api.connect

    @asynccontextmanager
    async def counting_connect(host: str) -> AsyncIterator[docker_api.DockerClient]:
        attempts.append(host)
        async with real_connect(host) as client:
            yield client

    monkeypatch.setattr(docker_api, "connect", counting_connect)
    engine = HostEngine(f"unix://{tmp_path}/missing.sock", _never_started)
    try:
        reasons = []
        for _ in range(3):
            with pytest.raises(NoEngine) as caught:
                await engine.open()
            reasons.append(caught.value.reason)
    finally:
        await engine.aclose()
    assert attempts == [f"unix://{tmp_path}/missing.sock"]
    assert len(set(reasons)) == 1 and "missing.sock" in reasons[0]
