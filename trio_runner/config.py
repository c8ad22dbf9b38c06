"""The configuration file (``config.yaml``): typed sections, loading, validation, defaults.

The sections and keys are act_runner's, so an act_runner configuration file works
unchanged. Durations use Go's syntax (``2s``, ``1h30m``, ``500ms``) and are held as float
seconds; sizes (``10GB``, ``512MiB``, plain bytes) are held as int bytes. Unknown keys,
wrong types and bad values are :class:`ConfigError` naming the key path and the file
line. Without a file every key has its default.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final, get_args, get_origin, get_type_hints

import msgspec
import yaml

from trio_runner.errors import ConfigError

log = logging.getLogger(__name__)


class Secret(str):
    """A string that keeps its value out of ``repr`` (and so out of logged structures)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


class _Kind:
    """Marker in ``Annotated`` types telling the loader how to read a scalar."""

    def __init__(self, name: str) -> None:
        self.name = name


_DURATION: Final = _Kind("duration")
_SIZE: Final = _Kind("size")
_PORT: Final = _Kind("port")

#: A duration in seconds, written as a Go duration (``30s``, ``1h30m``).
Seconds = Annotated[float, _DURATION]
#: A byte count, written as ``10GB``, ``512MiB`` or plain bytes (binary multiples).
Bytes = Annotated[int, _SIZE]
#: A TCP port, 0-65535.
Port = Annotated[int, _PORT]

#: The image a job runs in when its runs-on matches none of the runner's labels.
DEFAULT_IMAGE: Final = "docker.gitea.com/runner-images:ubuntu-latest"
#: Upper bound of every call to Gitea, and therefore of ``runner.fetch_timeout``.
REQUEST_TIMEOUT: Final = 60.0
TOOL_CACHE_MODES: Final = ("none", "shared")
LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")

_HOUR: Final = 3600.0
_GIB: Final = 1024**3


class _Section(msgspec.Struct, kw_only=True):
    """Common options of every configuration section."""


class LogJobConfig(_Section):
    dir: str = ""
    retention: Seconds = 168 * _HOUR
    max_size: Bytes = _GIB


class LogConfig(_Section):
    level: str = "info"
    job_level: str = "info"
    job: LogJobConfig = msgspec.field(default_factory=LogJobConfig)


class HooksConfig(_Section):
    job_started: str = ""
    job_completed: str = ""


class RunnerConfig(_Section):
    file: str = ".runner"
    capacity: int = 1
    envs: dict[str, str] = msgspec.field(default_factory=dict)
    env_file: str = ""
    timeout: Seconds = 3 * _HOUR
    shutdown_timeout: Seconds = 0.0
    insecure: bool = False
    fetch_timeout: Seconds = 5.0
    fetch_interval: Seconds = 2.0
    fetch_interval_max: Seconds = 5.0
    workdir_cleanup_age: Seconds = 24 * _HOUR
    idle_cleanup_interval: Seconds = 600.0
    log_report_interval: Seconds = 5.0
    log_report_max_latency: Seconds = 3.0
    log_report_batch_size: int = 100
    state_report_interval: Seconds = 5.0
    report_close_timeout: Seconds = 10.0
    labels: list[str] = msgspec.field(default_factory=list)
    github_mirror: str = ""
    action_shallow_clone: bool = True
    set_act_env: bool = True
    patch_actions: bool = True
    allocate_pty: bool = False
    default_image: str = DEFAULT_IMAGE
    tool_cache_mode: str = "none"
    post_task_script: str = ""
    post_task_script_timeout: Seconds = 300.0
    hooks: HooksConfig = msgspec.field(default_factory=HooksConfig)


class CacheConfig(_Section):
    enabled: bool = True
    dir: str = ""
    host: str = ""
    port: Port = 0
    external_server: str = ""
    external_secret: str = Secret("")
    external_secret_file: str = ""
    offline_mode: bool = False
    v2: bool = True
    retention: Seconds = 168 * _HOUR
    repo_size_limit: Bytes = 10 * _GIB
    size_limit: Bytes = 0
    sweep_interval: Seconds = _HOUR


