#!/bin/sh
echo "linting at $1"
