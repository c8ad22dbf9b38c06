#!/bin/sh
# Installs the pinned Node packages the real-client cache tests use into tests/node/node_modules.
# Idempotent: does nothing when the installed @actions/cache already matches package.json.
set -eu
cd "$(dirname "$0")/../tests/node"
wanted=$(node -p 'require("./package.json").dependencies["@actions/cache"]')
installed=$(node -p 'try { require("./node_modules/@actions/cache/package.json").version } catch { "" }')
if [ "$installed" = "$wanted" ]; then
  echo "@actions/cache $installed already installed"
  exit 0
fi
npm install --no-audit --no-fund --no-save
