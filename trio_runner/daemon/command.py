"""``trio-runner start`` (alias ``daemon``): declare, poll, run tasks, stop cleanly.

The daemon holds one long-lived nursery. Inside it a sibling nursery serves the cache
(and metrics), and every fetched task runs in a nursery of its own. SIGINT/SIGTERM stop
polling, let running tasks finish within ``runner.shutdown_timeout`` and then cancel
them (they still report); a second signal cancels them at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_runner import __version__
from trio_runner.config import Config, env_overrides, load_config
from trio_runner.daemon.health import HealthCheck
from trio_runner.daemon.poller import Poller, PollSettings, RunnerGone
from trio_runner.daemon.reporter import CancelCause
from trio_runner.daemon.task import (
    RESULTS,
    RunningTask,
    TaskEnvironment,
    run_task,
)
from trio_runner.gitea.client import RunnerClient, retry
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import DeclareRequest, Task
from trio_runner.labels import Label, effective_labels, label_names, label_strings, split_labels
from trio_runner.registration import (
    Registration,
    hold_registration_lock,
    load_registration,
    save_registration,
)

log = logging.getLogger("trio_runner")

CAPABILITIES = ["cancelling"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="configuration file (default: built-in defaults)")
    parser.add_argument("--once", action="store_true", help="run one task, then exit")
    parser.add_argument("--labels", help="comma-separated labels overriding the configured ones")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _setup_logging(config.log.level)
    registration_file = config.runner.file
    with hold_registration_lock(registration_file):
        registration = load_registration(registration_file)
        explicit = split_labels(args.labels) if args.labels else None
        overrides = env_overrides()
        if explicit is None and overrides.labels:
            explicit = list(overrides.labels)
        labels = effective_labels(explicit, config.runner.labels, registration.labels)
        if label_strings(labels) != registration.labels and labels:
            registration.labels = label_strings(labels)
            save_registration(registration_file, registration)
        daemon = Daemon(config, registration, labels, once=args.once or registration.ephemeral)
        return trio.run(daemon.serve)


def _setup_logging(level: str) -> None:
    names = {"trace": "DEBUG", "warn": "WARNING", "fatal": "CRITICAL", "panic": "CRITICAL"}
    logging.basicConfig(
        level=names.get(level.lower(), level.upper()),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request would drown the runner's own messages.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Daemon:
    """The long-lived runner process."""

    def __init__(
        self, config: Config, registration: Registration, labels: list[Label], *, once: bool
    ) -> None:
        self.config = config
        self.registration = registration
        self.labels = labels
        self.once = once
        self.running: dict[int, RunningTask] = {}
        self.exit_code = 0
        self.ready = False
        self.on_poll: Callable[[str], None] = lambda _outcome: None
        self._poll_scope = trio.CancelScope()
        self._idle = trio.Event()

    async def serve(self) -> int:
        reg = self.registration
        async with RunnerClient(
            reg.address, uuid=reg.uuid, token=str(reg.token), insecure=self.config.runner.insecure
        ) as client:
            capabilities = await self._declare(client)
            if capabilities is None:
                return self.exit_code
            async with trio.open_nursery() as root, _services(self, root) as services:
                env = TaskEnvironment(
                    config=self.config,
                    client=client,
                    address=reg.address,
                    runner_name=reg.name,
                    labels=self.labels,
                    runner_uuid=reg.uuid,
                    capabilities=capabilities,
                    on_unregistered=self._runner_gone,
                    **services,
                )
                await self._run(client, env)
                root.cancel_scope.cancel()
        return self.exit_code

    async def _declare(self, client: RunnerClient) -> str | None:
        request = DeclareRequest(
            version=__version__, labels=label_names(self.labels), capabilities=CAPABILITIES
        )

        def retrying(error: ConnectError, attempt: int, delay: float) -> None:
            log.warning("declaring the runner failed (%s); retrying in %.1fs", error, delay)

        def should_retry(error: ConnectError) -> bool:
            return error.is_transient and not error.is_unregistered

        try:
            _answer, capabilities = await retry(
                lambda: client.declare(request),
                attempts=10,
                should_retry=should_retry,
                on_retry=retrying,
            )
        except ConnectError as exc:
            if exc.is_unregistered:
                log.error("the runner is not registered on the server any more; register again")
            elif exc.effective_code == "unimplemented":
                log.error("the Gitea server is too old for this runner (Declare unsupported)")
            else:
                log.error("declaring the runner failed: %s", exc)
            self.exit_code = 1
            return None
        log.info(
            "runner %s declared with labels %s", self.registration.name, label_names(self.labels)
        )
        return capabilities

    async def _run(self, client: RunnerClient, env: TaskEnvironment) -> None:
        settings = PollSettings(
            capacity=self.config.runner.capacity,
            fetch_interval=self.config.runner.fetch_interval,
            fetch_interval_max=self.config.runner.fetch_interval_max,
            fetch_timeout=self.config.runner.fetch_timeout,
            once=self.once,
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as tasks:
                poll_scope = self._poll_scope

                async def start(task: Task, release: Callable[[], None]) -> None:
                    await tasks.start(self._task, task, env, release)

                health = HealthCheck(self.config.health_check, self.config.host.workdir_parent)
                poller = Poller(client, settings, start, self.on_poll, healthy=health.healthy)
                tasks.start_soon(self._signals, signals, poll_scope, tasks)
                self.ready = True
                with poll_scope:
                    try:
                        await poller.run()
                    except RunnerGone as exc:
                        log.error("%s", exc)
                        if not exc.ephemeral_done:
                            self.exit_code = 1
                self.ready = False
                await self._wait_for_tasks()
                tasks.cancel_scope.cancel()

    def _runner_gone(self) -> None:
        """A task learnt that Gitea deleted this runner: stop polling, exit non-zero."""
        if self.exit_code == 0:
            log.error(
                "the runner is not registered on the server any more "
                "(deleted, or its token is wrong); register it again"
            )
        self.exit_code = 1
        self._poll_scope.cancel()

    async def _wait_for_tasks(self) -> None:
        while self.running:
            await self._idle.wait()

    async def _signals(
        self, signals: AsyncIterator[int], poll_scope: trio.CancelScope, tasks: trio.Nursery
    ) -> None:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                log.info(
                    "received %s: no new tasks; waiting up to %gs for %d running task(s)",
                    signal.Signals(signum).name,
                    self.config.runner.shutdown_timeout,
                    len(self.running),
                )
                poll_scope.cancel()
                # Waiting must not block this loop: a second signal cuts it short.
                tasks.start_soon(self._shutdown_after_grace)
            else:
                log.info("received a second signal: cancelling running tasks now")
                for running in list(self.running.values()):
                    running.cancel(CancelCause.SHUTDOWN, at_once=True)
                    await running.control.kill()

    async def _shutdown_after_grace(self) -> None:
        with trio.move_on_after(self.config.runner.shutdown_timeout):
            await self._wait_for_tasks()
        for running in list(self.running.values()):
            running.cancel(CancelCause.SHUTDOWN)

    async def _task(
        self,
        task: Task,
        env: TaskEnvironment,
        release: Callable[[], None],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            if task.id in self.running:
                log.error("task %d is already running; ignoring the duplicate", task.id)
                task_status.started()
                return
            running = RunningTask(task.id)
            self.running[task.id] = running
            if self._idle.is_set():
                self._idle = trio.Event()
            task_status.started()
            log.info("task %d started", task.id)
            try:
                result = await run_task(task, env, running)
            finally:
                del self.running[task.id]
                if not self.running:
                    self._idle.set()
            log.info("task %d finished: %s", task.id, result.value)
        finally:
            release()


@asynccontextmanager
async def _services(daemon: Daemon, nursery: trio.Nursery) -> AsyncIterator[dict[str, Any]]:
    """Start the cache and metrics servers in the daemon's sibling nursery.

    Yields the TaskEnvironment fields they provide. The servers are imported only when
    enabled, so a daemon without them does not pay for loading them.
    """
    config = daemon.config
    services: dict[str, Any] = {}
    if config.cache.enabled:
        from trio_runner.cache.server import RemoteCache, run_cache_server
        from trio_runner.cache.settings import settings_from_config

        cache: Any
        if config.cache.external_server:
            cache = RemoteCache(config.cache.external_server, str(config.cache.external_secret))
        else:
            cache = await nursery.start(run_cache_server, settings_from_config(config))
        log.info("serving the Actions cache to jobs at %s", cache.url)
        services.update(cache_url=cache.url, cache_v2=config.cache.v2, job_token=cache.job_token)
    if config.metrics.enabled:
        from trio_runner.observability import RunnerMetrics, serve_metrics

        metrics = RunnerMetrics()
        metrics.set_runner(
            version=__version__, name=daemon.registration.name, capacity=config.runner.capacity
        )
        metrics.count_running_with(lambda: len(daemon.running))
        await nursery.start(serve_metrics, config.metrics.addr, metrics, daemon)
        daemon.on_poll = lambda outcome: metrics.poll_fetch_total.labels(outcome).inc()
        services["on_finished"] = lambda result, seconds: metrics.job_finished(
            RESULTS[result], seconds
        )
    await _start_idle_cleanup(daemon, nursery)
    yield services


async def _start_idle_cleanup(daemon: Daemon, nursery: trio.Nursery) -> None:
    """Remove what killed runs left behind, when this runner uses a container engine."""
    from trio_runner.backends.select import engine_answers, engine_in_use

    config = daemon.config
    if engine_in_use(config, daemon.labels) or await engine_answers(config):
        from trio_runner.backends.cleanup import idle_cleanup

        nursery.start_soon(idle_cleanup, config, daemon.registration.uuid, daemon.running.keys())
