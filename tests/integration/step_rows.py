"""A job's steps as ``exec --json`` printed them and as the fake Gitea stored them.

Both sides reduce to the same shape, ``(results, rows of each step)``, so that a test can
assert that the daemon reported what ``exec`` ran (spec workflow-execution 8.2).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fake_gitea.state import TaskRecord

#: The per-job directory ``<workdir parent>/<16 hex>/``: another one in every run.
JOB_DIR = re.compile(r"/[^\s\"']*/[0-9a-f]{16}/")

Steps = tuple[list[str], list[list[str]]]


def json_events(stdout: str) -> list[dict[str, Any]]:
    """The events of an ``exec --json`` run (one JSON object a line)."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def exec_steps(events: list[dict[str, Any]], job: str | None = None) -> Steps:
    """Step results and each step's rows of one job label (None: a run of one job)."""
    mine = [e for e in events if job is None or e.get("job") == job]
    results = [e["result"] for e in mine if e["type"] == "step_finished"]
    step_rows: list[list[str]] = [[] for _ in results]
    for event in mine:
        if event["type"] == "row" and event["step"] is not None:
            step_rows[event["step"]].append(event["content"])
    return results, step_rows


def task_steps(record: TaskRecord) -> Steps:
    """Step statuses and each step's rows as the fake Gitea holds them."""
    contents = record.contents
    return (
        [step.status for step in record.steps],
        [contents[s.log_index : s.log_index + s.log_length] for s in record.steps],
    )


def same_paths(lines: list[str]) -> list[str]:
    """Rows with the per-job directory (``<workdir>/<16 hex>/``) made comparable."""
    return [JOB_DIR.sub("<job>/", line) for line in lines]
