"""`docker run`-style container options, port specs and the valid_volumes policy.

``container.options`` (runner config) and ``jobs.<id>.container.options`` are command
lines of ``docker run`` flags; this module turns them into Engine API create fields
(:class:`ContainerOptions`), decides which bind/volume sources a job may mount, and parses
``[ip:][hostPort:]containerPort[/proto]`` port specs.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from trio_runner.backends.docker_api import (
    ContainerSpec,
    DeviceMapping,
    DeviceRequest,
    HealthConfig,
    Mount,
    PortBinding,
    Ulimit,
)
from trio_runner.errors import ConfigError

#: Flags that reach beyond the container; dropped unless ``container.privileged`` is set.
PRIVILEGED_FLAGS = frozenset(
    {
        "--pid",
        "--ipc",
        "--uts",
        "--cgroupns",
        "--userns",
        "--cap-add",
        "--security-opt",
        "--device",
        "--device-cgroup-rule",
        "--gpus",
        "--volumes-from",
        "--runtime",
        "--cgroup-parent",
        "--sysctl",
    }
)
_IGNORED_FLAGS = frozenset({"--name", "--network", "--net"})
_SHORT = {
    "-e": "--env",
    "-v": "--volume",
    "-u": "--user",
    "-w": "--workdir",
    "-h": "--hostname",
    "-l": "--label",
    "-p": "--publish",
    "-m": "--memory",
    "-t": "--tty",
    "-i": "--interactive",
    "-d": "--detach",
}
_BOOLEAN_FLAGS = frozenset(
    {
        "--privileged",
        "--init",
        "--no-healthcheck",
        "--read-only",
        "--rm",
        "--tty",
        "--interactive",
        "--detach",
        "--oom-kill-disable",
        "--publish-all",
    }
)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9}
_DURATION_UNITS |= {"m": 60 * 10**9, "h": 3600 * 10**9}


@dataclass
class ContainerOptions:
    """What an options string asks for, before volume policy is applied."""

    spec: ContainerSpec = field(default_factory=lambda: ContainerSpec(image=""))
    #: ``-v`` entries as written (``src:dst[:mode]`` or an anonymous ``dst``).
    volumes: list[str] = field(default_factory=list)
    #: ``--mount`` entries.
    mounts: list[Mount] = field(default_factory=list)
    #: ``--pull``: ``always``, ``missing``, ``never`` or empty.
    pull: str = ""
    #: ``-p`` entries as written.
    ports: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_options(text: str, *, privileged: bool, where: str = "options") -> ContainerOptions:
    """Parse ``docker run`` flags; ``where`` names the source in error messages."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot split {text!r}: {exc}") from None
    result = ContainerOptions()
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or word in ("-", "--"):
            raise ConfigError(f"{where}: unexpected argument {word!r}")
        flag, value = _split_flag(word)
        if flag == "--use-api-socket":
            raise ConfigError(f"{where}: --use-api-socket is not supported")
        if flag in _BOOLEAN_FLAGS:
            enabled = value is None or value.lower() in ("1", "true")
            _apply_boolean(result, flag, enabled, privileged)
            continue
        if value is None:
            if flag not in _HANDLERS and (index >= len(words) or words[index].startswith("-")):
                result.warnings.append(f"unsupported container option {flag} is ignored")
                continue
            if index >= len(words):
                raise ConfigError(f"{where}: {flag} needs a value")
            value = words[index]
            index += 1
        _apply_value(result, flag, value, privileged, where)
    return result


def merge_options(target: ContainerSpec, options: ContainerOptions) -> None:
    """Lay ``options.spec`` over ``target``: lists extend, maps update, set scalars win."""
    _merge_struct(target, options.spec)
    _merge_struct(target.host_config, options.spec.host_config)


def _merge_struct(target: msgspec.Struct, source: msgspec.Struct) -> None:
    defaults = type(source)(**_required(source))
    for name in source.__struct_fields__:
        value = getattr(source, name)
        if name == "host_config" or value == getattr(defaults, name):
            continue
        current = getattr(target, name)
        if isinstance(value, list) and isinstance(current, list):
            current.extend(value)
        elif isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        else:
            setattr(target, name, value)


