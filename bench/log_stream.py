"""Log streaming benchmark: the real daemon, a job printing many lines, the fake Gitea.

Starts the fake Gitea standalone on 127.0.0.1 (``python -m tests.fake_gitea``), registers
a runner with ``trio-runner register`` into a temporary directory and runs the real
daemon (``python -m trio_runner -c config.yaml start --once``) on one queued task, then
prints, with each target's pass/fail:

* throughput: rows per second from the first row stored by the fake to the last, for a
  job printing ``--lines`` lines (every 97th holding one of the task's 5 secrets; the
  job ``cat``s a file made beforehand, so that the producer is never the limit), and
  the rows per UpdateLog call; every printed line must arrive exactly once, in order,
  masked, and no secret may appear anywhere in the log;
* the daemon's peak RSS during those jobs and during one printing 40,000 lines of
  4,060 characters (VmHWM, polled until the daemon exits);
* latency: from the hand-out of a task (its FetchTask answer) to the first row stored,
  for a one-line job;
* idle: the daemon's RSS after ``--idle`` seconds without tasks (counted once it has
  declared itself and started its services), and the CPU time and wakeups it used.

Every run uses the default settings (report intervals, cache server on); only the
registration file, the work and cache directories live in the temporary directory.
Timings are taken by the fake (``rows_span``, ``first_row_after`` of its statistics).
Usage::

    .venv/bin/python bench/log_stream.py [--lines 200000] [--repeat 3] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABELS = "ubuntu-latest:host"
SECRETS = {f"BENCH_SECRET_{n}": f"s3cr3t-{n}-{'x' * (6 + n)}-{n * 7919}" for n in range(5)}
#: Every SECRET_EVERY-th line carries a secret (cycling through them).
SECRET_EVERY = 97
PROCESS_LIMIT = 600.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Python processes run as after an ordinary install: with their bytecode cached (kept
#: out of the source tree), whatever PYTHONDONTWRITEBYTECODE says here.
PYTHON_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(ROOT / ".bench-out" / "pycache"),
}

TARGET_LINES_PER_S = 100_000
TARGET_PEAK_RSS_MB = 100.0
TARGET_FIRST_ROW_S = 0.3
TARGET_IDLE_RSS_MB = 60.0
#: "No busy looping": the idle daemon uses at most this share of one CPU.
TARGET_IDLE_CPU_SHARE = 0.01
IDLE_SETTLE = 2.0
#: Lines of the long-line run: the log is large, the daemon's memory must not follow it.
WIDE_LINES = 40_000
WIDE_PAD = 4_000


def printed_line(i: int, secret: str, pad: int) -> str:
    if i % SECRET_EVERY == 0:
        return f"line {i:07d} token={secret} and more text"
    text = f"line {i:07d} the quick brown fox jumps over the lazy dog {i * 7919 % 100003}"
    return f"{text} {'z' * pad}" if pad else text


def expected_line(i: int, pad: int) -> str:
    return printed_line(i, "***", pad)


def write_job_output(path: Path, lines: int, pad: int) -> None:
    """What the job prints, made beforehand so that the job itself is a fast ``cat``."""
    values = list(SECRETS.values())
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            out.write(printed_line(i, values[i // SECRET_EVERY % len(values)], pad) + "\n")


def workflow(step: str) -> str:
    secret_env = "".join(
        f"          {name}: ${{{{ secrets.{name} }}}}\n" for name in sorted(SECRETS)
    )
    return (
        "name: bench\non: push\njobs:\n  log:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - run: {json.dumps(step)}\n        env:\n{secret_env}"
    )


def write_config(directory: Path) -> Path:
    """Default settings except where files go (JSON is valid YAML)."""
    config = {
        "log": {"level": "info"},
        "runner": {"file": str(directory / ".runner")},
        "cache": {"dir": str(directory / "cache")},
        "host": {"workdir_parent": str(directory / "work")},
    }
    path = directory / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def status_kb(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match[1]) if match else None


def status_count(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match[1]) if match else 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


@dataclass
class Fake:
    process: subprocess.Popen[str]
    url: str
    token: str

    def finish(self) -> tuple[list[dict[str, Any]], str]:
        """Wait for ``--exit-when-done`` (or stop it) and return the stats lines, stderr."""
        try:
            out, err = self.process.communicate(timeout=PROCESS_LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        stats = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return stats, err

    def stop(self) -> tuple[list[dict[str, Any]], str]:
        self.process.send_signal(signal.SIGTERM)
        return self.finish()


def start_fake(work: Path, tasks: list[Path], *, exit_when_done: bool) -> Fake:
    args = [sys.executable, "-m", "tests.fake_gitea", "--dump-rows", str(work / "rows")]
    for task in tasks:
        args += ["--task", str(task)]
    for name, value in SECRETS.items():
        args += ["--secret", f"{name}={value}"]
    if exit_when_done:
        args.append("--exit-when-done")
    process = subprocess.Popen(
        args, cwd=ROOT, env=PYTHON_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    values: dict[str, str] = {}
    while not {"url", "registration_token"} <= values.keys():
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake Gitea did not start: {process.communicate()[1]}")
        key, _, value = line.strip().partition("=")
        values[key] = value
    return Fake(process, values["url"], values["registration_token"])


def runner(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "trio_runner", "-c", str(config), *args]


def register(work: Path, fake: Fake) -> Path:
    config = write_config(work)
    register = runner(config, "register", "--no-interactive", "--instance", fake.url)
    subprocess.run(
        [*register, "--token", fake.token, "--name", "bench", "--labels", LABELS],
        cwd=work,
        env=PYTHON_ENV,
        check=True,
        capture_output=True,
    )
    return config


@dataclass
class DaemonRun:
    peak_rss_kb: int
    wall: float
    #: CPU seconds (user + system) of the whole daemon process, start-up included.
    cpu: float


def run_daemon_once(work: Path, config: Path) -> DaemonRun:
    """Run ``start --once`` to its end, watching its memory."""
    log = (work / "runner.log").open("wb")
    started = time.monotonic()
    daemon = subprocess.Popen(
        runner(config, "start", "--once"),
        cwd=work,
        env=PYTHON_ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    peak = 0
    while True:
        peak = max(peak, status_kb(daemon.pid, "VmHWM") or 0)
        # wait4 rather than poll: it also tells the CPU time the daemon used.
        pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
        if time.monotonic() - started > PROCESS_LIMIT:
            daemon.kill()
            raise RuntimeError("the daemon did not finish its task")
    daemon.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if daemon.returncode != 0:
        raise RuntimeError(f"the daemon failed:\n{(work / 'runner.log').read_text()}")
    return DaemonRun(peak, time.monotonic() - started, usage.ru_utime + usage.ru_stime)


@dataclass
class StreamRun:
    rows: int
    span: float
    calls: list[int]
    first_row_after: float
    daemon: DaemonRun
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.rows / self.span if self.span > 0 else float("inf")


def check_rows(path: Path, lines: int, pad: int) -> list[str]:
    """Every generated line exactly once, in order, masked; no secret anywhere."""
    problems = []
    rows = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(rows)
    for name, value in SECRETS.items():
        if value in text:
            problems.append(f"{name} appears unmasked")
    generated = [row for row in rows if row.startswith("line ")]
    if len(generated) != lines:
        problems.append(f"{len(generated)} generated rows arrived, expected {lines}")
    for i, row in enumerate(generated):
        if row != expected_line(i, pad):
            problems.append(f"row {i} is {row[:80]!r}, expected {expected_line(i, pad)[:80]!r}")
            break
    return problems


def stream_run(lines: int, pad: int = 0) -> StreamRun:
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        work = Path(tmp)
        output = work / "output.txt"
        write_job_output(output, lines, pad)
        task = work / "stream.yml"
        task.write_text(workflow(f"cat {output}"))
        fake = start_fake(work, [task], exit_when_done=True)
        try:
            config = register(work, fake)
            daemon = run_daemon_once(work, config)
        finally:
            stats, err = fake.finish()
        (stat,) = stats
        problems = list(stat["violations"]) + check_rows(work / "rows" / "task-1.log", lines, pad)
        if stat["status"] != "success":
            problems.append(f"task ended {stat['status']}: {err}")
        return StreamRun(
            rows=stat["rows"],
            span=stat["rows_span"],
            calls=stat["rows_per_log_call"],
            first_row_after=stat["first_row_after"],
            daemon=daemon,
            problems=problems,
        )


def latency_run() -> float:
    """Seconds from the hand-out of a one-line job to its first row at the fake."""
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        work = Path(tmp)
        task = work / "hello.yml"
        task.write_text(workflow("echo hello"))
        fake = start_fake(work, [task], exit_when_done=True)
        try:
            config = register(work, fake)
            run_daemon_once(work, config)
        finally:
            stats, _ = fake.finish()
        (stat,) = stats
        first_row_after: float = stat["first_row_after"]
        return first_row_after


@dataclass
class Idle:
    rss_kb: int
    cpu: float
    wakeups: int


def idle_run(seconds: float) -> Idle:
    """An idle daemon over ``seconds`` once started up: its RSS at the end, the CPU time
    and the voluntary context switches (wakeups) it used meanwhile."""
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        work = Path(tmp)
        fake = start_fake(work, [], exit_when_done=False)
        daemon = None
        try:
            config = register(work, fake)
            log = (work / "runner.log").open("wb")
            daemon = subprocess.Popen(
                runner(config, "start"),
                cwd=work,
                env=PYTHON_ENV,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 60
            while "declared" not in (work / "runner.log").read_text(errors="replace"):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "runner.log").read_text())
                time.sleep(0.05)
            # The services (cache server, engine probe) start after Declare.
            time.sleep(IDLE_SETTLE)
            cpu_before = cpu_seconds(daemon.pid)
            wakeups_before = status_count(daemon.pid, "voluntary_ctxt_switches")
            time.sleep(seconds)
            cpu = cpu_seconds(daemon.pid) - cpu_before
            wakeups = status_count(daemon.pid, "voluntary_ctxt_switches") - wakeups_before
            rss = status_kb(daemon.pid, "VmRSS") or 0
        finally:
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
            fake.stop()
        return Idle(rss, cpu, wakeups)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines the job prints")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window in seconds")
    args = parser.parse_args()

    runs = []
    for number in range(1, args.repeat + 1):
        run = stream_run(args.lines)
        runs.append(run)
        report_stream(f"stream run {number}", run)
    wide = stream_run(WIDE_LINES, WIDE_PAD)
    report_stream(f"long lines ({WIDE_PAD + 60} chars)", wide)
    latencies = []
    for number in range(1, args.repeat + 1):
        latency = latency_run()
        latencies.append(latency)
        print(f"latency run {number}: first row {latency * 1000:.0f} ms after hand-out")
    idle = idle_run(args.idle)
    print(
        f"idle: RSS {idle.rss_kb / 1024:.1f} MB after {args.idle:g} s; "
        f"CPU {idle.cpu * 1000:.0f} ms and {idle.wakeups} wakeups in that time"
    )

    rate = statistics.median(run.rate for run in runs)
    peak = max(run.daemon.peak_rss_kb for run in [*runs, wide]) / 1024
    latency = statistics.median(latencies)
    correct = all(not run.problems for run in [*runs, wide])
    share = idle.cpu / args.idle
    print()
    print(f"{'target':<46} {'measured':>16}  result")
    rows = [
        ("throughput >= 100,000 rows/s (median)", f"{rate:,.0f}/s", rate >= TARGET_LINES_PER_S),
        ("peak RSS < 100 MB (max, long lines too)", f"{peak:.1f} MB", peak < TARGET_PEAK_RSS_MB),
        ("hand-out to first row < 0.3 s (median)", f"{latency * 1000:.0f} ms",
         latency < TARGET_FIRST_ROW_S),
        ("every row once, in order, masked", "yes" if correct else "no", correct),
        ("idle RSS < 60 MB", f"{idle.rss_kb / 1024:.1f} MB",
         idle.rss_kb / 1024 < TARGET_IDLE_RSS_MB),
        ("idle CPU < 1% (no busy looping)", f"{share:.2%}", share < TARGET_IDLE_CPU_SHARE),
    ]  # fmt: skip
    for name, measured, ok in rows:
        print(f"{name:<46} {measured:>16}  {verdict(ok)}")
    return 0 if all(ok for _, _, ok in rows) else 1


def report_stream(name: str, run: StreamRun) -> None:
    calls = run.calls
    print(
        f"{name}: {run.rows} rows in {run.span:.3f} s = {run.rate:,.0f} rows/s; "
        f"{len(calls)} UpdateLog calls, rows/call mean {statistics.mean(calls):,.0f} "
        f"max {max(calls):,}; peak RSS {run.daemon.peak_rss_kb / 1024:.1f} MB; "
        f"first row {run.first_row_after * 1000:.0f} ms after hand-out; "
        f"daemon wall {run.daemon.wall:.2f} s, CPU {run.daemon.cpu:.2f} s; "
        + ("rows OK" if not run.problems else "PROBLEMS: " + "; ".join(run.problems))
    )


if __name__ == "__main__":
    sys.exit(main())
