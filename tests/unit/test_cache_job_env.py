"""What a task's cache registration means for its environment: ACTIONS_RESULTS_URL points
at the cache server only when that server forwards the job's artifact calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec

from trio_runner.config import Config, RunnerConfig
from trio_runner.daemon.task import TaskEnvironment, _job_token, job_environment_variables

GITEA = "https://gitea.example:3000/"
CACHE = "http://10.0.0.5:41234/"


@dataclass
class RecordingCache:
    """A JobToken that records its registrations and forwards when given ``results``."""

    calls: list[tuple[str, str, str, bool]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def job_token(
        self,
        token: str,
        repository: str,
        *,
        results: str = "",
        insecure_tls: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> AsyncIterator[str]:
        self.calls.append((token, repository, results, insecure_tls))
        yield CACHE if results else ""


def environment(
    cache: RecordingCache | None, *, v2: bool = True, insecure: bool = False
) -> TaskEnvironment:
    config = Config(runner=msgspec.structs.replace(RunnerConfig(), insecure=insecure))
    return TaskEnvironment(
        config=config,
        client=None,
        address=GITEA,
        runner_name="r",
        labels=[],
        cache_url=CACHE if cache is not None else "",
        cache_v2=v2,
        job_token=cache.job_token if cache is not None else None,
    )


CONTEXT = {"repository": "owner/repo", "gitea_runtime_token": "runtime"}


def test_results_url_points_at_the_cache_when_it_forwards() -> None:
    variables, _ = job_environment_variables(
        environment(RecordingCache()), dict(CONTEXT), {}, results_url=CACHE
    )
    assert variables["ACTIONS_RESULTS_URL"] == CACHE
    assert variables["ACTIONS_CACHE_URL"] == CACHE
    assert variables["ACTIONS_CACHE_SERVICE_V2"] == "true"


def test_gitea_address_is_kept_when_the_cache_does_not_forward() -> None:
    variables, _ = job_environment_variables(environment(RecordingCache()), dict(CONTEXT), {})
    assert variables["ACTIONS_RESULTS_URL"] == GITEA.rstrip("/")
    assert variables["ACTIONS_CACHE_URL"] == CACHE
    assert "ACTIONS_CACHE_SERVICE_V2" not in variables


def test_v2_off_and_cache_disabled() -> None:
    no_v2, _ = job_environment_variables(
        environment(RecordingCache(), v2=False), dict(CONTEXT), {}, results_url=CACHE
    )
    disabled, _ = job_environment_variables(environment(None), dict(CONTEXT), {})
    assert no_v2["ACTIONS_RESULTS_URL"] == CACHE
    assert "ACTIONS_CACHE_SERVICE_V2" not in no_v2
    assert disabled["ACTIONS_RESULTS_URL"] == GITEA.rstrip("/")
    assert "ACTIONS_CACHE_URL" not in disabled
    assert "ACTIONS_CACHE_SERVICE_V2" not in disabled


async def test_registration_offers_the_gitea_address_for_forwarding() -> None:
    cache = RecordingCache()
    async with _job_token(environment(cache, insecure=True), CONTEXT, "runtime", print) as url:
        assert url == CACHE
    assert cache.calls == [("runtime", "owner/repo", GITEA.rstrip("/"), True)]


async def test_no_registration_without_a_cache_or_a_token() -> None:
    cache = RecordingCache()
    async with _job_token(environment(None), CONTEXT, "runtime", print) as without_cache:
        pass
    async with _job_token(environment(cache), CONTEXT, "", print) as without_token:
        pass
    assert (without_cache, without_token) == ("", "")
    assert cache.calls == []
