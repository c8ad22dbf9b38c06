"""hashFiles in a job container whose workspace is a volume (no ``bind_workdir``): the
files are read through the engine's archive API and hash as they would on the host."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from tests.integration.engine import BOOKWORM, CONTAINER_MODULE
from tests.integration.test_docker_jobs import (
    checkout,
    exec_done,
    exec_objects_left,
    job,
    run,
)
from trio_runner.backends.docker_api import DockerClient
from trio_runner.workflow.expressions import hash_files

pytestmark = CONTAINER_MODULE

#: Files the first step creates in the workspace, recreated on the host for reference.
FILES = {
    "package-lock.json": '{"lockfileVersion": 3}',
    "web/package-lock.json": '{"name": "web"}',
    "web/node_modules/dep/package-lock.json": "{}",
    ".config/settings.json": '{"dot": true}',
}
LINKS = {"lock-link.json": "web/package-lock.json", "webdir": "web"}

SETUP = " && ".join(
    [
        *(
            f"mkdir -p {os.path.dirname(name) or '.'} && printf '%s' '{body}' > {name}"
            for name, body in FILES.items()
        ),
        *(f"ln -s {target} {name}" for name, target in LINKS.items()),
        # /lib is itself a link (to usr/lib) in the image: resolved in the container.
        "ln -s /lib/os-release os.txt",
    ]
)

EXPRESSIONS = {
    "LOCKS": "hashFiles('**/package-lock.json')",
    "JSON": "hashFiles('**/*.json', '!**/node_modules/**')",
    "FOLLOW": "hashFiles('--follow-symbolic-links', 'webdir/**')",
    "OUTSIDE": "hashFiles('os.txt')",
    "NONE": "hashFiles('missing/**')",
}


def host_reference(tmp_path: Path) -> dict[str, str]:
    ws = tmp_path / "reference"
    for name, body in FILES.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(body)
    for name, target in LINKS.items():
        (ws / name).symlink_to(target)
    return {
        "LOCKS": hash_files(ws, ["**/package-lock.json"]),
        "JSON": hash_files(ws, ["**/*.json", "!**/node_modules/**"]),
        "FOLLOW": hash_files(ws, ["--follow-symbolic-links", "webdir/**"]),
        "NONE": "",
    }


async def test_hash_files_in_a_workspace_volume(engine: DockerClient, tmp_path: Path) -> None:
    name = f"hashfiles-{secrets.token_hex(4)}"
    env = "".join(f"\n          {key}: ${{{{ {value} }}}}" for key, value in EXPRESSIONS.items())
    report = " ".join(f"{key}=${key}" for key in EXPRESSIONS) + " DIGEST=$(sha256sum os.txt)"
    workflow = job(
        run(SETUP),
        f"env:{env}\n        {run('echo ' + report)}",
        name=name,
    )
    directory = checkout(tmp_path, workflow)
    done = await exec_done(directory, "-i", BOOKWORM, within=180)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    line = re.search(r"\| (LOCKS=.*)", out)
    assert line is not None, out
    values = dict(re.findall(r"(\w+)=(\S*)", line.group(1)))
    expected = host_reference(tmp_path)
    assert {key: values[key] for key in expected} == expected
    assert expected["LOCKS"] and expected["FOLLOW"]
    outside_digest = bytes.fromhex(values["DIGEST"])
    assert values["OUTSIDE"] == hashlib.sha256(outside_digest).hexdigest()
    assert await exec_objects_left(engine, name) == []


async def test_unreadable_pattern_fails_the_step(engine: DockerClient, tmp_path: Path) -> None:
    name = f"hashfiles-{secrets.token_hex(4)}"
    workflow = job(
        run("ln -s missing broken.txt"),
        "env:\n          H: ${{ hashFiles('broken.txt') }}\n        " + run("echo reached"),
        name=name,
    )
    directory = checkout(tmp_path, workflow)
    done = await exec_done(directory, "-i", BOOKWORM, within=180)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode != 0, out
    assert "hashFiles('broken.txt') failed" in out
    assert "| reached" not in out
    assert await exec_objects_left(engine, name) == []
