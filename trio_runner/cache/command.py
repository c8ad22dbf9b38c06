"""``trio-runner cache-server``: the cache on its own, shared by several runners.

Reads the config file through :func:`trio_runner.config.load_config`, lets
``--dir/--host/--port`` override ``cache.dir/host/port``, refuses to start without a
shared secret, and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from pathlib import Path

import trio

from trio_runner.cache.server import run_cache_server
from trio_runner.cache.settings import CacheSettings, settings_from_config
from trio_runner.config import load_config
from trio_runner.errors import ConfigError

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="config file (cache: section)")
    parser.add_argument("-d", "--dir", type=Path, help="cache directory (cache.dir)")
    parser.add_argument("-s", "--host", help="address runners' jobs use (cache.host)")
    parser.add_argument("-p", "--port", type=int, help="port to listen on (cache.port)")
    parser.add_argument(
        "--bind", default="0.0.0.0", help="interface to listen on (default: all of them)"
    )


def settings_from(args: argparse.Namespace) -> CacheSettings:
    settings = settings_from_config(load_config(args.config), bind_host=args.bind)
    if not settings.shared_secret:
        raise ConfigError(
            "cache-server needs a shared secret: set cache.external_secret (or"
            " cache.external_secret_file), and the same value on every runner that uses this"
            " server through cache.external_server"
        )
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: {args.port} is not a port number (0-65535)")
    overrides: dict[str, object] = {}
    if args.dir is not None:
        overrides["dir"] = args.dir
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


async def _serve(settings: CacheSettings) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(run_cache_server, settings)
            log.info("cache server listening; jobs reach it at %s", service.url)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    trio.run(_serve, settings_from(args))
    return 0
