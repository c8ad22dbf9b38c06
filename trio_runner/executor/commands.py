"""Workflow commands in step output and the environment files written by a step phase.

:class:`CommandProcessor` is fed each output line of one phase and answers the rows to
write for it (before masking); what the commands asked for (outputs, state, env, path,
errors that fail the phase) accumulates in its :class:`CommandResult`. The parsers of
``GITHUB_ENV``/``GITHUB_OUTPUT``/``GITHUB_STATE``/``GITHUB_PATH`` contents and the
escaping of command rows the runner writes itself live here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from trio_runner.masking import Masker, escape_command_data

__all__ = [
    "Command",
    "CommandProcessor",
    "CommandResult",
    "FileCommandError",
    "accept_env",
    "error_row",
    "escape_data",
    "escape_property",
    "group_row",
    "is_true",
    "parse_command",
    "parse_key_value_file",
    "parse_path_file",
    "prepend_paths",
    "warning_row",
]

KNOWN_COMMANDS = frozenset(
    {
        "set-output",
        "save-state",
        "add-mask",
        "set-env",
        "add-path",
        "debug",
        "notice",
        "warning",
        "error",
        "group",
        "endgroup",
        "stop-commands",
        "echo",
        "add-matcher",
        "remove-matcher",
    }
)
_ANNOTATIONS = frozenset({"notice", "warning", "error"})
_VERBATIM = frozenset({"group", "endgroup", "echo", "add-matcher", "remove-matcher"})
_STOP_TOKEN_MASK_MIN = 7
ENV_REFUSED = frozenset({"NODE_OPTIONS"})

# --- escaping --------------------------------------------------------------------------

escape_data = escape_command_data
"""Escape data the runner puts into a command row: ``%``, CR, LF."""


def escape_property(text: str) -> str:
    """Escape a property value the runner writes: data escaping plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_row(message: str) -> str:
    return "##[error]" + escape_data(message)


def warning_row(message: str) -> str:
    return "##[warning]" + escape_data(message)


def group_row(title: str) -> str:
    return "::group::" + escape_data(title)


def _decoder(codes: dict[str, str]) -> Callable[[str], str]:
    """A single left-to-right pass, so ``%250A`` decodes to the text ``%0A``."""
    pattern = re.compile("|".join(map(re.escape, codes)))

    def decode(text: str) -> str:
        return pattern.sub(lambda m: codes[m.group()], text) if "%" in text else text

    return decode


_DATA_CODES = {"%25": "%", "%0D": "\r", "%0A": "\n"}
_PROPERTY_CODES = {**_DATA_CODES, "%3A": ":", "%2C": ","}
_V1_CODES = {"%3B": ";", "%5D": "]"}
_decode_v2_data = _decoder(_DATA_CODES)
_decode_v2_property = _decoder(_PROPERTY_CODES)
_decode_v1_data = _decoder({**_DATA_CODES, **_V1_CODES})
_decode_v1_property = _decoder({**_PROPERTY_CODES, **_V1_CODES})


# --- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed workflow command; ``name`` and property keys are lower-case."""

    name: str
    properties: dict[str, str]
    data: str
    raw_data: str
    v1: bool


