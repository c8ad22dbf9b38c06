"""Metrics names and values, and the /metrics, /healthz, /readyz server on a real socket."""

from __future__ import annotations

import httpx
import trio

from trio_runner.gitea.messages import Result
from trio_runner.observability import RunnerMetrics, serve_metrics, status_label


def sample_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_status_labels() -> None:
    assert status_label(Result.SUCCESS) == "success"
    assert status_label(Result.CANCELLED) == "cancelled"
    assert status_label(Result.UNSPECIFIED) == "unknown"


def test_metrics_follow_act_runner_names() -> None:
    metrics = RunnerMetrics()
    running = [2]
    metrics.set_runner(version="0.1.0", name="build-01", capacity=4)
    metrics.count_running_with(lambda: running[0])
    metrics.job_finished(Result.FAILURE, 12.0)
    metrics.poll_fetch_total.labels(result="empty").inc()
    metrics.client_errors.labels(method="FetchTask").inc()
    text = metrics.exposition().decode()
    assert 'gitea_runner_info{name="build-01",version="0.1.0"} 1.0' in text
    assert sample_value(text, "gitea_runner_capacity") == 4
    assert sample_value(text, 'gitea_runner_job_total{status="failure"}') == 1
    assert sample_value(text, "gitea_runner_job_duration_seconds_sum") == 12
    assert sample_value(text, 'gitea_runner_poll_fetch_total{result="empty"}') == 1
    assert sample_value(text, 'gitea_runner_client_errors_total{method="FetchTask"}') == 1
    assert sample_value(text, "gitea_runner_job_running") == 2
    assert sample_value(text, "gitea_runner_job_capacity_utilization_ratio") == 0.5
    running[0] = 4
    assert sample_value(metrics.exposition().decode(), "gitea_runner_job_running") == 4
    assert "gitea_runner_uptime_seconds" in text
    assert "process_" in text or "python_info" in text


def test_each_instance_has_its_own_registry() -> None:
    first, second = RunnerMetrics(), RunnerMetrics()
    first.job_finished(Result.SUCCESS, 1.0)
    assert 'gitea_runner_job_total{status="success"}' not in second.exposition().decode()


class Poller:
    def __init__(self) -> None:
        self.ready = False


async def test_server_endpoints() -> None:
    metrics = RunnerMetrics()
    metrics.set_runner(version="0.1.0", name="r", capacity=1)
    poller = Poller()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve_metrics, "127.0.0.1:0", metrics, poller)
            base = binds[0]
            async with httpx.AsyncClient(base_url=base) as http:
                health = await http.get("/healthz")
                assert (health.status_code, health.text) == (200, "ok\n")
                assert (await http.get("/readyz")).status_code == 503
                poller.ready = True
                assert (await http.get("/readyz")).status_code == 200
                scrape = await http.get("/metrics")
                assert scrape.status_code == 200
                assert scrape.headers["content-type"].startswith("text/plain")
                assert "gitea_runner_capacity 1.0" in scrape.text
                assert (await http.get("/other")).status_code == 404
            nursery.cancel_scope.cancel()


async def test_readiness_from_a_callable() -> None:
    state = {"ready": True}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                serve_metrics, "127.0.0.1:0", RunnerMetrics(), lambda: state["ready"]
            )
            async with httpx.AsyncClient(base_url=binds[0]) as http:
                assert (await http.get("/readyz")).status_code == 200
                state["ready"] = False
                assert (await http.get("/readyz")).status_code == 503
            nursery.cancel_scope.cancel()
