"""Status functions (``success()``, ``failure()``, ``cancelled()``, ``always()``) as caller hooks.

Their meaning depends on where a condition is evaluated (job ``if``, step,
composite sub-step), so the evaluator asks a StatusFunctions object supplied by
the caller. FixedStatus covers the three standard scopes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class StatusFunctions(Protocol):
    def success(self) -> bool: ...

    def failure(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def always(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class FixedStatus:
    """Status answers known before evaluation starts."""

    is_success: bool
    is_failure: bool
    is_cancelled: bool

    def success(self) -> bool:
        return self.is_success

    def failure(self) -> bool:
        return self.is_failure

    def cancelled(self) -> bool:
        return self.is_cancelled

    def always(self) -> bool:
        return True

    @classmethod
    def for_job_status(cls, job_status: str) -> FixedStatus:
        """Step scope: the current job status (``success``, ``failure`` or ``cancelled``)."""
        return cls(job_status == "success", job_status == "failure", job_status == "cancelled")

    @classmethod
    def for_needs(cls, results: Iterable[str], *, cancelling: bool) -> FixedStatus:
        """Job ``if`` scope: results of the ``needs`` jobs; whether the run is cancelling."""
        collected = list(results)
        return cls(
            all(result == "success" for result in collected),
            any(result == "failure" for result in collected),
            cancelling,
        )

    @classmethod
    def for_composite(cls, *, sub_step_failed: bool, job_status: str) -> FixedStatus:
        """Composite scope: an earlier sub-step of this composite failed; the job status."""
        cancelled = job_status == "cancelled"
        return cls(not sub_step_failed and not cancelled, sub_step_failed, cancelled)
