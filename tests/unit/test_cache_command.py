"""``cache-server`` settings: config file, flag overrides, secret and free-disk floor."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trio_runner.cache.command import configure, settings_from
from trio_runner.cache.settings import GIB, MIB
from trio_runner.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_config_values_and_flag_overrides(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        "cache:\n  dir: /srv/cache\n  host: 10.0.0.5\n  port: 8088\n  external_secret: s\n"
        "  retention: 30m\n  repo_size_limit: 2GB\n  size_limit: 512MiB\n  sweep_interval: 0s\n"
        "health_check:\n  enabled: true\n  min_free_disk_space_mb: 50\n",
    )
    settings = settings_from(parse("-c", path))
    assert (settings.dir, settings.host, settings.port) == (Path("/srv/cache"), "10.0.0.5", 8088)
    assert settings.shared_secret == "s"
    assert settings.policy.retention == 1800
    assert settings.policy.repo_size_limit == 2 * GIB
    assert settings.policy.size_limit == 512 * MIB
    assert settings.policy.effective_sweep_interval == 3600
    assert settings.policy.min_free_disk == 50 * MIB
    overridden = settings_from(parse("-c", path, "-d", "/x", "-s", "h", "-p", "0"))
    assert (overridden.dir, overridden.host, overridden.port) == (Path("/x"), "h", 0)


def test_free_disk_floor_defaults_without_health_checks(tmp_path: Path) -> None:
    path = config_file(
        tmp_path, "cache:\n  external_secret: s\nhealth_check:\n  min_free_disk_space_mb: 50\n"
    )
    assert settings_from(parse("-c", path)).policy.min_free_disk == 1024 * MIB


def test_secret_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a shared secret"):
        settings_from(parse("-c", config_file(tmp_path, "cache:\n  dir: /x\n")))
    with pytest.raises(ConfigError, match="needs a shared secret"):
        settings_from(parse())


def test_bad_port_flag(tmp_path: Path) -> None:
    path = config_file(tmp_path, "cache:\n  external_secret: s\n")
    with pytest.raises(ConfigError, match="not a port number"):
        settings_from(parse("-c", path, "-p", "70000"))
