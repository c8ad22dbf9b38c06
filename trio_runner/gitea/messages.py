"""Wire messages of ping.v1 and runner.v1 as msgspec Structs, in proto3 JSON form.

Field names follow the proto JSON mapping (lowerCamelCase), defaults are omitted when
encoding, unknown answer fields are ignored, and int64 fields are decoded from the
decimal strings Gitea sends (decode with ``strict=False``). Enum fields accept a name
or, for values Gitea casts from its own numbers, a bare integer.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec


class Result(enum.StrEnum):
    """runner.v1.Result, by JSON name."""

    UNSPECIFIED = "RESULT_UNSPECIFIED"
    SUCCESS = "RESULT_SUCCESS"
    FAILURE = "RESULT_FAILURE"
    CANCELLED = "RESULT_CANCELLED"
    SKIPPED = "RESULT_SKIPPED"

    @classmethod
    def parse(cls, value: str | int) -> Result:
        """A Result from a JSON name or number; unknown values are UNSPECIFIED."""
        if isinstance(value, int):
            members = list(cls)
            return members[value] if 0 <= value < len(members) else cls.UNSPECIFIED
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED

    @property
    def word(self) -> str:
        """The lower-case word used in contexts: success, failure, cancelled, skipped."""
        return self.value.removeprefix("RESULT_").lower()

    @classmethod
    def from_word(cls, word: str) -> Result:
        return cls.parse("RESULT_" + word.upper())


class _Message(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Common options of every wire message."""


# ping.v1


class PingRequest(_Message):
    data: str = ""


class PingResponse(_Message):
    data: str = ""


# runner.v1


class Runner(_Message):
    id: int = 0
    uuid: str = ""
    token: str = ""
    name: str = ""
    status: str | int = "RUNNER_STATUS_UNSPECIFIED"
    version: str = ""
    labels: list[str] = msgspec.field(default_factory=list)
    ephemeral: bool = False


class RegisterRequest(_Message):
    name: str = ""
    token: str = ""
    version: str = ""
    labels: list[str] = msgspec.field(default_factory=list)
    ephemeral: bool = False
    capabilities: list[str] = msgspec.field(default_factory=list)


class RegisterResponse(_Message):
    runner: Runner | None = None


class DeclareRequest(_Message):
    version: str = ""
    labels: list[str] = msgspec.field(default_factory=list)
    capabilities: list[str] = msgspec.field(default_factory=list)


class DeclareResponse(_Message):
    runner: Runner | None = None


class TaskNeed(_Message):
    outputs: dict[str, str] = msgspec.field(default_factory=dict)
    result: str | int = Result.UNSPECIFIED.value

    @property
    def result_enum(self) -> Result:
        return Result.parse(self.result)


class Task(_Message):
    id: int = 0
    workflow_payload: bytes | None = None
    context: dict[str, Any] | None = None
    secrets: dict[str, str] = msgspec.field(default_factory=dict)
    machine: str = ""
    needs: dict[str, TaskNeed] = msgspec.field(default_factory=dict)
    vars: dict[str, str] = msgspec.field(default_factory=dict)


class FetchTaskRequest(_Message):
    tasks_version: int = 0


class FetchTaskResponse(_Message):
    task: Task | None = None
    tasks_version: int = 0


class StepState(_Message):
    id: int = 0
    result: str | int = Result.UNSPECIFIED.value
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    log_index: int = 0
    log_length: int = 0


class TaskState(_Message):
    id: int = 0
    result: str | int = Result.UNSPECIFIED.value
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    steps: list[StepState] = msgspec.field(default_factory=list)

    @property
    def result_enum(self) -> Result:
        return Result.parse(self.result)


class UpdateTaskRequest(_Message):
    state: TaskState
    outputs: dict[str, str] = msgspec.field(default_factory=dict)


class UpdateTaskResponse(_Message):
    state: TaskState | None = None
    sent_outputs: list[str] = msgspec.field(default_factory=list)


class LogRow(_Message):
    time: datetime
    content: str = ""


class UpdateLogRequest(_Message):
    task_id: int = 0
    index: int = 0
    rows: list[LogRow] = msgspec.field(default_factory=list)
    no_more: bool = False


class UpdateLogResponse(_Message):
    ack_index: int = 0