class NetworkCreateOptions(_Section):
    enable_ipv4: bool | None = None
    enable_ipv6: bool | None = None


class ContainerConfig(_Section):
    network: str = ""
    network_create_options: NetworkCreateOptions = msgspec.field(
        default_factory=NetworkCreateOptions
    )
    #: Deprecated spelling of ``network`` (``bridge`` meant "create one per job").
    network_mode: str = ""
    #: Deprecated spelling of ``network_create_options.enable_ipv6``.
    enable_ipv6: bool | None = None
    privileged: bool = False
    options: str = ""
    #: Without a leading ``/``: the job workspace is ``/<workdir_parent>/<owner>/<repo>``.
    workdir_parent: str = "workspace"
    valid_volumes: list[str] = msgspec.field(default_factory=list)
    docker_host: str = ""
    force_pull: bool = False
    force_rebuild: bool = False
    require_docker: bool = False
    docker_timeout: Seconds = 0.0
    bind_workdir: bool = False
    #: Negative: do not wait for service health checks.
    service_ready_timeout: Seconds = 300.0


class HostConfig(_Section):
    workdir_parent: str = ""


class HealthCheckConfig(_Section):
    enabled: bool = False
    min_free_disk_space_mb: int = 1024
    script: str = ""
    interval: Seconds = 30.0
    timeout: Seconds = 10.0


class MetricsConfig(_Section):
    enabled: bool = False
    addr: str = "127.0.0.1:9101"
    readiness_grace: Seconds = 30.0


