#!/bin/sh
[ "$GITHUB_ACTION_PATH" = "$GITHUB_WORKSPACE/.github/actions/build-env" ] && echo "action path is the action directory"
