"""Configuration loading: syntaxes, defaults, act_runner's fixups, errors with key and line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from trio_runner import config_command
from trio_runner.cli import main as cli_main
from trio_runner.config import (
    DEFAULT_IMAGE,
    CacheConfig,
    Config,
    env_overrides,
    load_config,
    parse_duration,
    parse_size,
    read_env_file,
)
from trio_runner.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "config.example.yaml"
DEPRECATED_KEYS = {"container.network_mode", "container.enable_ipv6"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name in ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("3h", 10800.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("-1m", -60.0),
        ("1m30s250ms", 90.25),
        ("10us", 1e-5),
    ],
)
def test_durations_use_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "s", "1h x", "--1s", "1.2.3s"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1024", 1024),
        ("10GB", 10 * 1024**3),
        ("10GiB", 10 * 1024**3),
        ("512mb", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("2 k", 2048),
        ("1T", 1024**4),
    ],
)
def test_sizes_are_binary(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "10XB", "-1GB", "10 GB extra"])
def test_bad_sizes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(None)
    home = tmp_path / "home"
    assert cfg.runner.file == ".runner"
    assert cfg.runner.capacity == 1
    assert cfg.runner.timeout == 3 * 3600
    assert cfg.runner.fetch_timeout == 5
    assert cfg.runner.fetch_interval == 2
    assert cfg.runner.fetch_interval_max == 5
    assert cfg.runner.default_image == DEFAULT_IMAGE
    assert cfg.runner.action_shallow_clone and cfg.runner.set_act_env and cfg.runner.patch_actions
    assert cfg.cache.enabled and cfg.cache.v2
    assert cfg.cache.dir == str(home / ".cache" / "actcache")
    assert cfg.cache.repo_size_limit == 10 * 1024**3
    assert cfg.cache.retention == 168 * 3600
    assert cfg.host.workdir_parent == str(home / ".cache" / "act")
    assert cfg.container.workdir_parent == "workspace"
    assert cfg.container.service_ready_timeout == 300
    assert cfg.metrics.addr == "127.0.0.1:9101"
    assert cfg.health_check.min_free_disk_space_mb == 1024


def test_example_file_loads_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == load_config(None)


def test_example_file_shows_every_key() -> None:
    def keys_of(cls: type[Any], prefix: str) -> set[str]:
        found = set()
        for field in msgspec.structs.fields(cls):
            path = f"{prefix}{field.name}"
            if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
                found |= keys_of(field.type, path + ".")
            else:
                found.add(path)
        return found

    def keys_in(data: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, value in data.items():
            if isinstance(value, dict) and value and key != "envs":
                found |= keys_in(value, f"{prefix}{key}.")
            else:
                found.add(f"{prefix}{key}")
        return found

    documented = keys_in(yaml.safe_load(EXAMPLE.read_text()), "")
    assert documented == keys_of(Config, "") - DEPRECATED_KEYS


def test_packaged_example_is_the_repository_example() -> None:
    assert config_command.example_config() == EXAMPLE.read_text()


def test_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
runner:
  capacity: 4
  timeout: 1h30m
  labels: ["a:host", "b:docker://alpine"]
  envs: {A: 1, B: "two"}
  insecure: yes
cache:
  port: 8088
  size_limit: 512MiB
container:
  valid_volumes: ['**']
  workdir_parent: /data/work
""",
    )
    cfg = load_config(path)
    assert cfg.runner.capacity == 4
    assert cfg.runner.timeout == 5400
    assert cfg.runner.labels == ["a:host", "b:docker://alpine"]
    assert cfg.runner.envs == {"A": "1", "B": "two"}
    assert cfg.runner.insecure is True
    assert cfg.cache.port == 8088
    assert cfg.cache.size_limit == 512 * 1024**2
    assert cfg.container.valid_volumes == ["**"]
    assert cfg.container.workdir_parent == "data/work"


