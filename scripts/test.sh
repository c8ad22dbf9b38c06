#!/usr/bin/env bash
# Run the whole test suite: sets up .venv, a container engine with the test images and
# the Node packages the cache tests use, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ -z "${TRIO_RUNNER_NO_CONTAINERS:-}" ]; then
    eval "$(scripts/container-engine.sh)"
fi
scripts/install-node-deps.sh

# A private temporary directory: other pytest runs on the machine rotate the shared one.
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/trio-runner-tests.XXXXXX")
status=0
.venv/bin/python -m pytest --basetemp "$basetemp" "$@" || status=$?
rm -rf "$basetemp"
exit "$status"
