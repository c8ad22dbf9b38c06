"""Docker actions and ``docker://`` steps of jobs that run on the host (spec 3.10): run in
the engine when one answers, with the host's workspace, runner dir and tool cache bound at
the same paths, labelled with the job and removed afterwards, also on cancel; without an
engine, a clear error naming the step."""

from __future__ import annotations

import re
import secrets
import signal
from pathlib import Path

import pytest
import trio

from tests.integration.engine import BUSYBOX, needs_engine
from tests.integration.runner_process import interrupt_when
from tests.integration.test_docker_jobs import (
    SERVICE_IMAGE,
    STARTED,
    WAIT,
    checkout,
    ensure_service_image,
    exec_command,
    exec_done,
    exec_env,
    job,
    run,
    sleeping_docker_action,
)
from trio_runner.backends.docker import LABEL_JOB_CONTAINER, job_container_name
from trio_runner.backends.docker_api import DockerClient

#: A ``docker://`` step writing an output and a file in the workspace, then a host step
#: reading both.
WRITES = (
    f"id: box\n        uses: docker://{BUSYBOX}\n        with:\n"
    "          entrypoint: /bin/sh\n"
    '          args: -c "echo greeting=from-box >> $GITHUB_OUTPUT; '
    'echo box-file > $GITHUB_WORKSPACE/made-by-box.txt; echo ws=$PWD"'
)
READS = run(
    'echo "out=${{ steps.box.outputs.greeting }} file=$(cat made-by-box.txt) host=$PWD"; '
    "rm -f made-by-box.txt"
)

ACTION_YML = """name: Greeter
inputs:
  who:
    default: nobody
runs:
  using: docker
  image: Dockerfile
  env:
    MOOD: cheerful
  args:
    - hello
    - ${{ inputs.who }}
"""
ACTION_DOCKERFILE = f"""FROM {BUSYBOX}
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]
"""
ACTION_ENTRYPOINT = """echo "args=$1,$2 input=$INPUT_WHO mood=$MOOD"
echo "said=$1-$2" >> "$GITHUB_OUTPUT"
"""


async def exec_host(directory: Path, work: Path, env: dict[str, str]) -> tuple[int, str]:
    done = await exec_done(directory, "-i", "-self-hosted", "--workdir-parent", str(work), env=env)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def step_containers(engine: DockerClient, workflow_name: str) -> list[str]:
    """Containers of the workflow's ``build`` job (by the label every one carries)."""
    labels = {LABEL_JOB_CONTAINER: job_container_name("push", workflow_name, "build")}
    return [c.id for c in await engine.containers_list(labels, all=True)]


@pytest.mark.container
@needs_engine
async def test_docker_step_shares_workspace_and_outputs_with_host_steps(
    engine: DockerClient, tmp_path: Path
) -> None:
    name = f"host-docker-{secrets.token_hex(4)}"
    directory = checkout(tmp_path, job(WRITES, READS, runs_on="self-hosted", name=name))
    code, out = await exec_host(directory, tmp_path / "work", exec_env())
    assert code == 0, out
    host_dir = re.search(r"\| out=from-box file=box-file host=(\S+)", out)
    assert host_dir is not None, out
    # The step container saw the host's workspace at the same path.
    assert f"| ws={host_dir[1]}" in out
    assert await step_containers(engine, name) == []


@pytest.mark.container
@needs_engine
async def test_local_dockerfile_action_with_inputs_and_args(
    engine: DockerClient, tmp_path: Path
) -> None:
    name = f"host-docker-{secrets.token_hex(4)}"
    steps = (
        "uses: actions/checkout@v4",
        "id: greet\n        uses: ./greeter\n        with:\n          who: Mona",
        run('echo "said=${{ steps.greet.outputs.said }}"'),
    )
    directory = checkout(tmp_path, job(*steps, runs_on="self-hosted", name=name))
    action = directory / "greeter"
    action.mkdir()
    (action / "action.yml").write_text(ACTION_YML)
    (action / "Dockerfile").write_text(ACTION_DOCKERFILE)
    (action / "entrypoint.sh").write_text(ACTION_ENTRYPOINT)
    code, out = await exec_host(directory, tmp_path / "work", exec_env())
    assert code == 0, out
    assert "| args=hello,Mona input=Mona mood=cheerful" in out
    assert "| said=hello-Mona" in out
    assert await step_containers(engine, name) == []


@pytest.mark.container
@needs_engine
async def test_docker_step_joins_the_services_network(engine: DockerClient, tmp_path: Path) -> None:
    await ensure_service_image(engine)
    name = f"host-docker-{secrets.token_hex(4)}"
    fetch = (
        f"uses: docker://{BUSYBOX}\n        with:\n"
        "          entrypoint: /bin/sh\n"
        '          args: -c "echo service says $(wget -qO- http://db:5432/)"'
    )
    services = f"    services:\n      db:\n        image: {SERVICE_IMAGE}\n"
    directory = checkout(tmp_path, job(fetch, runs_on="self-hosted", extra=services, name=name))
    code, out = await exec_host(directory, tmp_path / "work", exec_env())
    assert code == 0, out
    assert "| service says accepting-connections" in out
    assert await step_containers(engine, name) == []


@pytest.mark.container
@needs_engine
async def test_sigint_during_a_docker_step_leaves_no_container(
    engine: DockerClient, tmp_path: Path
) -> None:
    name = f"host-docker-{secrets.token_hex(4)}"
    directory = checkout(
        tmp_path, job(sleeping_docker_action(300), runs_on="self-hosted", name=name)
    )
    argv = [*exec_command(directory, "-i", "-self-hosted"), "--workdir-parent", str(tmp_path)]

    async def interrupt(process: trio.Process, _match: re.Match[bytes]) -> None:
        assert len(await step_containers(engine, name)) == 1
        process.send_signal(signal.SIGINT)

    code, text, _match = await interrupt_when(argv, STARTED, interrupt, env=exec_env(), within=WAIT)
    assert code == 130, text
    assert await step_containers(engine, name) == []


async def test_no_engine_fails_the_step_naming_it(tmp_path: Path) -> None:
    directory = checkout(
        tmp_path,
        job(
            f"uses: docker://{BUSYBOX}",
            run("echo after ${{ job.status }}"),
            runs_on="self-hosted",
        ),
    )
    env = {**exec_env(), "DOCKER_HOST": f"unix://{tmp_path}/missing.sock"}
    code, out = await exec_host(directory, tmp_path / "work", env)
    assert code != 0, out
    error = next(line for line in out.splitlines() if "is a docker action" in line)
    assert f"'docker://{BUSYBOX}' is a docker action and could not run" in error
    assert "no container engine answered" in error and "missing.sock" in error
    assert "| after" not in out
