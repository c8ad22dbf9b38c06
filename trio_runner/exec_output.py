"""What ``trio-runner exec`` prints: job sinks for a terminal or for JSON lines, the summary.

Every job (matrix leg) writes through its own sink; all sinks share one writer that
emits whole lines with a single write each, so rows of concurrently running jobs never
interleave mid-line. The terminal form prefixes rows with ``[workflow/job]`` as act
does, marks step boundaries with durations and results, renders ``::group::`` and
annotation rows readably and uses colour only on a terminal without ``NO_COLOR``.

The JSON form (``--json``) writes one object per line, each with a ``type``:

* ``job_started``: ``job`` (the prefix label), ``time``.
* ``row``: ``job``, ``step`` (0-based index, null outside a step), ``time``, ``content``.
* ``step_started``: ``job``, ``step``, ``name``, ``time``.
* ``step_finished``: ``job``, ``step``, ``name``, ``result``, ``time``, ``duration``
  (seconds, null when the step never started).
* ``message``: ``job``, ``level`` (``info``/``error``), ``text``: runner messages about
  a job outside its log (a skipped job, a planning error).
* ``job_finished``: ``job``, ``result``, ``duration``.
* ``summary`` (last line): ``result``, ``exit_code``, ``jobs``: a list of
  ``{job, workflow, job_id, result, duration}``.

``time`` values are RFC 3339 UTC; results are ``success``, ``failure``, ``cancelled``
or ``skipped``.

Jobs of a called reusable workflow are labelled ``<workflow>/<caller> / <job>`` (the
caller's name with its matrix suffix, then the called job's, as GitHub displays them);
in the summary their ``workflow`` is the calling workflow's and their ``job_id`` the
path of job ids from the selected job (``call/build``, ``outer/inner/build``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TextIO

from trio_runner.executor.sink import Conclusion, JobSink


@dataclass(frozen=True)
class JobSummary:
    """One line of the final table: a job leg (or a job that never got to run)."""

    label: str
    workflow: str
    job_id: str
    result: str
    duration: float


class ExecOutput(Protocol):
    """Where the run is reported (terminal or JSON lines)."""

    def job_started(self, label: str, time: datetime) -> None: ...

    def job_sink(self, label: str, step_names: Sequence[str]) -> JobSink: ...

    def message(self, label: str, text: str, *, error: bool = False) -> None: ...

    def job_finished(self, label: str, result: str, duration: float) -> None: ...

    def summary(self, jobs: Sequence[JobSummary], result: str, exit_code: int) -> None: ...


class LineWriter:
    """Writes batches of complete lines, one write and flush per batch."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, lines: Sequence[str]) -> None:
        if lines:
            self.stream.write("".join(f"{line}\n" for line in lines))
            self.stream.flush()


