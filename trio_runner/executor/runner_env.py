"""The variables the runner itself gives every job (workflow-execution 4.4).

Part of layer 3 of the job environment (4.5), shared by the daemon and ``exec`` so both
spell them the same way; what only one of them knows (Gitea's run id and capabilities,
OIDC, ``ACT_EXEC``) its caller adds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

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
    for name, value in proxy_variables(os.environ, cache).items():
        # A value configured in runner.envs (either spelling) wins.
        if name not in envs and _other_spelling(name) not in envs:
            variables[name] = value
    return variables


_PROXY_NAMES = ("http_proxy", "https_proxy")


def _other_spelling(name: str) -> str:
    return name.upper() if name.islower() else name.lower()


def proxy_variables(
    environ: Mapping[str, str], cache: CacheAccess | None, service_ids: Iterable[str] = ()
) -> dict[str, str]:
    """The runner's proxy settings for jobs, both spellings (4.4); nothing without a proxy.

    ``no_proxy`` keeps the runner's list and adds the loopback names, the services and
    the cache host, which jobs must reach directly.
    """
    variables: dict[str, str] = {}
    for name in _PROXY_NAMES:
        value = environ.get(name) or environ.get(name.upper())
        if value:
            variables[name] = variables[name.upper()] = value
    if not variables:
        return {}
    no_proxy = [
        part.strip()
        for part in (environ.get("no_proxy") or environ.get("NO_PROXY") or "").split(",")
        if part.strip()
    ]
    extra = ["localhost", "127.0.0.1", "::1", *service_ids]
    if cache is not None and (host := urlsplit(cache.url).hostname):
        extra.append(host)
    no_proxy += [name for name in extra if name not in no_proxy]
    variables["no_proxy"] = variables["NO_PROXY"] = ",".join(no_proxy)
    return variables


def proxy_passwords(environ: Mapping[str, str]) -> list[str]:
    """Passwords in the runner's proxy URLs; they are masked like secrets (spec 7)."""
    passwords = []
    for name in (*_PROXY_NAMES, *(n.upper() for n in _PROXY_NAMES)):
        value = environ.get(name)
        if value and (password := urlsplit(value).password):
            passwords.append(password)
    return passwords


__all__ = [
    "CacheAccess",
    "cache_variables",
    "proxy_passwords",
    "proxy_variables",
    "runner_variables",
]
