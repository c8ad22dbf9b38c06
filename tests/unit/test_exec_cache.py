"""Which ``exec`` runs get a cache, where it listens, and the runner variables of exec jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trio_runner import __version__, exec_command
from trio_runner.config import RunnerConfig
from trio_runner.exec_command import ExecPlan, exec_platform
from trio_runner.exec_run import cache_settings, needs_cache, reaches_containers
from trio_runner.executor.runner_env import CacheAccess, cache_variables, runner_variables

PLAIN = "      - run: echo hi\n"
CHECKOUT = "      - uses: actions/checkout@v4\n"


def plan(tmp_path: Path, steps: str, *args: str, job_extra: str = "", config: str = "") -> ExecPlan:
    workflow = tmp_path / "wf.yml"
    workflow.write_text(
        f"on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n{job_extra}    steps:\n{steps}"
    )
    argv = ["-W", str(workflow), "-C", str(tmp_path)]
    if config:
        (tmp_path / "config.yaml").write_text(config)
        argv += ["-c", str(tmp_path / "config.yaml")]
    parser = argparse.ArgumentParser()
    exec_command.configure(parser)
    return exec_command.prepare(parser.parse_args([*argv, *args]))


@pytest.mark.parametrize(
    ("steps", "args", "config", "expected"),
    [
        (PLAIN, (), "", False),
        (PLAIN + "      - uses: ./local\n", (), "", True),
        (PLAIN + "      - uses: docker://alpine\n", (), "", True),
        # A checkout of this repository becomes a copy: no action runs.
        (CHECKOUT + PLAIN, (), "", False),
        (CHECKOUT, ("--no-skip-checkout",), "", True),
        (CHECKOUT + "        with:\n          repository: other/repo\n", (), "", True),
        (CHECKOUT + "        with:\n          ref: ${{ github.ref }}\n", (), "", True),
        (CHECKOUT + "      - uses: actions/setup-node@v4\n", (), "", True),
        (PLAIN + "      - uses: ./local\n", (), "cache:\n  enabled: false\n", False),
    ],
    ids=[
        "scripts", "local-action", "docker-step", "copied-checkout", "real-checkout",
        "other-repository", "templated-ref", "setup-node", "cache-disabled",
    ],
)  # fmt: skip
def test_a_cache_is_served_when_an_action_may_run(
    tmp_path: Path, steps: str, args: tuple[str, ...], config: str, expected: bool
) -> None:
    assert needs_cache(plan(tmp_path, steps, *args, config=config)) is expected


def test_containers_are_expected_with_an_image_or_a_job_container(tmp_path: Path) -> None:
    on_host = plan(tmp_path, PLAIN)
    assert not reaches_containers(on_host, exec_platform(None))
    assert not reaches_containers(on_host, exec_platform("-self-hosted"))
    assert reaches_containers(on_host, exec_platform("node:20"))
    in_container = plan(tmp_path, PLAIN, job_extra="    container: alpine:3\n")
    assert reaches_containers(in_container, exec_platform("-self-hosted"))


def test_cache_settings_for_host_jobs_and_for_containers(tmp_path: Path) -> None:
    config = plan(
        tmp_path, PLAIN, config=f"cache:\n  dir: {tmp_path}/c\n  host: 10.1.2.3\n  port: 8088\n"
    ).config
    host = cache_settings(config, containers=False)
    assert (host.host, host.bind_host, host.port, host.dir) == (
        "127.0.0.1",
        "127.0.0.1",
        0,
        tmp_path / "c",
    )
    containers = cache_settings(config, containers=True)
    assert (containers.host, containers.bind_host, containers.port) == ("10.1.2.3", "0.0.0.0", 0)


def test_exec_jobs_get_the_runner_variables_without_gitea_services(tmp_path: Path) -> None:
    env = plan(tmp_path, PLAIN, "--env", "GITEA_ACTIONS=no", "--env", "MINE=1").job_env
    assert env["GITEA_ACTIONS"] == "true"  # the runner's own variables win over --env
    assert env["GITEA_ACTIONS_RUNNER_VERSION"] == __version__
    assert env["ACT"] == env["ACT_EXEC"] == "true"
    assert env["MINE"] == "1"
    for absent in ("ACTIONS_RUNTIME_URL", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL"):
        assert absent not in env


def test_cache_variables_offer_v2_only_where_the_results_service_is_fronted() -> None:
    url = "http://127.0.0.1:1234/"
    assert cache_variables(CacheAccess(url, v2=True), "tok") == {
        "ACTIONS_CACHE_URL": url,
        "ACTIONS_RUNTIME_TOKEN": "tok",
    }
    fronted = cache_variables(CacheAccess(url, results_url=url, v2=True), "tok")
    assert fronted["ACTIONS_RESULTS_URL"] == url
    assert fronted["ACTIONS_CACHE_SERVICE_V2"] == "true"


def test_runner_variables_with_gitea() -> None:
    variables = runner_variables(
        RunnerConfig(), {"ACT": "mine", "X": "1"}, gitea="https://g.example", runtime_token="t"
    )
    assert variables == {
        "ACT": "true",
        "X": "1",
        "GITEA_ACTIONS": "true",
        "GITEA_ACTIONS_RUNNER_VERSION": __version__,
        "ACTIONS_RUNTIME_URL": "https://g.example/api/actions_pipeline/",
        "ACTIONS_RESULTS_URL": "https://g.example",
        "ACTIONS_RUNTIME_TOKEN": "t",
    }