def use_color(stream: TextIO) -> bool:
    """Colour and symbols only on a terminal, and colour never with ``NO_COLOR`` set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


# --- terminal ---------------------------------------------------------------------------

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"
_PREFIX_COLORS = ("\x1b[34m", "\x1b[35m", "\x1b[36m", "\x1b[32m", "\x1b[33m", "\x1b[94m")

_SYMBOLS = {
    "success": "✅",
    "failure": "❌",
    "cancelled": "🚫",
    "skipped": "⏭️ ",
}
_RESULT_COLORS = {"success": _GREEN, "failure": _RED, "cancelled": _YELLOW, "skipped": _DIM}

# ``::name props::payload`` and ``##[name]payload`` (8.4); payloads are %-escaped (6.2).
_COMMAND = re.compile(r"^::([a-z-]+)(?: [^:]*)?::(.*)$|^##\[([a-z-]+)\](.*)$")
_ANNOTATIONS = {"error": _RED, "warning": _YELLOW, "notice": _CYAN, "debug": _DIM}
_UNESCAPES = (("%0D", "\r"), ("%0A", "\n"), ("%3B", ";"), ("%5D", "]"), ("%25", "%"))


def _unescape(payload: str, bracket_form: bool) -> str:
    # Gitea's UI decodes %25 %0D %0A, and %3B %5D for the ##[...] form; %25 goes last.
    for code, char in _UNESCAPES:
        if bracket_form or code not in ("%3B", "%5D"):
            payload = payload.replace(code, char)
    return payload


class TerminalOutput:
    """Human-readable output; ``color`` also switches on symbols."""

    def __init__(self, stream: TextIO, *, color: bool) -> None:
        self.writer = LineWriter(stream)
        self.color = color
        self._prefix_colors: dict[str, str] = {}

    def paint(self, text: str, *codes: str) -> str:
        return f"{''.join(codes)}{text}{_RESET}" if self.color and codes else text

    def prefix(self, label: str) -> str:
        color = self._prefix_colors.setdefault(
            label, _PREFIX_COLORS[len(self._prefix_colors) % len(_PREFIX_COLORS)]
        )
        return self.paint(f"[{label}]", color)

    def result_word(self, result: str) -> str:
        word = result.capitalize()
        if not self.color:
            return word
        return self.paint(f"{_SYMBOLS.get(result, '')} {word}", _RESULT_COLORS.get(result, ""))

    def job_started(self, label: str, time: datetime) -> None:
        symbol = "🚀 " if self.color else ""
        self.writer.write([f"{self.prefix(label)} {symbol}Start job"])

    def job_sink(self, label: str, step_names: Sequence[str]) -> JobSink:
        return TerminalJobSink(self, label, step_names)

    def message(self, label: str, text: str, *, error: bool = False) -> None:
        prefix = self.prefix(label)
        style = (_RED,) if error else ()
        self.writer.write([f"{prefix} {self.paint(line, *style)}" for line in text.split("\n")])

    def job_finished(self, label: str, result: str, duration: float) -> None:
        symbol = "🏁 " if self.color else ""
        self.writer.write(
            [
                f"{self.prefix(label)} {symbol}Job {self.result_word(result)} "
                f"[{format_duration(duration)}]"
            ]
        )

    def summary(self, jobs: Sequence[JobSummary], result: str, exit_code: int) -> None:
        if not jobs:
            self.writer.write(["No job ran."])
            return
        width = max(len("Job"), *(len(job.label) for job in jobs))
        lines = ["", self.paint("Summary", _BOLD), f"{'Job':<{width}}  {'Result':<10}  Duration"]
        for job in jobs:
            word = job.result.capitalize()
            padded = f"{word:<10}"
            if self.color:
                padded = self.paint(padded, _RESULT_COLORS.get(job.result, ""))
            lines.append(f"{job.label:<{width}}  {padded}  {format_duration(job.duration)}")
        lines.append(f"Result: {self.result_word(result)}")
        self.writer.write(lines)


class TerminalJobSink:
    """Renders one job's rows and step transitions for a terminal."""

    def __init__(self, output: TerminalOutput, label: str, step_names: Sequence[str]) -> None:
        self.output = output
        self.label = label
        self.step_names = list(step_names)
        self._step: int | None = None
        self._started: dict[int, datetime] = {}
        self._in_group = False

    def _name(self, index: int) -> str:
        return self.step_names[index] if index < len(self.step_names) else f"step {index + 1}"

    async def rows(self, contents: Sequence[str], time: datetime) -> None:
        out = self.output
        head = (
            f"{out.prefix(self.label)}   | "
            if self._step is not None
            else (f"{out.prefix(self.label)}   ")
        )
        lines: list[str] = []
        for content in contents:
            lines += [f"{head}{text}" for text in self._render(content)]
        out.writer.write(lines)

    def _render(self, content: str) -> list[str]:
        """The display lines of one row (a decoded command payload may span several)."""
        out = self.output
        indent = "  " if self._in_group else ""
        match = _COMMAND.match(content)
        if match is None:
            return [f"{indent}{content}"]
        bracket = match.group(3) is not None
        name = match.group(3) if bracket else match.group(1)
        payload = _unescape(match.group(4) if bracket else match.group(2), bracket)
        texts = payload.replace("\r\n", "\n").split("\n")
        if name == "group":
            self._in_group = True
            marker = "▼ " if out.color else "> "
            return [out.paint(f"{marker}{texts[0]}", _BOLD), *texts[1:]]
        if name == "endgroup":
            self._in_group = False
            return []
        color = _ANNOTATIONS.get(name)
        if color is None:
            return [f"{indent}{content}"]
        first = f"{name.capitalize()}: {texts[0]}"
        return [out.paint(f"{indent}{text}", color) for text in [first, *texts[1:]]]

    def step_started(self, index: int, time: datetime) -> None:
        self._step = index
        self._in_group = False
        self._started[index] = time
        mark = "⭐" if self.output.color else "Step:"
        self.output.writer.write([f"{self.output.prefix(self.label)} {mark} {self._name(index)}"])

    def step_finished(self, index: int, outcome: Conclusion, time: datetime) -> None:
        started = self._started.pop(index, None)
        self._step = None
        self._in_group = False
        took = "" if started is None else f" [{format_duration((time - started).total_seconds())}]"
        self.output.writer.write(
            [
                f"{self.output.prefix(self.label)}   "
                f"{self.output.result_word(outcome.value)} - {self._name(index)}{took}"
            ]
        )


