"""Serve the fake Gitea standalone: ``python -m tests.fake_gitea --port N --task wf.yml``.

Prints the URL and a registration token on stdout (one ``key=value`` per line, so scripts
can read them), queues the given workflows (with the ``--secret`` values), and prints
per-task statistics as JSON lines when it stops (SIGINT/SIGTERM, or once every task is
final with ``--exit-when-done``). ``--dump-rows DIR`` also writes each task's stored log
rows to ``DIR/task-<id>.log``, one row per line, for checking what arrived.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import trio

from .app import serve_fake_gitea
from .state import FakeGitea


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_gitea", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--prefix", default="", help="serve below this sub-path")
    parser.add_argument("--registration-token", default=None, help="accept this registration token")
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        type=Path,
        metavar="WORKFLOW.yml",
        help="queue this one-job workflow as a task (repeatable)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a secret of every queued task (repeatable)",
    )
    parser.add_argument(
        "--exit-when-done", action="store_true", help="stop once every queued task is final"
    )
    parser.add_argument(
        "--dump-rows", type=Path, metavar="DIR", help="write each task's log rows to DIR"
    )
    return parser


def _secrets(values: list[str]) -> dict[str, str] | None:
    secrets = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            return None
        secrets[name] = value
    return secrets


def _dump_rows(gitea: FakeGitea, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for task in gitea.tasks.values():
        # Rows never hold a line break (the fake records a violation otherwise).
        text = "".join(f"{content}\n" for content in task.contents)
        (directory / f"task-{task.id}.log").write_text(text, encoding="utf-8")


async def _run(args: argparse.Namespace) -> int:
    workflows = []
    for path in args.task:
        try:
            workflows.append(path.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"error: cannot read --task {path}: {exc.strerror}", file=sys.stderr)
            return 2
    secrets = _secrets(args.secret)
    if secrets is None:
        print("error: --secret: expected NAME=VALUE", file=sys.stderr)
        return 2
    async with serve_fake_gitea(host=args.host, port=args.port, prefix=args.prefix) as gitea:
        token = gitea.add_registration_token(args.registration_token)
        for path, workflow in zip(args.task, workflows, strict=True):
            try:
                gitea.queue_task(workflow, workflow_file=path.name, secrets=secrets)
            except ValueError as exc:
                print(f"error: --task {path}: {exc}", file=sys.stderr)
                return 2
        print(f"url={gitea.url}\nregistration_token={token}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                if args.exit_when_done:
                    await gitea.wait_until(
                        lambda: all(task.final for task in gitea.tasks.values()), within=1e9
                    )
                    nursery.cancel_scope.cancel()
        if args.dump_rows is not None:
            _dump_rows(gitea, args.dump_rows)
        for stats in gitea.stats():
            print(json.dumps(stats), flush=True)
        for violation in gitea.violations:
            print(f"violation: {violation}", file=sys.stderr)
    return 0


def main() -> int:
    return trio.run(_run, _parser().parse_args())


if __name__ == "__main__":
    sys.exit(main())