def _required(struct: msgspec.Struct) -> dict[str, object]:
    fields = msgspec.structs.fields(struct)
    return {
        f.name: getattr(struct, f.name)
        for f in fields
        if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
    }


def _split_flag(word: str) -> tuple[str, str | None]:
    if word.startswith("--"):
        flag, sep, value = word.partition("=")
        return flag, value if sep else None
    short, rest = word[:2], word[2:]
    flag = _SHORT.get(short, short)
    if not rest:
        return flag, None
    return flag, rest.removeprefix("=")


def _apply_boolean(result: ContainerOptions, flag: str, enabled: bool, privileged: bool) -> None:
    host = result.spec.host_config
    if flag == "--privileged":
        if enabled and not privileged:
            result.warnings.append("--privileged is ignored: the runner is not privileged")
        host.privileged = enabled and privileged
    elif flag == "--init":
        host.init = enabled
    elif flag == "--no-healthcheck":
        if enabled:
            result.spec.healthcheck = HealthConfig(test=["NONE"])
    elif flag == "--read-only":
        host.readonly_rootfs = enabled
    elif flag == "--oom-kill-disable":
        host.oom_kill_disable = enabled
    # --rm, -t, -i, -d, -P: the runner decides how its containers run.


def _apply_value(
    result: ContainerOptions, flag: str, value: str, privileged: bool, where: str
) -> None:
    if flag in _IGNORED_FLAGS:
        result.warnings.append(f"the container option {flag} is ignored")
        return
    if flag in PRIVILEGED_FLAGS and not privileged:
        result.warnings.append(
            f"the container option {flag} is ignored: the runner is not privileged"
        )
        return
    handler = _HANDLERS.get(flag)
    if handler is None:
        result.warnings.append(f"unsupported container option {flag} is ignored")
        return
    try:
        handler(result, value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {flag} {value!r}: {exc}") from None


def _health(result: ContainerOptions) -> HealthConfig:
    if result.spec.healthcheck is None:
        result.spec.healthcheck = HealthConfig()
    return result.spec.healthcheck


def _set_health_cmd(result: ContainerOptions, value: str) -> None:
    _health(result).test = ["CMD-SHELL", value]


def _set_health_duration(attr: str) -> Callable[[ContainerOptions, str], None]:
    def setter(result: ContainerOptions, value: str) -> None:
        setattr(_health(result), attr, parse_duration(value))

    return setter


def _set_health_retries(result: ContainerOptions, value: str) -> None:
    _health(result).retries = int(value)


def _env_file(result: ContainerOptions, value: str) -> None:
    try:
        lines = Path(value).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            result.spec.env.append(_env_entry(line))


def _env_entry(text: str) -> str:
    """``KEY=VALUE`` as is; a bare ``KEY`` takes the runner's value, when it has one."""
    if "=" in text:
        return text
    return f"{text}={os.environ[text]}" if text in os.environ else text


def _mount(result: ContainerOptions, value: str) -> None:
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.partition("=")
        fields[key.strip().lower()] = item if sep else "true"
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target:
        raise ValueError("a mount needs a target")
    result.mounts.append(
        Mount(
            type=fields.get("type", "volume"),
            source=fields.get("source") or fields.get("src") or "",
            target=target,
            read_only=fields.get("readonly", fields.get("ro", "false")) in ("true", "1"),
        )
    )


def _tmpfs(result: ContainerOptions, value: str) -> None:
    path, _, opts = value.partition(":")
    result.spec.host_config.tmpfs[path] = opts


def _ulimit(result: ContainerOptions, value: str) -> None:
    name, sep, limits = value.partition("=")
    if not sep:
        raise ValueError("expected name=soft[:hard]")
    soft, _, hard = limits.partition(":")
    result.spec.host_config.ulimits.append(
        Ulimit(name=name, soft=int(soft), hard=int(hard or soft))
    )


def _device(result: ContainerOptions, value: str) -> None:
    parts = value.split(":")
    host = parts[0]
    inside = parts[1] if len(parts) > 1 and not set(parts[1]) <= set("rwm") else host
    permissions = parts[-1] if len(parts) > 1 and set(parts[-1]) <= set("rwm") else "rwm"
    result.spec.host_config.devices.append(
        DeviceMapping(path_on_host=host, path_in_container=inside, cgroup_permissions=permissions)
    )


def _gpus(result: ContainerOptions, value: str) -> None:
    request = DeviceRequest(capabilities=[["gpu"]])
    for part in value.split(","):
        key, sep, item = part.partition("=")
        if not sep:
            request.count = -1 if key == "all" else int(key)
        elif key == "count":
            request.count = -1 if item == "all" else int(item)
        elif key == "device":
            request.device_i_ds.extend(item.split(";"))
        elif key == "driver":
            request.driver = item
    result.spec.host_config.device_requests.append(request)


def _cpus(result: ContainerOptions, value: str) -> None:
    result.spec.host_config.nano_cpus = round(float(value) * 1e9)


def _pull(result: ContainerOptions, value: str) -> None:
    if value not in ("always", "missing", "never"):
        raise ValueError("expected always, missing or never")
    result.pull = value


def _entrypoint(result: ContainerOptions, value: str) -> None:
    result.spec.entrypoint = [value] if value else []


def _key_value_into(attr: str) -> Callable[[ContainerOptions, str], None]:
    def setter(result: ContainerOptions, value: str) -> None:
        key, _, item = value.partition("=")
        target = result.spec.labels if attr == "labels" else result.spec.host_config.sysctls
        target[key] = item

    return setter


def _append_to(attr: str, host: bool = True) -> Callable[[ContainerOptions, str], None]:
    def setter(result: ContainerOptions, value: str) -> None:
        getattr(result.spec.host_config if host else result.spec, attr).append(value)

    return setter


def _set(attr: str, host: bool = True, convert: Callable[[str], object] = str) -> _Handler:
    def setter(result: ContainerOptions, value: str) -> None:
        setattr(result.spec.host_config if host else result.spec, attr, convert(value))

    return setter


_Handler = Callable[[ContainerOptions, str], None]

_HANDLERS: dict[str, _Handler] = {
    "--env": lambda result, value: result.spec.env.append(_env_entry(value)),
    "--env-file": _env_file,
    "--volume": lambda result, value: result.volumes.append(value),
    "--mount": _mount,
    "--publish": lambda result, value: result.ports.append(value),
    "--expose": lambda result, value: result.spec.exposed_ports.update({_port_key(value): {}}),
    "--tmpfs": _tmpfs,
    "--health-cmd": _set_health_cmd,
    "--health-interval": _set_health_duration("interval"),
    "--health-timeout": _set_health_duration("timeout"),
    "--health-start-period": _set_health_duration("start_period"),
    "--health-retries": _set_health_retries,
    "--user": _set("user", host=False),
    "--workdir": _set("working_dir", host=False),
    "--entrypoint": _entrypoint,
    "--hostname": _set("hostname", host=False),
    "--domainname": _set("domainname", host=False),
    "--mac-address": _set("mac_address", host=False),
    "--stop-signal": _set("stop_signal", host=False),
    "--add-host": _append_to("extra_hosts"),
    "--dns": _append_to("dns"),
    "--dns-search": _append_to("dns_search"),
    "--dns-option": _append_to("dns_options"),
    "--dns-opt": _append_to("dns_options"),
    "--label": _key_value_into("labels"),
    "--shm-size": _set("shm_size", convert=lambda value: parse_size(value)),
    "--memory": _set("memory", convert=lambda value: parse_size(value)),
    "--memory-swap": _set(
        "memory_swap", convert=lambda value: -1 if value == "-1" else parse_size(value)
    ),
    "--cpus": _cpus,
    "--ulimit": _ulimit,
    "--cap-add": _append_to("cap_add"),
    "--cap-drop": _append_to("cap_drop"),
    "--security-opt": _append_to("security_opt"),
    "--device": _device,
    "--device-cgroup-rule": _append_to("device_cgroup_rules"),
    "--gpus": _gpus,
    "--group-add": _append_to("group_add"),
    "--ipc": _set("ipc_mode"),
    "--pid": _set("pid_mode"),
    "--uts": _set("uts_mode"),
    "--userns": _set("userns_mode"),
    "--cgroupns": _set("cgroupns_mode"),
    "--cgroup-parent": _set("cgroup_parent"),
    "--runtime": _set("runtime"),
    "--sysctl": _key_value_into("sysctls"),
    "--volumes-from": _append_to("volumes_from"),
    "--pull": _pull,
}


def parse_size(text: str) -> int:
    """``512m``-style sizes (binary units, as docker reads them) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", text.strip().lower())
    if not match:
        raise ValueError("expected a size such as 64m or 1g")
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def parse_duration(text: str) -> int:
    """Go-style durations (``1m30s``, ``500ms``) in nanoseconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError("expected a duration such as 30s or 1m30s")
    return sum(int(float(number) * _DURATION_UNITS[unit]) for number, unit in parts)


# --- ports --------------------------------------------------------------------------------


def _port_key(container_port: str) -> str:
    port, _, proto = container_port.partition("/")
    return f"{port}/{proto or 'tcp'}"


def apply_ports(spec: ContainerSpec, ports: Iterable[str]) -> None:
    """Expose and publish ``[ip:][hostPort:]containerPort[/proto]`` entries."""
    for entry in ports:
        ip, host_port, container_port = _split_port(entry)
        port, _, proto = container_port.partition("/")
        container_range = _port_range(port, entry)
        host_range = _port_range(host_port, entry) if host_port else None
        if host_range and len(host_range) != len(container_range):
            raise ConfigError(f"port {entry!r}: host and container ranges differ in size")
        for offset, number in enumerate(container_range):
            key = f"{number}/{proto or 'tcp'}"
            spec.exposed_ports[key] = {}
            binding = PortBinding(
                host_ip=ip, host_port=str(host_range[offset]) if host_range else ""
            )
            spec.host_config.port_bindings.setdefault(key, []).append(binding)


def _split_port(entry: str) -> tuple[str, str, str]:
    ip = ""
    rest = entry
    if rest.startswith("["):
        ip, _, rest = rest[1:].partition("]")
        rest = rest.removeprefix(":")
    parts = rest.split(":")
    if len(parts) == 1:
        return ip, "", parts[0]
    if len(parts) == 2:
        return ip, parts[0], parts[1]
    if len(parts) == 3 and not ip:
        return parts[0], parts[1], parts[2]
    raise ConfigError(f"port {entry!r} is not [ip:][hostPort:]containerPort[/proto]")


def _port_range(text: str, entry: str) -> list[int]:
    start, sep, end = text.partition("-")
    try:
        first, last = int(start), int(end) if sep else int(start)
    except ValueError:
        raise ConfigError(f"port {entry!r} is not [ip:][hostPort:]containerPort[/proto]") from None
    return list(range(first, last + 1))


# --- volumes ------------------------------------------------------------------------------


@dataclass
class VolumePolicy:
    """``container.valid_volumes`` plus the runner's own volumes, which are always allowed."""

    patterns: list[str]
    own: set[str] = field(default_factory=set)

    def allows(self, source: str) -> bool:
        if not source or source in self.own:
            return True
        candidates = [source]
        if _is_host_path(source):
            candidates.append(os.path.realpath(source))
        return any(
            fnmatch.fnmatchcase(candidate, pattern)
            for pattern in self.patterns
            for candidate in candidates
        )

    def filter_binds(self, binds: Iterable[str], warnings: list[str]) -> list[str]:
        """Keep the ``src:dst[:mode]`` entries whose source is allowed (anonymous ones pass)."""
        kept = []
        for bind in binds:
            source = bind.split(":", 1)[0] if ":" in bind else ""
            if self.allows(source):
                kept.append(bind)
            else:
                warnings.append(invalid_volume_message(source))
        return kept

    def filter_mounts(self, mounts: Iterable[Mount], warnings: list[str]) -> list[Mount]:
        kept = []
        for mount in mounts:
            if mount.type == "tmpfs" or self.allows(mount.source):
                kept.append(mount)
            else:
                warnings.append(invalid_volume_message(mount.source))
        return kept


def invalid_volume_message(source: str) -> str:
    return f"[{source}] is not a valid volume, will be ignored"


def _is_host_path(source: str) -> bool:
    return source.startswith(("/", "."))
