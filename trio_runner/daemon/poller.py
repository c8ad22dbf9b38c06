"""The fetch loop: one FetchTask at a time, capacity, idle backoff and graceful stop.

Tasks are started in a nursery owned by the caller (the daemon), so that a shutdown can
first stop polling, then wait for running tasks, then cancel them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import FetchTaskResponse, Task

log = logging.getLogger(__name__)

#: The exponent of the backoff doubling is capped like act_runner's (2**5).
MAX_BACKOFF_DOUBLINGS = 5


class RunnerGone(Exception):
    """Gitea no longer knows this runner (deleted, or an ephemeral runner's task is over)."""

    def __init__(self, message: str, *, ephemeral_done: bool = False) -> None:
        super().__init__(message)
        self.ephemeral_done = ephemeral_done


class FetchClient(Protocol):
    """The part of RunnerClient the poller needs."""

    async def fetch_task(
        self,
        tasks_version: int,
        timeout: float,  # noqa: ASYNC109 - the server gets it as Connect-Timeout-Ms
    ) -> FetchTaskResponse: ...


@dataclass
class PollSettings:
    capacity: int = 1
    fetch_interval: float = 2.0
    fetch_interval_max: float = 5.0
    fetch_timeout: float = 5.0
    once: bool = False


def backoff_delay(failures: int, settings: PollSettings, rng: random.Random) -> float:
    """act_runner's sleep before the next poll after ``failures`` empty or failed polls."""
    if failures <= 1:
        base = settings.fetch_interval
    else:
        doubled = settings.fetch_interval * 2 ** min(failures - 1, MAX_BACKOFF_DOUBLINGS)
        base = min(doubled, settings.fetch_interval_max)
    return base + base * rng.uniform(-0.2, 0.2)


PollOutcome = Callable[[str], None]


def _releaser(slots: trio.CapacityLimiter, slot: object) -> Callable[[], None]:
    return lambda: slots.release_on_behalf_of(slot)


class Poller:
    """Fetches tasks while capacity allows and hands each to ``start_task``.

    ``start_task(task, release)`` must start the task in the caller's nursery and call
    ``release()`` when the task is over, freeing its capacity slot.
    """

    def __init__(
        self,
        client: FetchClient,
        settings: PollSettings,
        start_task: Callable[[Task, Callable[[], None]], Awaitable[None]],
        on_outcome: PollOutcome = lambda _outcome: None,
        rng: random.Random | None = None,
        healthy: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.start_task = start_task
        self.on_outcome = on_outcome
        self.slots = trio.CapacityLimiter(max(1, settings.capacity))
        self.healthy = healthy
        self.tasks_version = 0
        self.received = 0
        self._rng = rng or random.Random()
        self._empty = 0
        self._errors = 0
        self._outage_logged = False

    async def run(self) -> None:
        """Poll until cancelled, until ``once`` got its task, or until the runner is gone."""
        while True:
            slot = object()
            await self.slots.acquire_on_behalf_of(slot)
            task = None
            try:
                # An unhealthy machine does not ask for work (the server is not told).
                if self.healthy is None or await self.healthy():
                    task = await self._poll_once()
            finally:
                if task is None:
                    self.slots.release_on_behalf_of(slot)
            if task is None:
                failures = max(self._empty, self._errors)
                await trio.sleep(backoff_delay(failures, self.settings, self._rng))
                continue
            self.received += 1
            await self.start_task(task, _releaser(self.slots, slot))
            if self.settings.once:
                return

    async def _poll_once(self) -> Task | None:
        sent = self.tasks_version
        try:
            answer = await self.client.fetch_task(sent, self.settings.fetch_timeout)
        except ConnectError as exc:
            self._failed_poll(exc)
            return None
        self._errors = 0
        if self._outage_logged:
            log.info("fetching tasks works again")
            self._outage_logged = False
        if answer.tasks_version > sent and self.tasks_version == sent:
            self.tasks_version = answer.tasks_version
        if answer.task is None:
            self._empty += 1
            self.on_outcome("empty")
            return None
        # One version bump can make several jobs runnable: ask again from scratch.
        if self.tasks_version == answer.tasks_version:
            self.tasks_version = 0
        self._empty = 0
        self.on_outcome("task")
        return answer.task

    def _failed_poll(self, exc: ConnectError) -> None:
        if exc.is_unregistered:
            raise RunnerGone(
                "the runner is not registered on the server any more "
                "(deleted, or its token is wrong); register it again"
            ) from None
        if "runner has been removed" in exc.effective_message:
            raise RunnerGone("the ephemeral runner was removed by the server", ephemeral_done=True)
        if exc.effective_code == "deadline_exceeded":
            # A slow server is treated like an empty answer, as act_runner does.
            self._empty += 1
            self.on_outcome("timeout")
            return
        self._errors += 1
        self.on_outcome("error")
        if not self._outage_logged:
            if exc.http_status == 401 and exc.derived:
                log.error(
                    "fetching tasks: HTTP 401 without a Connect body, probably from a proxy "
                    "in front of Gitea; retrying"
                )
            else:
                log.warning("fetching tasks failed: %s; retrying", exc)
            self._outage_logged = True