class Config(_Section):
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    runner: RunnerConfig = msgspec.field(default_factory=RunnerConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    container: ContainerConfig = msgspec.field(default_factory=ContainerConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    health_check: HealthCheckConfig = msgspec.field(default_factory=HealthCheckConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)


#: Keys act_runner knows that this runner deliberately does not implement: an error
#: beats silently running with a different behaviour than the file asks for.
_UNSUPPORTED: Final = {
    "cache.s3": "cache.s3 is not supported; use cache.dir or cache.external_server",
}

_EVICTION_KEYS: Final = ("retention", "repo_size_limit", "size_limit", "sweep_interval")


# Scalar syntaxes


_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both the micro sign and the Greek mu
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``300ms``, ``-1.5h``, ``2h45m``); ``0`` needs no unit."""
    rest = text.strip()
    sign = -1.0 if rest.startswith("-") else 1.0
    rest = rest[1:] if rest[:1] in ("+", "-") else rest
    if rest == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(rest) or pos == 0:
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    return sign * total


def parse_size(text: str) -> int:
    """Bytes in ``10GB``, ``512mb``, ``1.5g``, ``1TiB`` or a plain number (binary units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 10GB, 512MB or a plain byte count")
    power = " kmgtp".index(match[2].lower()) if match[2] else 0
    return int(float(match[1]) * 1024**power)


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Variables of a dotenv file: ``KEY=value`` lines, ``export``, quotes, ``#`` comments.

    Variable references (``$OTHER``) are kept literally.
    """
    result: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = _split_assignment(line)
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", key):
            raise ConfigError(f"{path}:{number}: expected KEY=value")
        result[key] = _env_value(value.strip(), f"{path}:{number}")
    return result


def _split_assignment(line: str) -> tuple[str, str, str]:
    eq, colon = line.find("="), line.find(":")
    cut = min(i for i in (eq, colon) if i >= 0) if max(eq, colon) >= 0 else -1
    if cut < 0:
        return line, "", ""
    return line[:cut].strip(), line[cut], line[cut + 1 :]


def _env_value(value: str, where: str) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        while quote == '"' and end > 0 and value[end - 1] == "\\":
            end = value.find(quote, end + 1)
        if end < 0:
            raise ConfigError(f"{where}: unterminated {quote} quote")
        inner = value[1:end]
        if quote == "'":
            return inner
        escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
        return re.sub(r"\\(.)", lambda m: escapes.get(m[1], "\\" + m[1]), inner)
    comment = re.search(r"\s#", value)
    return value[: comment.start()] if comment else value


# Loading


_CONSTRUCTOR: Final = yaml.constructor.SafeConstructor()


class _Unset:
    """A YAML null: keep the key's default."""


_UNSET: Final = _Unset()


@cache
def _hints(cls: type[_Section]) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


class _Loader:
    """Turns the composed YAML node tree into sections, remembering where each key was."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}

    def error(self, path: str, message: str, line: int | None = None) -> ConfigError:
        line = line if line is not None else self.lines.get(path)
        where = f"{self.source}:{line}" if line is not None else self.source
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def section(self, cls: type[_Section], node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(path, f"expected a mapping of keys, got {_describe(node)}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            key_path = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key_path in _UNSUPPORTED:
                raise self.error(key_path, _UNSUPPORTED[key_path], line)
            if key not in hints:
                known = ", ".join(hints)
                raise self.error(key_path, f"unknown key (known keys here: {known})", line)
            if key_path in self.lines:
                raise self.error(key_path, "key given twice", line)
            self.lines[key_path] = line
            value = self.value(hints[key], value_node, key_path)
            if value is not _UNSET:
                values[key] = value
        return cls(**values)

    def value(self, hint: Any, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return _UNSET
        kind: _Kind | None = None
        if get_origin(hint) is Annotated:
            hint, kind = get_args(hint)[0], get_args(hint)[1]
        args = get_args(hint)
        if args and type(None) in args:
            (hint,) = (a for a in args if a is not type(None))
        if isinstance(hint, type) and issubclass(hint, _Section):
            return self.section(hint, node, path)
        origin = get_origin(hint)
        if origin is list:
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(path, f"expected a list, got {_describe(node)}")
            return [self.text(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if origin is dict:
            if not isinstance(node, yaml.MappingNode):
                raise self.error(path, f"expected a mapping, got {_describe(node)}")
            return {self.text(k, path): self.text(v, f"{path}.{k.value}") for k, v in node.value}
        if hint is bool:
            return self.boolean(node, path)
        if kind is _DURATION:
            return self.parsed(node, path, parse_duration, int_allowed=False)
        if kind is _SIZE:
            return self.parsed(node, path, parse_size, int_allowed=True)
        if hint is int:
            number = self.integer(node, path)
            if kind is _PORT and not 0 <= number <= 65535:
                raise self.error(path, f"{number} is not a port (0-65535)", _line(node))
            return number
        return self.text(node, path)

    def text(self, node: yaml.Node, path: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(path, f"expected a string, got {_describe(node)}", _line(node))
        return str(node.value)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return str(node.value).lower() in ("true", "yes", "on", "y")
        raise self.error(path, f"expected true or false, got {_describe(node)}", _line(node))

    def integer(self, node: yaml.Node, path: str) -> int:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            value: int = _CONSTRUCTOR.construct_yaml_int(node)
            return value
        raise self.error(path, f"expected a whole number, got {_describe(node)}", _line(node))

    def parsed(self, node: yaml.Node, path: str, parse: Any, *, int_allowed: bool) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(path, f"expected a single value, got {_describe(node)}", _line(node))
        text = str(node.value)
        if node.tag == "tag:yaml.org,2002:int" and not int_allowed and text.strip() != "0":
            raise self.error(
                path, f"{text} has no unit; write a duration such as {text}s", _line(node)
            )
        try:
            return parse(text)
        except ValueError as exc:
            raise self.error(path, str(exc), _line(node)) from None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The configuration in ``path`` (defaults when None), validated and with defaults filled."""
    if path is None:
        loader = _Loader("<defaults>")
        config = Config()
    else:
        loader = _Loader(str(path))
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        config = _parse(loader, text)
    _apply_fixups(config, loader)
    return config


def _parse(loader: _Loader, text: str) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{loader.source}{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{loader.source}: invalid YAML: {exc}") from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        return Config()
    config: Config = loader.section(Config, root, "")
    return config


def _home(key: str, loader: _Loader) -> Path:
    try:
        return Path.home()
    except RuntimeError:
        raise loader.error(key, "is unset and the home directory is unknown") from None


def _apply_fixups(cfg: Config, loader: _Loader) -> None:
    """act_runner's defaults for unset or out-of-range values, and cross-key checks."""
    runner = cfg.runner
    if runner.env_file and Path(runner.env_file).is_file():
        runner.envs = {**runner.envs, **read_env_file(runner.env_file)}
    for key in ("level", "job_level"):
        level = getattr(cfg.log, key) or "info"
        if level.lower() not in LOG_LEVELS:
            raise loader.error(f"log.{key}", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        setattr(cfg.log, key, level.lower())

    runner.file = runner.file or ".runner"
    runner.capacity = max(runner.capacity, 1)
    _positive(runner, "timeout", 3 * _HOUR)
    _positive(runner, "fetch_timeout", 5.0)
    _positive(runner, "fetch_interval", 2.0)
    _positive(runner, "fetch_interval_max", 5.0)
    _positive(runner, "log_report_interval", 5.0)
    _positive(runner, "log_report_max_latency", 3.0)
    _positive(runner, "state_report_interval", 5.0)
    _positive(runner, "report_close_timeout", 10.0)
    _positive(runner, "post_task_script_timeout", 300.0)
    if runner.log_report_batch_size <= 0:
        runner.log_report_batch_size = 100
    runner.default_image = runner.default_image or DEFAULT_IMAGE
    runner.tool_cache_mode = runner.tool_cache_mode or "none"
    if runner.tool_cache_mode not in TOOL_CACHE_MODES:
        raise loader.error(
            "runner.tool_cache_mode",
            f"{runner.tool_cache_mode!r} is not one of {', '.join(TOOL_CACHE_MODES)}",
        )
    if runner.tool_cache_mode == "shared" and runner.capacity > 1:
        log.warning(
            "runner.tool_cache_mode 'shared' with capacity %d: two jobs writing the same "
            "tool version at once corrupt it",
            runner.capacity,
        )
    if runner.fetch_timeout > REQUEST_TIMEOUT:
        log.warning("runner.fetch_timeout exceeds %gs, capping it", REQUEST_TIMEOUT)
        runner.fetch_timeout = REQUEST_TIMEOUT
    if runner.fetch_interval_max < runner.fetch_interval:
        log.warning("runner.fetch_interval_max is less than fetch_interval, raising it")
        runner.fetch_interval_max = runner.fetch_interval
    if runner.log_report_max_latency >= runner.log_report_interval:
        log.warning(
            "runner.log_report_max_latency >= log_report_interval: the max-latency timer "
            "never fires before the periodic flush"
        )
    for hook, variable in (
        ("job_started", "ACTIONS_RUNNER_HOOK_JOB_STARTED"),
        ("job_completed", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"),
    ):
        if not getattr(runner.hooks, hook):
            setattr(runner.hooks, hook, os.environ.get(variable, ""))

    _fix_cache(cfg.cache, loader)
    _fix_container(cfg.container)
    if not cfg.host.workdir_parent:
        cfg.host.workdir_parent = str(_home("host.workdir_parent", loader) / ".cache" / "act")

    health = cfg.health_check
    if health.min_free_disk_space_mb <= 0:
        health.min_free_disk_space_mb = 1024
    _positive(health, "interval", 30.0)
    _positive(health, "timeout", 10.0)
    cfg.metrics.addr = cfg.metrics.addr or "127.0.0.1:9101"
    _positive(cfg.metrics, "readiness_grace", 30.0)


def _positive(section: _Section, key: str, default: float) -> None:
    if getattr(section, key) <= 0:
        setattr(section, key, default)


def _fix_cache(cache: CacheConfig, loader: _Loader) -> None:
    # Resolved even when disabled: the cache-server command reads the same key.
    if cache.external_secret_file:
        if cache.external_secret:
            raise loader.error(
                "cache.external_secret_file",
                "cache.external_secret and cache.external_secret_file are both set; "
                "configure only one of them",
            )
        try:
            secret = Path(cache.external_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise loader.error(
                "cache.external_secret_file",
                f"cannot read {cache.external_secret_file}: {reason}",
            ) from None
        if not secret:
            raise loader.error(
                "cache.external_secret_file",
                f"{cache.external_secret_file} contains no secret",
            )
        cache.external_secret = secret
    cache.external_secret = Secret(cache.external_secret)
    if cache.sweep_interval <= 0:
        cache.sweep_interval = _HOUR
    if not cache.dir:
        try:
            cache.dir = str(Path.home() / ".cache" / "actcache")
        except RuntimeError:
            if cache.enabled:
                raise loader.error(
                    "cache.dir", "is unset and the home directory is unknown"
                ) from None
    if not cache.enabled:
        return
    if cache.external_server:
        if not cache.external_secret:
            raise loader.error(
                "cache.external_server",
                "cache.external_server is set but no shared secret is configured; set "
                "cache.external_secret (or cache.external_secret_file) to the value the "
                "cache server uses",
            )
        defaults = CacheConfig()
        changed = [k for k in _EVICTION_KEYS if getattr(cache, k) != getattr(defaults, k)]
        if changed:
            log.warning(
                "cache.%s ignored: eviction settings belong on the cache server",
                ", cache.".join(changed),
            )
    elif cache.external_secret:
        written = "external_secret_file" if cache.external_secret_file else "external_secret"
        log.warning("cache.%s is ignored: the embedded cache server needs no secret", written)


def _fix_container(container: ContainerConfig) -> None:
    container.workdir_parent = container.workdir_parent.lstrip("/") or "workspace"
    if container.service_ready_timeout == 0:
        container.service_ready_timeout = 300.0
    if container.network_mode and not container.network:
        log.warning("container.network_mode is deprecated, use container.network instead")
        # "bridge" used to mean "create a network per job", which an empty network does.
        if container.network_mode != "bridge":
            container.network = container.network_mode
    options = container.network_create_options
    if container.enable_ipv6 is not None and options.enable_ipv6 is None:
        log.warning(
            "container.enable_ipv6 is deprecated, use "
            "container.network_create_options.enable_ipv6 instead"
        )
        options.enable_ipv6 = container.enable_ipv6


# Environment


class EnvOverrides(msgspec.Struct, frozen=True, kw_only=True):
    """Settings the environment supplies, as act_runner's container image honours them."""

    instance_url: str = ""
    registration_token: str = Secret("")
    runner_name: str = ""
    labels: tuple[str, ...] = ()
    ephemeral: bool = False
    once: bool = False


def env_overrides(environ: Mapping[str, str] | None = None) -> EnvOverrides:
    """Read ``GITEA_INSTANCE_URL``, ``GITEA_RUNNER_REGISTRATION_TOKEN`` (or ``..._FILE``),
    ``GITEA_RUNNER_NAME``, ``GITEA_RUNNER_LABELS`` (comma-separated),
    ``GITEA_RUNNER_EPHEMERAL`` and ``GITEA_RUNNER_ONCE`` (any non-empty value)."""
    env = os.environ if environ is None else environ
    token = env.get("GITEA_RUNNER_REGISTRATION_TOKEN", "").strip()
    token_file = env.get("GITEA_RUNNER_REGISTRATION_TOKEN_FILE", "")
    if not token and token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(
                f"GITEA_RUNNER_REGISTRATION_TOKEN_FILE: cannot read {token_file}"
            ) from None
    labels = tuple(p.strip() for p in env.get("GITEA_RUNNER_LABELS", "").split(",") if p.strip())
    return EnvOverrides(
        instance_url=env.get("GITEA_INSTANCE_URL", "").strip(),
        registration_token=Secret(token),
        runner_name=env.get("GITEA_RUNNER_NAME", "").strip(),
        labels=labels,
        ephemeral=bool(env.get("GITEA_RUNNER_EPHEMERAL")),
        once=bool(env.get("GITEA_RUNNER_ONCE")),
    )
