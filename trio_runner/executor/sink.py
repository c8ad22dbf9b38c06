"""What an executor reports a job to: masked log rows and step transitions.

One executor, many sinks: the daemon's reporter sends rows to Gitea, the terminal sink
of ``exec`` prints them. Content handed to a sink is already masked, split into single
lines and valid UTF-8.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol


class Conclusion(enum.StrEnum):
    """Outcome of a step phase or result of a job, as contexts spell it."""

    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class JobSink(Protocol):
    """Receives the output of one job run.

    ``rows`` may block to apply back-pressure (a bounded buffer); the other calls never
    block. ``step_started``/``step_finished`` refer to the 0-based index of the entry in
    the job's ``steps:`` list; rows that arrive between them belong to that step.
    """

    async def rows(self, contents: Sequence[str], time: datetime) -> None: ...

    def step_started(self, index: int, time: datetime) -> None: ...

    def step_finished(self, index: int, outcome: Conclusion, time: datetime) -> None: ...
