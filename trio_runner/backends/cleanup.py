"""The daemon's idle pass: remove containers, volumes and networks a killed runner left.

Every object a job creates carries the runner's uuid and the task id as labels
(``docker.py``); a pass removes those of tasks that are not running and older than
``runner.workdir_cleanup_age``. The first pass runs when the daemon starts, then one every
``runner.idle_cleanup_interval``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import trio

from trio_runner.backends import docker_api
from trio_runner.backends.docker import remove_leftovers
from trio_runner.config import Config

log = logging.getLogger(__name__)


async def cleanup_pass(config: Config, runner_uuid: str, active_tasks: Collection[int]) -> None:
    """One pass; an unreachable engine is a warning, the next pass tries again."""
    try:
        host = docker_api.resolve_docker_host(config.container.docker_host)
        async with docker_api.connect(host) as api:
            removed = await remove_leftovers(
                api,
                runner_uuid,
                active_tasks=active_tasks,
                min_age=config.runner.workdir_cleanup_age,
            )
    except docker_api.EngineError as exc:
        log.warning("idle cleanup skipped: %s", exc)
        return
    for item in removed:
        log.info("idle cleanup removed %s", item)


async def idle_cleanup(config: Config, runner_uuid: str, active_tasks: Collection[int]) -> None:
    """Run passes until cancelled; ``active_tasks`` is a live view of the running task ids."""
    interval = config.runner.idle_cleanup_interval
    while True:
        await cleanup_pass(config, runner_uuid, active_tasks)
        if interval <= 0:
            return
        await trio.sleep(interval)
