#!/usr/bin/env bash
# Set up a development environment: a virtualenv in .venv with trio-runner installed
# (editable) and the test tools. Idempotent; safe to run again after pulling changes.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Python 3.11 or newer is required (found: $("$python" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$python" -m venv .venv
fi
install_args=(-e '.[dev]')
stamp=.venv/.trio-runner-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) ${install_args[*]}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing trio-runner and its test tools into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${install_args[@]}" >&2
    echo "$wanted" > "$stamp"
fi
