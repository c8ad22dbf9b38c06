"""Local health checks the daemon runs before taking a task (``health_check`` config).

A runner low on disk space, or whose administrator's script says no, stops asking
Gitea for work until the check passes again; the server is never told.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import trio

from trio_runner.config import HealthCheckConfig

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class HealthCheck:
    """Answers whether this machine may take a task now; script results are reused for
    ``interval``."""

    def __init__(self, config: HealthCheckConfig, workdir: str) -> None:
        self.config = config
        self.workdir = workdir
        self._script_ok = True
        self._script_checked_at: float | None = None
        self._unhealthy = False

    async def healthy(self) -> bool:
        if not self.config.enabled:
            return True
        reason = self._disk_problem() or await self._script_problem()
        # Logged when the state flips, not on every poll.
        if reason and not self._unhealthy:
            log.warning("not taking tasks: %s", reason)
        elif not reason and self._unhealthy:
            log.info("health check passes again; taking tasks")
        self._unhealthy = bool(reason)
        return not reason

    def _disk_problem(self) -> str:
        floor = self.config.min_free_disk_space_mb
        if floor <= 0:
            return ""
        path = Path(self.workdir).expanduser()
        while not path.exists() and path != path.parent:
            path = path.parent
        free = shutil.disk_usage(path).free // MIB
        if free < floor:
            return f"{free} MiB free on {path}, below health_check.min_free_disk_space_mb {floor}"
        return ""

    async def _script_problem(self) -> str:
        script = self.config.script
        if not script:
            return ""
        now = trio.current_time()
        fresh = self._script_checked_at is not None and (
            now - self._script_checked_at < self.config.interval
        )
        if not fresh:
            self._script_ok = await self._run_script(script)
            self._script_checked_at = now
        return "" if self._script_ok else f"health_check.script {script} failed"

    async def _run_script(self, script: str) -> bool:
        with trio.move_on_after(self.config.timeout) as scope:
            try:
                result = await trio.run_process(
                    [script],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            except OSError as exc:
                log.warning("health_check.script %s cannot run: %s", script, exc.strerror)
                return False
            return result.returncode == 0
        if scope.cancelled_caught:
            log.warning("health_check.script %s took longer than %gs", script, self.config.timeout)
        return False