def test_null_values_keep_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "runner:\n  capacity:\ncontainer:\n  options:\n  workdir_parent:\n")
    cfg = load_config(path)
    assert cfg.runner.capacity == 1
    assert cfg.container.options == ""
    assert cfg.container.workdir_parent == "workspace"


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == load_config(None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("runner:\n  capacty: 2\n", ":2: runner.capacty: unknown key"),
        ("runner:\n  capacity: many\n", ":2: runner.capacity: expected a whole number"),
        ("runner:\n  capacity: true\n", ":2: runner.capacity: expected a whole number"),
        ("runner:\n  insecure: 1\n", ":2: runner.insecure: expected true or false"),
        ("runner:\n  timeout: 10\n", ":2: runner.timeout: 10 has no unit"),
        ("runner:\n  timeout: 10 minutes\n", ":2: runner.timeout: '10 minutes' is not a dur"),
        ("runner:\n\n  labels: ubuntu\n", ":3: runner.labels: expected a list"),
        ("runner:\n  labels: [[a]]\n", ":2: runner.labels[0]: expected a string"),
        ("cache:\n  port: 70000\n", ":2: cache.port: 70000 is not a port"),
        ("cache:\n  size_limit: lots\n", ":2: cache.size_limit: 'lots' is not a size"),
        ("cache:\n  s3:\n    bucket: b\n", ":2: cache.s3: cache.s3 is not supported"),
        ("runner: [1]\n", ":1: runner: expected a mapping"),
        ("- 1\n", "expected a mapping"),
        ("runner:\n  file: a\n  file: b\n", ":3: runner.file: key given twice"),
        ("runner:\n  tool_cache_mode: all\n", ":2: runner.tool_cache_mode: 'all' is not one"),
        ("log:\n  level: loud\n", ":2: log.level: 'loud' is not one of"),
        ("runner: {capacity: 1\n", ":2: invalid YAML"),
        ("kubernetes: {}\n", ":1: kubernetes: unknown key"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert needle in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_act_runner_fixups(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(
        tmp_path,
        """
runner:
  capacity: 0
  timeout: 0s
  fetch_timeout: 5m
  fetch_interval: 30s
  fetch_interval_max: 10s
  log_report_batch_size: -1
  workdir_cleanup_age: 0s
container:
  network_mode: my-net
  enable_ipv6: true
cache:
  sweep_interval: 0s
""",
    )
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path)
    assert cfg.runner.capacity == 1
    assert cfg.runner.timeout == 3 * 3600
    assert cfg.runner.fetch_timeout == 60
    assert cfg.runner.fetch_interval_max == 30
    assert cfg.runner.log_report_batch_size == 100
    # A written 0 disables the idle cleanup rather than meaning "default".
    assert cfg.runner.workdir_cleanup_age == 0
    assert cfg.container.network == "my-net"
    assert cfg.container.network_create_options.enable_ipv6 is True
    assert cfg.cache.sweep_interval == 3600
    assert "fetch_timeout" in caplog.text and "network_mode" in caplog.text


def test_bridge_network_mode_means_a_network_per_job(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "container:\n  network_mode: bridge\n"))
    assert cfg.container.network == ""


def test_env_file_is_merged_over_envs(tmp_path: Path) -> None:
    (tmp_path / "job.env").write_text(
        "# comment\nexport A=from-file\nB='single # kept'\n"
        'C="line\\nbreak"\nD=plain # comment\nE: colon\n'
    )
    path = write(tmp_path, "runner:\n  envs: {A: config, Z: z}\n  env_file: job.env\n")
    envs = load_config(path).runner.envs
    assert envs == {
        "A": "from-file",
        "B": "single # kept",
        "C": "line\nbreak",
        "D": "plain",
        "E": "colon",
        "Z": "z",
    }


def test_missing_env_file_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "runner:\n  envs: {A: a}\n  env_file: absent.env\n")
    assert load_config(path).runner.envs == {"A": "a"}


def test_bad_env_file_line_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("OK=1\nnot an assignment\n")
    with pytest.raises(ConfigError, match=r"bad\.env:2: expected KEY=value"):
        read_env_file(tmp_path / "bad.env")


def test_secret_file_is_read_and_kept_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("  s3cr3t-value\n")
    path = write(
        tmp_path,
        "cache:\n  external_server: http://cache:9000/\n  external_secret_file: secret\n",
    )
    cfg = load_config(path)
    assert cfg.cache.external_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "cache:\n  external_secret: a\n  external_secret_file: f\n",
            "both set",
        ),
        ("cache:\n  external_secret_file: absent\n", "cannot read absent"),
        ("cache:\n  external_secret_file: empty\n", "contains no secret"),
        ("cache:\n  external_server: http://c/\n", "no shared secret is configured"),
    ],
)
def test_cache_secret_validation(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, text))


def test_eviction_keys_with_external_server_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "cache:\n  external_server: http://c/\n  external_secret: x\n  retention: 1h\n"
    with caplog.at_level(logging.WARNING):
        load_config(write(tmp_path, text))
    assert "cache.retention ignored" in caplog.text


def test_hooks_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_RUNNER_HOOK_JOB_STARTED", "/hooks/start.sh")
    cfg = load_config(None)
    assert cfg.runner.hooks.job_started == "/hooks/start.sh"
    assert cfg.runner.hooks.job_completed == ""


def test_env_overrides(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    env = env_overrides(
        {
            "GITEA_INSTANCE_URL": "https://git.example.com/",
            "GITEA_RUNNER_REGISTRATION_TOKEN_FILE": str(token_file),
            "GITEA_RUNNER_NAME": "builder",
            "GITEA_RUNNER_LABELS": "a:host, b ,,",
            "GITEA_RUNNER_EPHEMERAL": "1",
        }
    )
    assert env.instance_url == "https://git.example.com/"
    assert env.registration_token == "file-token"
    assert "file-token" not in repr(env)
    assert env.runner_name == "builder"
    assert env.labels == ("a:host", "b")
    assert env.ephemeral and not env.once
    assert env_overrides({"GITEA_RUNNER_REGISTRATION_TOKEN": "direct"}).registration_token == (
        "direct"
    )
    with pytest.raises(ConfigError, match="GITEA_RUNNER_REGISTRATION_TOKEN_FILE"):
        env_overrides({"GITEA_RUNNER_REGISTRATION_TOKEN_FILE": str(tmp_path / "absent")})


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "runner:\n  capacity: 2\n", "good.yaml")
    bad = write(tmp_path, "runner:\n  capacity: two\n", "bad.yaml")
    assert cli_main(["config", "check", "-c", str(good)]) == 0
    assert cli_main(["-c", str(bad), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: runner.capacity" in err


def test_config_init_writes_the_example_once(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    assert cli_main(["config", "init"]) == 0
    assert target.read_text() == EXAMPLE.read_text()
    assert load_config(target) == load_config(None)
    assert cli_main(["config", "init"]) == 2
    target.write_text("changed")
    assert cli_main(["config", "init", "--force"]) == 0
    assert target.read_text() == EXAMPLE.read_text()


def test_cache_defaults_match_spec() -> None:
    cache = CacheConfig()
    assert (cache.retention, cache.size_limit, cache.sweep_interval) == (168 * 3600, 0, 3600)
