"""Cloning the repositories of remote reusable workflows while exec plans the run.

Remote calls go through the action clone cache (workflow-execution 3.6): the same
directories under the action cache, the same per-directory locks, clone strategy and
credential rules, so a repository used both for a workflow and for an action at the
same ref is cloned once. Planning is synchronous, so each clone runs in its own short
Trio run; Trio and the executor load only when a remote call is planned.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from trio_runner.config import Config
from trio_runner.workflow.planner import PlanError
from trio_runner.workflow.reusable import FetchRepository, RemoteWorkflowRef

GITHUB = "https://github.com"


def _host(url: str) -> str:
    from trio_runner.executor.action_cache import url_host

    return url_host(url if "://" in url else f"https://{url}")


def remote_fetcher(
    config: Config, cache_dir: str, default_actions_url: str, instance_url: str, token: str
) -> FetchRepository:
    """A :data:`FetchRepository` cloning into ``cache_dir`` (else ``~/.cache/act``) from
    ``default_actions_url`` (or the mirror of github.com). ``token`` is sent only to the
    Gitea instance and to a default actions host other than github.com (3.6)."""

    def fetch(reference: RemoteWorkflowRef) -> Path:
        import trio

        from trio_runner.executor.action_cache import ActionFetchError, CloneSettings, clone_action
        from trio_runner.executor.actions import default_actions_host

        runner = config.runner
        default_host = default_actions_host(default_actions_url, runner.github_mirror, instance_url)
        auth_hosts = {_host(instance_url)} if instance_url else set()
        if default_actions_url.rstrip("/") != GITHUB:
            auth_hosts.add(_host(default_actions_url))
        auth_hosts -= {"github.com", _host(runner.github_mirror) if runner.github_mirror else ""}
        instance_host = _host(instance_url) if instance_url else ""
        settings = CloneSettings(
            shallow=runner.action_shallow_clone,
            offline=config.cache.offline_mode,
            token=token,
            auth_hosts=frozenset(auth_hosts),
            insecure_hosts=frozenset({instance_host} if runner.insecure and instance_host else ()),
        )
        url = reference.clone_url(default_host)
        directory = Path(cache_dir or "~/.cache/act").expanduser() / reference.cache_key

        def redact(text: str) -> str:
            return text.replace(token, "***") if token else text

        clone = partial(clone_action, directory, url, reference.ref, settings, redact=redact)
        try:
            fetched = trio.run(clone)
        except ActionFetchError as exc:
            raise PlanError(f"from {url}: {exc}") from None
        except OSError as exc:
            raise PlanError(f"from {url}: cannot run git: {exc.strerror}") from None
        return fetched.directory

    return fetch


__all__ = ["remote_fetcher"]
