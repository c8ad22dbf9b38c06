"""Services of jobs that run on the host (spec 2.6, host mode): started in the engine on
the job network with their ports published on 127.0.0.1, reached from the job's
processes through ``job.services.<id>.ports``, and removed with the job and its network;
without an engine, a warning."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from tests.fake_gitea.state import FakeGitea
from tests.integration.engine import needs_engine
from tests.integration.test_docker_jobs import (
    SERVICE_IMAGE,
    WAIT,
    checkout,
    ensure_service_image,
    exec_done,
    exec_env,
    job,
    owned,
    register_locally,
    run,
    run_task,
)
from trio_runner.backends.docker import (
    LABEL_JOB_CONTAINER,
    DockerEnvironment,
    DockerSettings,
    HostDirs,
    JobSpec,
    ServiceSpec,
)
from trio_runner.backends.docker_api import DockerClient
from trio_runner.gitea.messages import Result

#: Fetches the service's page from the host through its published port, retrying while
#: the server inside starts.
FETCH = (
    'python3 -c "import sys, time, urllib.request\n'
    "for _ in range(50):\n"
    "    try:\n"
    "        print(urllib.request.urlopen('http://127.0.0.1:' + sys.argv[1] + '/').read()"
    ".decode().strip()); break\n"
    "    except OSError: time.sleep(0.2)\n"
    "else: sys.exit(1)\" ${{ job.services.db.ports['5432'] }}"
)
SERVICES = f"    services:\n      db:\n        image: {SERVICE_IMAGE}\n        ports: ['5432']\n"


class _Log:
    def __init__(self) -> None:
        self.rows: list[str] = []

    async def info(self, message: str) -> None:
        self.rows.append(message)

    async def warning(self, message: str) -> None:
        self.rows.append(f"warning: {message}")


@pytest.mark.container
@needs_engine
async def test_services_publish_on_loopback_only_and_are_removed(engine: DockerClient) -> None:
    await ensure_service_image(engine)
    name = f"host-services-{secrets.token_hex(4)}"
    spec = JobSpec(
        runner_uuid="host-services-test",
        task_id=1,
        name=name,
        job_id="build",
        alias="build",
        image="",
        workspace="",
        services=[ServiceSpec(id="db", image=SERVICE_IMAGE, ports=["5432", "0.0.0.0::80"])],
    )
    with trio.fail_after(WAIT):
        host = HostDirs(workspace="", runner_dir="", tool_cache="")
        async with DockerEnvironment.start_for_host(
            engine, spec, DockerSettings(), _Log(), host
        ) as docker:
            services = docker.services
            info = await engine.container_inspect(services["db"].id)
            bindings = info.network_settings.ports or {}
            host_ips = {b.host_ip for port in bindings.values() for b in port or ()}
            assert host_ips == {"127.0.0.1"}
            assert services["db"].network == f"{name}-build-network"
            assert services["db"].ports["5432"].isdigit()
            assert set(services["db"].ports) == {"5432", "80"}
        left = await engine.containers_list({LABEL_JOB_CONTAINER: name})
        networks = [n.name for n in await engine.networks_list() if n.name.startswith(name)]
    assert left == [] and networks == []


@pytest.mark.container
@needs_engine
async def test_host_job_reaches_its_service_on_localhost(
    gitea: FakeGitea, engine: DockerClient, tmp_path: Path
) -> None:
    await ensure_service_image(engine)
    runner = register_locally(gitea, tmp_path, ["self-hosted:host"])
    workflow = job(
        run(FETCH),
        run('echo "id=${{ job.services.db.id }} net=[${{ job.services.db.network }}]"'),
        runs_on="self-hosted",
        extra=SERVICES,
    )
    task_id = await run_task(gitea, tmp_path, workflow)
    record = gitea.task(task_id)
    assert record.result is Result.SUCCESS, "\n".join(record.contents)
    assert "accepting-connections" in record.contents
    ids = [row for row in record.contents if row.startswith("id=")]
    assert len(ids) == 1 and len(ids[0].split()[0]) > 10 and "-build-network]" in ids[0]
    assert await owned(engine, runner.uuid) == []


async def test_without_an_engine_services_are_skipped_with_a_warning(tmp_path: Path) -> None:
    directory = checkout(tmp_path, job(run("echo ran-on-host"), extra=SERVICES))
    env = exec_env() | {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    done = await exec_done(
        directory, "-i", "-self-hosted", "--workdir-parent", str(tmp_path), env=env
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "the job's services were not started: container engine at unix://" in out
    assert "| ran-on-host" in out
