"""Runner labels: parsing, validation, the effective set, and platform picking for a job.

A label is ``name``, ``name:host`` or ``name:docker://image``. The schema is the second
``:``-separated part; a second part that is no known schema makes the whole string an
opaque host label name (``pool:e57e18d4``). Only names travel on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from trio_runner.config import DEFAULT_IMAGE
from trio_runner.errors import ConfigError

log = logging.getLogger(__name__)

SCHEME_HOST: Final = "host"
SCHEME_DOCKER: Final = "docker"

#: Labels registered when none are given: Gitea's runner images.
DEFAULT_LABELS: Final = (
    "ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest",
    "ubuntu-24.04:docker://docker.gitea.com/runner-images:ubuntu-24.04",
    "ubuntu-22.04:docker://docker.gitea.com/runner-images:ubuntu-22.04",
)


class Label(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    schema: str = SCHEME_HOST
    arg: str = ""
    #: The name holds a colon but no known schema; the label is kept verbatim.
    opaque: bool = False

    @property
    def image(self) -> str | None:
        """The container image of a docker label; None for a host label."""
        return self.arg.removeprefix("//") if self.schema == SCHEME_DOCKER else None

    def __str__(self) -> str:
        """The full label string, as kept in the registration file (``name:host``)."""
        if self.opaque:
            return self.name
        return f"{self.name}:{self.schema}:{self.arg}" if self.arg else f"{self.name}:{self.schema}"


class Platform(msgspec.Struct, frozen=True):
    """Where a job runs: in ``image`` (docker mode), or on the host when it is None."""

    image: str | None = None

    @property
    def is_host(self) -> bool:
        return self.image is None


def parse_label(text: str) -> Label:
    """One label, or :class:`ConfigError` saying what is wrong with it."""
    text = text.strip()
    if not text:
        raise ConfigError("empty label")
    name, has_schema, rest = text.partition(":")
    schema, _, arg = rest.partition(":")
    if has_schema and schema not in (SCHEME_HOST, SCHEME_DOCKER):
        return Label(name=text, opaque=True)
    if not name:
        raise ConfigError(f"label {text!r} has an empty name")
    if any(c.isspace() for c in name):
        raise ConfigError(f"label name {name!r} contains whitespace")
    label = Label(name=name, schema=schema or SCHEME_HOST, arg=arg)
    if label.schema == SCHEME_DOCKER and not label.image:
        raise ConfigError(f"label {text!r} names no image (expected {name}:docker://IMAGE)")
    return label


def parse_labels(texts: Iterable[str], *, strict: bool = True) -> list[Label]:
    """Parse every label; invalid ones raise (``strict``) or are skipped with a warning."""
    labels: list[Label] = []
    for text in texts:
        try:
            labels.append(parse_label(text))
        except ConfigError as exc:
            if strict:
                raise
            log.warning("ignored invalid label %r: %s", text, exc)
    return labels


def split_labels(text: str) -> list[str]:
    """Labels from a comma-separated list (``--labels``, ``GITEA_RUNNER_LABELS``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def label_names(labels: Iterable[Label]) -> list[str]:
    """The names sent in Register and Declare."""
    return [label.name for label in labels]


def label_strings(labels: Iterable[Label]) -> list[str]:
    """The full strings kept in the registration file."""
    return [str(label) for label in labels]


def requires_docker(labels: Iterable[Label]) -> bool:
    return any(label.schema == SCHEME_DOCKER for label in labels)


def effective_labels(
    explicit: Sequence[str] | None,
    configured: Sequence[str],
    registered: Sequence[str],
) -> list[Label]:
    """The labels to run with: ``explicit`` (``--labels`` or ``GITEA_RUNNER_LABELS``) wins
    over ``runner.labels``, which wins over the registration file. Invalid labels are
    skipped with a warning."""
    chosen = explicit or configured or registered
    labels = parse_labels(chosen, strict=False)
    if not labels:
        log.warning("no labels configured, the runner only gets jobs without runs-on")
    return labels


def pick_platform(
    labels: Sequence[Label],
    runs_on: Sequence[str],
    *,
    default_image: str = DEFAULT_IMAGE,
    docker_available: bool,
) -> Platform:
    """The platform of a job: the first ``runs-on`` entry equal to a label name decides.

    With no match, ``default_image`` when a container engine is usable
    (``docker_available``: a docker label, ``container.require_docker`` or a daemon that
    answers), else the host.
    """
    by_name: dict[str, Label] = {}
    for label in labels:
        by_name.setdefault(label.name, label)
    for wanted in runs_on:
        if wanted in by_name:
            return Platform(by_name[wanted].image)
    return Platform(default_image if docker_available else None)
