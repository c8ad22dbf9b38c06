"""What the container tests share: the locally built test images and the markers of a test
that needs a real engine."""

from __future__ import annotations

import os

import pytest

BUSYBOX = "trio-runner-test/busybox:latest"
BOOKWORM = "trio-runner-test/bookworm:latest"

#: Skips a test when no engine is configured.
needs_engine = pytest.mark.skipif(
    not os.environ.get("DOCKER_HOST"),
    reason='DOCKER_HOST is not set: eval "$(scripts/container-engine.sh)" provides an engine',
)
#: ``pytestmark`` of a module whose every test talks to the engine.
CONTAINER_MODULE = [pytest.mark.container, needs_engine]
