#!/usr/bin/env bash
# Run the whole test suite: sets up .venv, a container engine with the test images and
# the Node packages the cache tests use, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ -z "${TRIO_RUNNER_NO_CONTAINERS:-}" ]; then
    eval "$(scripts/container-engine.sh)"
fi
if [ -x scripts/install-node-deps.sh ]; then
    scripts/install-node-deps.sh
fi
exec .venv/bin/python -m pytest "$@"
