"""A protocol-faithful Gitea stand-in for tests: ``async with serve_fake_gitea() as gitea``."""

from .app import create_app, serve_fake_gitea
from .state import FakeGitea, Fault, RunnerRecord, StepRecord, TaskRecord, TaskStatus

__all__ = [
    "FakeGitea",
    "Fault",
    "RunnerRecord",
    "StepRecord",
    "TaskRecord",
    "TaskStatus",
    "create_app",
    "serve_fake_gitea",
]
