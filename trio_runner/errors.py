"""Errors meant for the person running trio-runner: a clear message and an exit code."""

from __future__ import annotations


class RunnerError(Exception):
    """A failure explained to the user; ``cli`` prints ``error: <message>`` and exits."""

    exit_code = 1


class ConfigError(RunnerError):
    """Bad configuration, registration file, label or command-line input."""

    exit_code = 2