# --- JSON lines -------------------------------------------------------------------------


class JsonOutput:
    """One JSON object per line (shape in the module docstring)."""

    def __init__(self, stream: TextIO) -> None:
        self.writer = LineWriter(stream)

    def emit(self, kind: str, **fields: Any) -> None:
        self.writer.write([json.dumps({"type": kind, **fields}, ensure_ascii=False)])

    def job_started(self, label: str, time: datetime) -> None:
        self.emit("job_started", job=label, time=time.isoformat())

    def job_sink(self, label: str, step_names: Sequence[str]) -> JobSink:
        return JsonJobSink(self, label, step_names)

    def message(self, label: str, text: str, *, error: bool = False) -> None:
        self.emit("message", job=label, level="error" if error else "info", text=text)

    def job_finished(self, label: str, result: str, duration: float) -> None:
        self.emit("job_finished", job=label, result=result, duration=round(duration, 6))

    def summary(self, jobs: Sequence[JobSummary], result: str, exit_code: int) -> None:
        self.emit(
            "summary",
            result=result,
            exit_code=exit_code,
            jobs=[
                {
                    "job": job.label,
                    "workflow": job.workflow,
                    "job_id": job.job_id,
                    "result": job.result,
                    "duration": round(job.duration, 6),
                }
                for job in jobs
            ],
        )


class JsonJobSink:
    """One job's rows and step transitions as JSON lines."""

    def __init__(self, output: JsonOutput, label: str, step_names: Sequence[str]) -> None:
        self.output = output
        self.label = label
        self.step_names = list(step_names)
        self._step: int | None = None
        self._started: dict[int, datetime] = {}

    def _name(self, index: int) -> str:
        return self.step_names[index] if index < len(self.step_names) else f"step {index + 1}"

    async def rows(self, contents: Sequence[str], time: datetime) -> None:
        stamp = time.isoformat()
        self.output.writer.write(
            [
                json.dumps(
                    {
                        "type": "row",
                        "job": self.label,
                        "step": self._step,
                        "time": stamp,
                        "content": content,
                    },
                    ensure_ascii=False,
                )
                for content in contents
            ]
        )

    def step_started(self, index: int, time: datetime) -> None:
        self._step = index
        self._started[index] = time
        self.output.emit(
            "step_started",
            job=self.label,
            step=index,
            name=self._name(index),
            time=time.isoformat(),
        )

    def step_finished(self, index: int, outcome: Conclusion, time: datetime) -> None:
        started = self._started.pop(index, None)
        self._step = None
        self.output.emit(
            "step_finished",
            job=self.label,
            step=index,
            name=self._name(index),
            result=outcome.value,
            time=time.isoformat(),
            duration=None if started is None else round((time - started).total_seconds(), 6),
        )
