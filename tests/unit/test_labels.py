"""Label parsing, the effective label set, and platform picking."""

from __future__ import annotations

import logging

import pytest

from trio_runner.errors import ConfigError
from trio_runner.labels import (
    DEFAULT_LABELS,
    Label,
    Platform,
    effective_labels,
    label_names,
    label_strings,
    parse_label,
    parse_labels,
    pick_platform,
    requires_docker,
    split_labels,
)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("linux", Label(name="linux")),
        ("linux:host", Label(name="linux")),
        (
            "ubuntu-latest:docker://node:20-bookworm",
            Label(name="ubuntu-latest", schema="docker", arg="//node:20-bookworm"),
        ),
        ("pool:e57e18d4-1c", Label(name="pool:e57e18d4-1c", opaque=True)),
        ("gpu:", Label(name="gpu:", opaque=True)),
    ],
)
def test_parse(text: str, label: Label) -> None:
    assert parse_label(text) == label


def test_image_drops_the_double_slash() -> None:
    assert parse_label("u:docker://node:20").image == "node:20"
    assert parse_label("u:docker:alpine").image == "alpine"
    assert parse_label("u:host").image is None
    assert parse_label("pool:x").image is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty label"),
        ("   ", "empty label"),
        (":host", "empty name"),
        ("u:docker://", "names no image"),
        ("u:docker", "names no image"),
        ("my label:host", "contains whitespace"),
    ],
)
def test_invalid_labels_say_why(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_label(text)


def test_full_strings_as_the_registration_file_keeps_them() -> None:
    labels = parse_labels(["a", "b:host", "c:docker://img:1", "pool:xyz"])
    assert label_strings(labels) == ["a:host", "b:host", "c:docker://img:1", "pool:xyz"]
    assert label_names(labels) == ["a", "b", "c", "pool:xyz"]


def test_non_strict_parsing_skips_invalid(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        labels = parse_labels(["ok", "bad:docker://", "also-ok:host"], strict=False)
    assert label_names(labels) == ["ok", "also-ok"]
    assert "bad:docker://" in caplog.text
    with pytest.raises(ConfigError):
        parse_labels(["ok", "bad:docker://"])


def test_split_labels() -> None:
    assert split_labels(" a:host, b ,, c:docker://x ") == ["a:host", "b", "c:docker://x"]
    assert split_labels("") == []


def test_default_labels_are_valid_docker_labels() -> None:
    labels = parse_labels(DEFAULT_LABELS)
    assert label_names(labels) == ["ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04"]
    assert requires_docker(labels)


def test_effective_labels_precedence() -> None:
    explicit, configured, registered = ["e:host"], ["c:host"], ["r:host"]
    assert label_names(effective_labels(explicit, configured, registered)) == ["e"]
    assert label_names(effective_labels(None, configured, registered)) == ["c"]
    assert label_names(effective_labels([], [], registered)) == ["r"]


def test_effective_labels_warn_when_none_remain(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert effective_labels(None, [":host"], []) == []
    assert "no labels" in caplog.text


def test_pick_platform_first_matching_runs_on_entry() -> None:
    labels = parse_labels(["linux:host", "ubuntu-latest:docker://img:latest", "pool:x"])
    pick = pick_platform
    assert pick(labels, ["ubuntu-latest"], docker_available=True) == Platform("img:latest")
    assert pick(labels, ["self-hosted", "linux"], docker_available=True).is_host
    assert pick(labels, ["ubuntu-latest", "linux"], docker_available=False).image == "img:latest"
    assert pick(labels, ["pool:x"], docker_available=True).is_host
    # Names are case-sensitive.
    assert pick(labels, ["Linux"], docker_available=False).is_host


def test_pick_platform_without_a_match() -> None:
    labels = parse_labels(["linux:host"])
    assert pick_platform(labels, [], docker_available=True, default_image="d:1").image == "d:1"
    assert pick_platform(labels, ["windows"], docker_available=False).is_host
