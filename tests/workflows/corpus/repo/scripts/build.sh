#!/usr/bin/env bash
set -euo pipefail
echo "building in $(basename "$PWD") with ${1:-no-arg}"
