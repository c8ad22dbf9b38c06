"""The variables the runner itself gives every job (workflow-execution 4.4).

Part of layer 3 of the job environment (4.5), shared by the daemon and ``exec`` so both
spell them the same way; what only one of them knows (Gitea's run id and capabilities,
OIDC, ``ACT_EXEC``) its caller adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trio_runner import __version__
from trio_runner.config import RunnerConfig


@dataclass(frozen=True)
class CacheAccess:
    """How a job reaches the Actions cache.

    ``url`` is the server's base URL with one trailing slash. ``results_url`` is set when
    the server fronts the results service for this job (daemon only: there is a Gitea
    behind it); only then is ``v2`` offered, because the toolkit speaks v2 to
    ``ACTIONS_RESULTS_URL``.
    """

    url: str
    results_url: str = ""
    v2: bool = False


def cache_variables(cache: CacheAccess, runtime_token: str) -> dict[str, str]:
    """``ACTIONS_CACHE_URL`` and the credential the cache accepts from this job."""
    variables = {"ACTIONS_CACHE_URL": cache.url, "ACTIONS_RUNTIME_TOKEN": runtime_token}
    if cache.results_url:
        variables["ACTIONS_RESULTS_URL"] = cache.results_url
        # Never "false": the toolkit reads any non-empty value as true.
        if cache.v2:
            variables["ACTIONS_CACHE_SERVICE_V2"] = "true"
    return variables


def runner_variables(
    runner: RunnerConfig,
    envs: Mapping[str, str],
    *,
    gitea: str = "",
    runtime_token: str = "",
    cache: CacheAccess | None = None,
) -> dict[str, str]:
    """``envs`` (``runner.envs`` and whatever else the caller layers in) under the
    runner's own variables.

    ``gitea`` is the instance address without a trailing slash; empty (``exec``) leaves
    out the Gitea services and their token. ``cache`` is None when jobs get no cache.
    """
    variables = dict(envs)
    variables["GITEA_ACTIONS"] = "true"
    variables["GITEA_ACTIONS_RUNNER_VERSION"] = __version__
    if gitea:
        variables["ACTIONS_RUNTIME_URL"] = f"{gitea}/api/actions_pipeline/"
        variables["ACTIONS_RESULTS_URL"] = gitea
        variables["ACTIONS_RUNTIME_TOKEN"] = runtime_token
    if cache is not None:
        variables.update(cache_variables(cache, runtime_token))
    if runner.set_act_env:
        variables["ACT"] = "true"
    return variables


__all__ = ["CacheAccess", "cache_variables", "runner_variables"]
