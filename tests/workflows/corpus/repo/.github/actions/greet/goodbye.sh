#!/usr/bin/env bash
echo "Goodbye"