def _properties(text: str, separator: str, decode: Callable[[str], str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in text.split(separator):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key and value:
            result[key] = decode(value)
    return result


def _parse_v2(line: str, known_only: bool) -> Command | None:
    text = line.lstrip()
    if not text.startswith("::"):
        return None
    end = text.find("::", 2)
    if end < 0:
        return None
    name, _, props = text[2:end].partition(" ")
    name = name.lower()
    if known_only and name not in KNOWN_COMMANDS:
        return None
    raw = text[end + 2 :]
    return Command(
        name, _properties(props, ",", _decode_v2_property), _decode_v2_data(raw), raw, False
    )


def _parse_v1(line: str, known_only: bool) -> Command | None:
    start = line.find("##[")
    if start < 0:
        return None
    end = line.find("]", start + 3)
    if end < 0:
        return None
    name, _, props = line[start + 3 : end].partition(" ")
    name = name.lower()
    if known_only and name not in KNOWN_COMMANDS:
        return None
    raw = line[end + 1 :]
    return Command(
        name, _properties(props, ";", _decode_v1_property), _decode_v1_data(raw), raw, True
    )


def parse_command(line: str, *, known_only: bool = True) -> Command | None:
    """The command on ``line`` (``::name props::data`` or ``##[name props]data``), if any."""
    return _parse_v2(line, known_only) or _parse_v1(line, known_only)


def is_true(value: str | None) -> bool:
    """Whether a flag variable such as ``ACTIONS_ALLOW_UNSECURE_COMMANDS`` is set to true."""
    return value is not None and value.strip().lower() == "true"


# --- processing ------------------------------------------------------------------------


@dataclass
class CommandResult:
    """What the commands of one phase asked for.

    ``errors`` fail the phase when it finishes (``continue-on-error`` applies); each was
    already written as an ``##[error]`` row. ``path`` lists ``add-path`` directories in
    the order they were added (apply with :func:`prepend_paths`).
    """

    outputs: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def _disabled_message(command: str, replacement: str) -> str:
    return (
        f"The `{command}` command is disabled. Use the {replacement} environment file "
        "instead, or set the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to "
        "`true` to re-enable it."
    )


class CommandProcessor:
    """Workflow-command handling for one step phase (a new phase starts unstopped)."""

    def __init__(
        self,
        masker: Masker,
        *,
        debug: bool = False,
        allow_unsecure_commands: bool = False,
        allow_unsecure_stop_tokens: bool = False,
    ) -> None:
        self.masker = masker
        self.debug = debug
        self.allow_unsecure_commands = allow_unsecure_commands
        self.allow_unsecure_stop_tokens = allow_unsecure_stop_tokens
        self.result = CommandResult()
        self._stop_token: str | None = None

    def feed(self, line: str) -> list[str]:
        """The rows to write for one output line (not yet masked); may be empty."""
        if "::" not in line and "##[" not in line:
            return [line]
        if self._stop_token is not None:
            command = parse_command(line, known_only=False)
            if command is not None and command.name == self._stop_token:
                self._stop_token = None
                return []
            return [line]
        command = parse_command(line)
        if command is None:
            return [line]
        name = command.name
        if name in _VERBATIM:
            return [line]
        if name in _ANNOTATIONS:
            return [self._annotation(command)]
        if name == "debug":
            return [line] if self.debug else []
        if name == "add-mask":
            if not command.data.strip():
                return [
                    warning_row("Can't add secret mask for empty string in ##[add-mask] command.")
                ]
            self.masker.add(command.data)
            return []
        if name == "stop-commands":
            return self._stop_commands(command.data)
        if name in ("set-output", "save-state"):
            target = self.result.outputs if name == "set-output" else self.result.state
            return [line, *self._set_named(name, command, target)]
        if name == "set-env":
            return [line, *self._set_env(command)]
        return [line, *self._add_path(command)]

    def _fail(self, message: str) -> list[str]:
        self.result.errors.append(message)
        return [error_row(message)]

    def _set_named(self, name: str, command: Command, target: dict[str, str]) -> list[str]:
        key = command.properties.get("name")
        if not key:
            return self._fail(f"Required field 'name' is missing in ##[{name}] command.")
        target[key] = command.data
        return []

    def _set_env(self, command: Command) -> list[str]:
        if not self.allow_unsecure_commands:
            return self._fail(_disabled_message("set-env", "GITHUB_ENV"))
        key = command.properties.get("name")
        if key in ENV_REFUSED:
            return [
                error_row(f"Can't update {key} environment variable using ::set-env:: command.")
            ]
        return self._set_named("set-env", command, self.result.env)

    def _add_path(self, command: Command) -> list[str]:
        if not self.allow_unsecure_commands:
            return self._fail(_disabled_message("add-path", "GITHUB_PATH"))
        if command.data:
            self.result.path.append(command.data)
        return []

    def _stop_commands(self, token: str) -> list[str]:
        lowered = token.lower()
        invalid = not token or lowered in KNOWN_COMMANDS or lowered == "pause-logging"
        if invalid and not self.allow_unsecure_stop_tokens:
            return self._fail(
                f"Invalid stop-commands token '{token}': it must not be empty, a command "
                "name or 'pause-logging'. Set ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS to "
                "true to allow it."
            )
        if len(token) >= _STOP_TOKEN_MASK_MIN:
            self.masker.add(token)
        self._stop_token = lowered
        return []

    @staticmethod
    def _annotation(command: Command) -> str:
        """Fold file, position and title into the message; Gitea has no annotation store."""
        props = command.properties
        prefix = ""
        if file := props.get("file"):
            prefix = file
            if position := props.get("line"):
                prefix += f":{position}"
                if column := props.get("col") or props.get("column"):
                    prefix += f":{column}"
            prefix += ": "
        if title := props.get("title"):
            prefix += f"{title}: "
        # Always in the canonical form: Gitea's UI only knows `::warning::` at column 0.
        head = f"##[{command.name}]" if command.v1 else f"::{command.name}::"
        return head + escape_data(prefix) + command.raw_data


# --- environment files -----------------------------------------------------------------


class FileCommandError(Exception):
    """A malformed environment file; fails the phase. ``detail`` says what is wrong;
    ``pairs`` holds what the file set before the bad line, which still takes effect
    (GitHub's runner applies each pair as it reads it)."""

    def __init__(self, command: str, detail: str, pairs: dict[str, str]) -> None:
        self.command = command
        self.detail = detail
        self.pairs = pairs
        super().__init__(f"Unable to process file command '{command}' successfully.")

    def rows(self) -> list[str]:
        """The two error rows to write."""
        return [error_row(str(self)), error_row(self.detail)]


def _decode_file(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    return data.decode("utf-8-sig", "replace")


def parse_key_value_file(data: bytes, command: str) -> dict[str, str]:
    """``NAME=VALUE`` lines and ``NAME<<DELIM`` … ``DELIM`` blocks; later names win.

    ``command`` (``env``, ``output``, ``state``) names the file in errors.
    """
    lines = _decode_file(data).split("\n")
    result: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals > 0 and (heredoc < 0 or equals < heredoc):
            result[line[:equals]] = line[equals + 1 :]
            continue
        if heredoc > 0 and (equals < 0 or heredoc < equals) and len(line) > heredoc + 2:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            try:
                end = lines.index(delimiter, index)
            except ValueError:
                raise FileCommandError(
                    command, f"Invalid value. Matching delimiter not found '{delimiter}'", result
                ) from None
            result[name] = "\n".join(lines[index:end])
            index = end + 1
            continue
        raise FileCommandError(command, f"Invalid format '{line}'", result)
    return result


def parse_path_file(data: bytes) -> list[str]:
    """``GITHUB_PATH``: one directory per non-empty line, in file order."""
    lines = (line.removesuffix("\r") for line in _decode_file(data).split("\n"))
    return [line for line in lines if line]


def accept_env(pairs: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Split ``GITHUB_ENV`` pairs into the accepted ones and error rows for refused names."""
    accepted = {name: value for name, value in pairs.items() if name not in ENV_REFUSED}
    rows = [
        error_row(f"Can't store {name} output parameter using '$GITHUB_ENV' command.")
        for name in pairs
        if name in ENV_REFUSED
    ]
    return accepted, rows


def prepend_paths(extra: Iterable[str], additions: Iterable[str]) -> list[str]:
    """The extra ``PATH`` entries after ``additions``: each moves to the front, in order."""
    result = list(extra)
    for entry in additions:
        if entry in result:
            result.remove(entry)
        result.insert(0, entry)
    return result
