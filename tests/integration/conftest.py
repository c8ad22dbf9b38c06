"""Fixtures shared by the integration tests: a fake Gitea and a container engine client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.fake_gitea import FakeGitea, serve_fake_gitea
from trio_runner.backends import docker_api
from trio_runner.backends.docker_api import DockerClient


@pytest.fixture
async def gitea() -> AsyncIterator[FakeGitea]:
    """A fake Gitea serving on 127.0.0.1 for the length of one test."""
    async with serve_fake_gitea() as fake:
        yield fake


@pytest.fixture
async def engine() -> AsyncIterator[DockerClient]:
    """A client of the engine at DOCKER_HOST (tests marked ``container``)."""
    async with docker_api.connect(os.environ["DOCKER_HOST"]) as client:
        yield client
