"""Command line entry point: picks the sub-command and imports only what it needs.

Each sub-command lives in its own module exposing ``configure(parser)`` to declare its
arguments and ``main(args) -> int`` to run. Importing lazily keeps ``trio-runner exec``
and ``--help`` fast: the daemon, the cache server and the container client are only
loaded by the commands that use them.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from trio_runner import __version__
from trio_runner.errors import RunnerError

#: command name -> (module, one-line help). ``daemon`` is act_runner's name for ``start``.
COMMANDS: dict[str, tuple[str, str]] = {
    "register": ("trio_runner.register_command", "register this runner with a Gitea instance"),
    "start": ("trio_runner.daemon.command", "run the runner daemon"),
    "daemon": ("trio_runner.daemon.command", "run the runner daemon (alias of start)"),
    "exec": ("trio_runner.exec_command", "run workflows from a local directory"),
    "cache-server": ("trio_runner.cache.command", "serve the Actions cache for several runners"),
    "config": ("trio_runner.config_command", "work with the configuration file"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-runner",
        description="A self-hosted runner for Gitea Actions.",
    )
    parser.add_argument("--version", action="version", version=f"trio-runner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _find_command(args: list[str]) -> str | None:
    """The first positional word, skipping the value of act_runner's global ``-c FILE``."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "--config"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _attach_dash_values(args: list[str], options: Sequence[str]) -> list[str]:
    """``-i -self-hosted`` as act_runner spells it: argparse would read the value as a flag."""
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in options and index + 1 < len(args) and args[index + 1].startswith("-"):
            out.append(f"{arg}={args[index + 1]}")
            index += 2
            continue
        out.append(arg)
        index += 1
    return out


@contextmanager
def loading_modules() -> Iterator[None]:
    """Import without the cycle collector, then keep what was loaded out of its sight.

    Imports create many long-lived objects and next to no garbage, so collecting while
    they load is wasted work (tens of milliseconds at start-up), and so is walking them
    again in every later full collection and in the ones at interpreter exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _find_command(args_list)
    if command not in COMMANDS:
        _top_parser().parse_args(args_list or ["--help"])
        return 2
    module_name, help_text = COMMANDS[command]
    with loading_modules():
        module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"trio-runner {command}", description=help_text)
    module.configure(parser)
    position = args_list.index(command)
    rest = args_list[:position] + args_list[position + 1 :]
    args = parser.parse_args(_attach_dash_values(rest, getattr(module, "DASH_VALUES", ())))
    try:
        code: int = module.main(args)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
