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


def remote_fetcher(
    config: Config, cache_dir: str, default_actions_url: str, instance_url: str, token: str
) -> FetchRepository:
    """A :data:`FetchRepository` cloning into ``cache_dir`` (else ``~/.cache/act``) from
    ``default_actions_url`` (or the mirror of github.com). ``token`` is sent only to the
    Gitea instance and to a default actions host other than github.com (3.6)."""

    def fetch(reference: RemoteWorkflowRef) -> Path:
        import trio

        from trio_runner.executor.action_cache import ActionFetchError, clone_action
        from trio_runner.executor.actions import clone_settings

        runner = config.runner
        default_host, settings = clone_settings(
            context_url=default_actions_url,
            github_mirror=runner.github_mirror,
            instance=instance_url,
            token=token,
            shallow=runner.action_shallow_clone,
            offline=config.cache.offline_mode,
            insecure=runner.insecure,
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
