"""Prometheus metrics of the daemon, and the small HTTP server for /metrics, /healthz, /readyz.

Metric names and labels are act_runner's (prefix ``gitea_runner_``), so dashboards and
alerts written for it keep working. Each :class:`RunnerMetrics` owns its own registry;
the daemon makes one and serves it with :func:`serve_metrics` in its nursery when
``metrics.enabled`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from quart import Response
from quart_trio import QuartTrio

from trio_runner.gitea.messages import Result

log = logging.getLogger(__name__)

#: Values of the ``result`` label of poll and report counters.
RESULT_TASK: Final = "task"
RESULT_EMPTY: Final = "empty"
RESULT_ERROR: Final = "error"
RESULT_SUCCESS: Final = "success"

_RPC_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
_FETCH_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
# 1 s doubling up to about 4.5 h, like act_runner.
_JOB_BUCKETS: Final = tuple(float(2**i) for i in range(14))


def status_label(result: Result) -> str:
    """The ``status`` label of job metrics for a task result."""
    if result is Result.UNSPECIFIED:
        return "unknown"
    return result.word


class RunnerMetrics:
    """Every metric the daemon reports, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        process_collector.ProcessCollector(registry=reg)
        platform_collector.PlatformCollector(registry=reg)
        gc_collector.GCCollector(registry=reg)
        self._started = time.monotonic()
        self._running: Callable[[], int] = lambda: 0

        self._capacity = 0
        self.info = Gauge(
            "gitea_runner_info",
            "Runner metadata. Always 1. Labels carry version and name.",
            ["version", "name"],
            registry=reg,
        )
        self.capacity = Gauge(
            "gitea_runner_capacity", "Configured maximum concurrent jobs.", registry=reg
        )
        self.poll_fetch_total = Counter(
            "gitea_runner_poll_fetch_total",
            "Total number of FetchTask RPCs by result (task, empty, error).",
            ["result"],
            registry=reg,
        )
        self.poll_fetch_duration = Histogram(
            "gitea_runner_poll_fetch_duration_seconds",
            "Latency of FetchTask RPCs, excluding expected long-poll timeouts.",
            buckets=_FETCH_BUCKETS,
            registry=reg,
        )
        self.poll_backoff_seconds = Gauge(
            "gitea_runner_poll_backoff_seconds",
            "Last observed polling backoff interval in seconds.",
            registry=reg,
        )
        self.jobs_total = Counter(
            "gitea_runner_job_total",
            "Total jobs processed by status (success, failure, cancelled, skipped, unknown).",
            ["status"],
            registry=reg,
        )
        self.job_duration = Histogram(
            "gitea_runner_job_duration_seconds",
            "Duration of job execution from start to finish.",
            buckets=_JOB_BUCKETS,
            registry=reg,
        )
        self.report_log_total = Counter(
            "gitea_runner_report_log_total",
            "Total UpdateLog RPCs by result (success, error).",
            ["result"],
            registry=reg,
        )
        self.report_log_duration = Histogram(
            "gitea_runner_report_log_duration_seconds",
            "Latency of UpdateLog RPCs.",
            buckets=_RPC_BUCKETS,
            registry=reg,
        )
        self.report_state_total = Counter(
            "gitea_runner_report_state_total",
            "Total UpdateTask (state) RPCs by result (success, error).",
            ["result"],
            registry=reg,
        )
        self.report_state_duration = Histogram(
            "gitea_runner_report_state_duration_seconds",
            "Latency of UpdateTask RPCs.",
            buckets=_RPC_BUCKETS,
            registry=reg,
        )
        self.report_log_buffer_rows = Gauge(
            "gitea_runner_report_log_buffer_rows",
            "Current number of buffered log rows awaiting send.",
            registry=reg,
        )
        self.client_errors = Counter(
            "gitea_runner_client_errors_total",
            "Total client RPC errors by method.",
            ["method"],
            registry=reg,
        )
        uptime = Gauge(
            "gitea_runner_uptime_seconds", "Seconds since the runner daemon started.", registry=reg
        )
        uptime.set_function(lambda: time.monotonic() - self._started)
        running = Gauge(
            "gitea_runner_job_running", "Number of jobs currently executing.", registry=reg
        )
        running.set_function(lambda: float(self._running()))
        utilization = Gauge(
            "gitea_runner_job_capacity_utilization_ratio",
            "Ratio of running jobs to configured capacity (0.0-1.0).",
            registry=reg,
        )
        utilization.set_function(self._utilization)

    def set_runner(self, *, version: str, name: str, capacity: int) -> None:
        """Record who is reporting, once the daemon has declared."""
        self.info.labels(version=version, name=name).set(1)
        self.capacity.set(capacity)
        self._capacity = capacity

    def count_running_with(self, count: Callable[[], int]) -> None:
        """Read the running-job count from ``count`` at every scrape."""
        self._running = count

    def job_finished(self, result: Result, duration: float) -> None:
        self.jobs_total.labels(status=status_label(result)).inc()
        self.job_duration.observe(duration)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        body: bytes = generate_latest(self.registry)
        return body

    def _utilization(self) -> float:
        return self._running() / self._capacity if self._capacity > 0 else 0.0


class HasReady(Protocol):
    @property
    def ready(self) -> bool: ...


#: What /readyz asks: a callable, or an object with a ``ready`` flag.
Readiness = Callable[[], bool] | HasReady


def _is_ready(readiness: Readiness) -> bool:
    return bool(readiness()) if callable(readiness) else bool(readiness.ready)


def metrics_app(metrics: RunnerMetrics, readiness: Readiness) -> QuartTrio:
    """The ASGI app: /metrics (Prometheus text), /healthz (alive), /readyz (polling)."""
    app = QuartTrio(__name__)

    async def metrics_view() -> Response:
        body = await trio.to_thread.run_sync(metrics.exposition)
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    async def healthz() -> Response:
        return Response("ok\n", content_type="text/plain")

    async def readyz() -> Response:
        if _is_ready(readiness):
            return Response("ok\n", content_type="text/plain")
        return Response("not ready\n", status=503, content_type="text/plain")

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", readyz, methods=["GET"])
    return app


def _bind_address(addr: str) -> str:
    # Go's ":9101" listens on every interface.
    return f"0.0.0.0{addr}" if addr.startswith(":") else addr


async def serve_metrics(
    addr: str,
    metrics: RunnerMetrics,
    readiness: Readiness,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``nursery.start`` returns the bound URLs."""
    config = HypercornConfig()
    config.bind = [_bind_address(addr)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    log.info("metrics server listening on %s", addr)
    await serve(metrics_app(metrics, readiness), config, task_status=task_status)
