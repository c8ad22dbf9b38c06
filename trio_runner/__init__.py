"""trio-runner: a self-hosted runner for Gitea Actions, built on Trio."""

__version__ = "0.1.0"
