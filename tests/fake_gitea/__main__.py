"""Serve the fake Gitea standalone: ``python -m tests.fake_gitea --port N --task wf.yml``.

Prints the URL and a registration token on stdout (one ``key=value`` per line, so scripts
can read them), queues the given workflows, and prints per-task statistics as JSON lines
when it stops (SIGINT/SIGTERM, or once every task is final with ``--exit-when-done``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import trio

from .app import serve_fake_gitea


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
        "--exit-when-done", action="store_true", help="stop once every queued task is final"
    )
    return parser


async def _run(args: argparse.Namespace) -> int:
    workflows = []
    for path in args.task:
        try:
            workflows.append(path.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"error: cannot read --task {path}: {exc.strerror}", file=sys.stderr)
            return 2
    async with serve_fake_gitea(host=args.host, port=args.port, prefix=args.prefix) as gitea:
        token = gitea.add_registration_token(args.registration_token)
        for path, workflow in zip(args.task, workflows, strict=True):
            try:
                gitea.queue_task(workflow, workflow_file=path.name)
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
        for stats in gitea.stats():
            print(json.dumps(stats), flush=True)
        for violation in gitea.violations:
            print(f"violation: {violation}", file=sys.stderr)
    return 0


def main() -> int:
    return trio.run(_run, _parser().parse_args())


if __name__ == "__main__":
    sys.exit(main())
