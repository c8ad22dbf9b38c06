"""``trio-runner config``: write a starter configuration file, print it, or check one.

The starter file is the example shipped in the package (``trio_runner/data``); the
repository's ``config/config.example.yaml`` is a link to that same file.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from trio_runner.config import load_config
from trio_runner.errors import ConfigError

DEFAULT_CONFIG_FILE = "config.yaml"


def example_config() -> str:
    """The commented example configuration: every key with its default."""
    return resources.files("trio_runner").joinpath("data/config.example.yaml").read_text("utf-8")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help=f"configuration file (default {DEFAULT_CONFIG_FILE})"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="write a starter configuration file")
    init.add_argument("-o", "--output", metavar="FILE", help="where to write (default: -c FILE)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    sub.add_parser("generate", help="print the starter configuration")
    check = sub.add_parser("check", help="validate a configuration file")
    for action in (init, check):
        # Accepted after the action too; SUPPRESS keeps a -c given before it.
        action.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    if args.action == "generate":
        sys.stdout.write(example_config())
        return 0
    path = Path(getattr(args, "output", None) or args.config or DEFAULT_CONFIG_FILE)
    if args.action == "init":
        return _init(path, force=args.force)
    return _check(path)


def _init(path: Path, *, force: bool) -> int:
    try:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise ConfigError(f"{path} exists; use --force to replace it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(example_config())
    print(f"wrote {path}")
    return 0


def _check(path: Path) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0
