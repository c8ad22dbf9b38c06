#!/bin/bash
set -e
echo "preparing $1 in $(basename "$(dirname "$(dirname "$0")")")"
echo "BUILD_TARGET=$1" >> "$GITHUB_ENV"
echo "$GITHUB_ACTION_PATH/bin" >> "$GITHUB_PATH"
