"""The cache server's own settings: what to serve, where, and the eviction policy.

Kept apart from the config file's shape so the daemon, ``exec`` and the standalone
``cache-server`` command can each build one from whatever they read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trio_runner.config import Config
from trio_runner.errors import ConfigError

GIB = 1024**3
MIB = 1024**2


def default_cache_dir() -> Path:
    """``$HOME/.cache/actcache``, act_runner's default."""
    home = os.environ.get("HOME", "")
    if not home:
        raise ConfigError("cache.dir is not set and there is no home directory to default to")
    return Path(home) / ".cache" / "actcache"


@dataclass(frozen=True, slots=True)
class EvictionPolicy:
    """Spec section 11.1; durations in seconds, sizes in bytes, 0 = off where allowed."""

    retention: float = 168 * 3600
    repo_size_limit: int = 10 * GIB
    size_limit: int = 0
    sweep_interval: float = 3600
    min_free_disk: int = 1024 * MIB

    @property
    def max_entry_size(self) -> int:
        """Largest archive worth accepting; 0 means unlimited (spec 9.6)."""
        return self.repo_size_limit or self.size_limit

    @property
    def effective_sweep_interval(self) -> float:
        return self.sweep_interval if self.sweep_interval > 0 else 3600.0


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Everything a cache server needs to start.

    ``host`` is the address jobs use (empty: detect the outbound IP); ``bind_host`` is the
    interface the socket listens on (all of them by default, tests use 127.0.0.1).
    ``shared_secret`` enables the ``/_internal`` control plane (standalone server only).
    """

    dir: Path
    host: str = ""
    port: int = 0
    bind_host: str = "0.0.0.0"
    shared_secret: str = ""
    policy: EvictionPolicy = EvictionPolicy()


def settings_from_config(config: Config, *, bind_host: str = "0.0.0.0") -> CacheSettings:
    """Settings of a server for ``config``: its ``cache:`` section and the free-disk floor
    of ``health_check`` (spec 11.1: the configured floor only with health checks on and
    a positive value, else 1024 MiB)."""
    cache, health = config.cache, config.health_check
    floor_mb = health.min_free_disk_space_mb
    if not health.enabled or floor_mb <= 0:
        floor_mb = 1024
    return CacheSettings(
        dir=Path(cache.dir).expanduser() if cache.dir else default_cache_dir(),
        host=cache.host,
        port=cache.port,
        bind_host=bind_host,
        shared_secret=str(cache.external_secret),
        policy=EvictionPolicy(
            retention=cache.retention,
            repo_size_limit=cache.repo_size_limit,
            size_limit=cache.size_limit,
            sweep_interval=cache.sweep_interval,
            min_free_disk=floor_mb * MIB,
        ),
    )
