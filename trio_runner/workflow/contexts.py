"""The contexts a job sees (github, runner, job, steps, strategy, ...) and default env vars.

Pure functions of the job's inputs and paths; the executor keeps the mutable parts
(step results, the job status) and asks for a fresh view whenever it evaluates.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: github-context keys the runner owns; values from the task context are replaced.
RUNNER_OWNED_GITHUB_KEYS = (
    "workspace",
    "event_path",
    "action",
    "action_path",
    "action_ref",
    "action_repository",
    "action_status",
    "env",
    "path",
    "server_url",
    "api_url",
    "graphql_url",
)

#: Task-context keys that are credentials or runner plumbing, never part of `github`.
PRIVATE_TASK_KEYS = (
    "gitea_default_actions_url",
    "gitea_runtime_token",
    "actions_id_token_request_url",
    "actions_id_token_request_token",
)

_ARCH_NAMES = {
    "x86_64": "X64",
    "amd64": "X64",
    "i386": "X86",
    "i686": "X86",
    "386": "X86",
    "aarch64": "ARM64",
    "arm64": "ARM64",
    "arm": "ARM",
    "armv7l": "ARM",
}


def runner_arch(machine: str | None = None) -> str:
    """GitHub's architecture name for a machine string (``X64``, ``ARM64``, ...)."""
    return _ARCH_NAMES.get((machine or platform.machine()).lower(), "X64")


@dataclass
class JobPaths:
    """Where things live inside the job environment (workflow-execution 2.4)."""

    workspace: str
    runner_dir: str
    temp: str
    tool_cache: str

    @property
    def event_path(self) -> str:
        return f"{self.runner_dir}/workflow/event.json"

    @property
    def workflow_dir(self) -> str:
        return f"{self.runner_dir}/workflow"

    @property
    def runner_workspace(self) -> str:
        return self.workspace.rsplit("/", 1)[0] or "/"


@dataclass
class ServerUrls:
    """The Gitea instance as jobs see it (workflow-execution 9.2)."""

    instance: str = ""

    @property
    def server_url(self) -> str:
        base = self.instance.rstrip("/")
        if base and "://" not in base:
            base = "https://" + base
        return base

    @property
    def api_url(self) -> str:
        return f"{self.server_url}/api/v1" if self.server_url else ""


def github_context(
    task_context: Mapping[str, Any],
    *,
    secrets: Mapping[str, str],
    workflow_name: str,
    job_id: str,
    paths: JobPaths,
    urls: ServerUrls,
) -> dict[str, Any]:
    """The ``github`` context: the task's values plus the runner-owned fields (1.3, 4.1)."""
    ctx: dict[str, Any] = {
        k: v for k, v in task_context.items() if k not in PRIVATE_TASK_KEYS and k != "token"
    }
    for key in RUNNER_OWNED_GITHUB_KEYS:
        ctx[key] = ""
    token = secrets.get("GITEA_TOKEN") or secrets.get("GITHUB_TOKEN") or task_context.get("token")
    ctx["token"] = token or ""
    ctx.setdefault("event", {})
    if not isinstance(ctx["event"], dict):
        ctx["event"] = {}
    ctx["workflow"] = workflow_name or str(task_context.get("workflow", ""))
    ctx["job"] = job_id
    ctx["workspace"] = paths.workspace
    ctx["event_path"] = paths.event_path
    ctx["server_url"] = urls.server_url
    ctx["api_url"] = urls.api_url
    ctx["graphql_url"] = ""
    for key in (
        "event_name",
        "sha",
        "ref",
        "ref_name",
        "ref_type",
        "head_ref",
        "base_ref",
        "repository",
        "repository_owner",
        "run_id",
        "run_number",
        "run_attempt",
        "actor",
        "triggering_actor",
        "retention_days",
        "repositoryUrl",
    ):
        ctx.setdefault(key, "")
    ctx.setdefault("ref_protected", False)
    # Secrets reach a job only from the repository's Actions secrets.
    ctx.setdefault("secret_source", "Actions")
    return ctx


@dataclass
class RunnerInfo:
    """The ``runner`` context (4.2)."""

    name: str
    temp: str
    tool_cache: str
    os: str = "Linux"
    arch: str = field(default_factory=runner_arch)
    debug: bool = False

    def context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "os": self.os,
            "arch": self.arch,
            "name": self.name,
            "temp": self.temp,
            "tool_cache": self.tool_cache,
            "environment": "self-hosted",
        }
        if self.debug:
            ctx["debug"] = "1"
        return ctx


def inputs_context(
    event_name: str,
    event: Mapping[str, Any] | None,
    dispatch_inputs: Mapping[str, Any],
    call_inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``inputs`` context of a workflow_dispatch or workflow_call run (4.2)."""
    declared = call_inputs if event_name == "workflow_call" else dispatch_inputs
    given = (event or {}).get("inputs") or {}
    if not isinstance(given, dict):
        given = {}
    inputs: dict[str, Any] = {}
    for name, spec in declared.items():
        value = given.get(name, spec.default)
        if spec.type == "boolean":
            value = value is True or str(value).lower() == "true"
        inputs[name] = value
    for name, value in given.items():
        inputs.setdefault(name, value)
    return inputs


def jobs_context(results: Mapping[str, tuple[str, Mapping[str, str]]]) -> dict[str, Any]:
    """The ``jobs`` context of a called workflow's ``on.workflow_call.outputs`` (4.2, exec
    only): job id -> ``{result, outputs}`` from (result, outputs) of each called job."""
    return {
        job_id: {"result": result, "outputs": dict(outputs)}
        for job_id, (result, outputs) in results.items()
    }


def strategy_context(strategy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``strategy`` context with GitHub's defaults (4.2)."""
    strategy = strategy or {}
    return {
        "fail-fast": bool(strategy.get("fail-fast", True)),
        "max-parallel": strategy.get("max-parallel", 1),
        "job-index": strategy.get("job-index", 0),
        "job-total": strategy.get("job-total", 1),
    }


def default_env(
    github: Mapping[str, Any],
    runner: RunnerInfo,
    paths: JobPaths,
    files: Mapping[str, str],
    *,
    action: str = "",
    action_path: str = "",
    action_repository: str = "",
    action_ref: str = "",
) -> dict[str, str]:
    """Layer 6 of 4.5: the default variables every step phase gets (4.3)."""

    def s(key: str) -> str:
        value = github.get(key, "")
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKFLOW": s("workflow"),
        "GITHUB_RUN_ID": s("run_id"),
        "GITHUB_RUN_NUMBER": s("run_number"),
        "GITHUB_RUN_ATTEMPT": s("run_attempt"),
        "GITHUB_JOB": s("job"),
        "GITHUB_ACTION": action,
        "GITHUB_ACTION_PATH": action_path,
        "GITHUB_ACTION_REPOSITORY": action_repository,
        "GITHUB_ACTION_REF": action_ref,
        "GITHUB_ACTOR": s("actor"),
        "GITHUB_TRIGGERING_ACTOR": s("triggering_actor") or s("actor"),
        "GITHUB_REPOSITORY": s("repository"),
        "GITHUB_REPOSITORY_OWNER": s("repository_owner"),
        "GITHUB_EVENT_NAME": s("event_name"),
        "GITHUB_EVENT_PATH": paths.event_path,
        "GITHUB_WORKSPACE": paths.workspace,
        "GITHUB_SHA": s("sha"),
        "GITHUB_REF": s("ref"),
        "GITHUB_REF_NAME": s("ref_name"),
        "GITHUB_REF_TYPE": s("ref_type"),
        "GITHUB_REF_PROTECTED": s("ref_protected") or "false",
        "GITHUB_HEAD_REF": s("head_ref"),
        "GITHUB_BASE_REF": s("base_ref"),
        "GITHUB_SERVER_URL": s("server_url"),
        "GITHUB_API_URL": s("api_url"),
        "GITHUB_GRAPHQL_URL": s("graphql_url"),
        "GITHUB_RETENTION_DAYS": s("retention_days"),
        "RUNNER_OS": runner.os,
        "RUNNER_ARCH": runner.arch,
        "RUNNER_NAME": runner.name,
        "RUNNER_ENVIRONMENT": "self-hosted",
        "RUNNER_TEMP": paths.temp,
        "RUNNER_TOOL_CACHE": paths.tool_cache,
        "RUNNER_WORKSPACE": paths.runner_workspace,
        "RUNNER_PERFLOG": "/dev/null",
        "RUNNER_TRACKING_ID": "",
    }
    if runner.debug:
        env["RUNNER_DEBUG"] = "1"
    for name, path in files.items():
        env[f"GITHUB_{name}"] = path
        env[f"GITEA_{name}"] = path
    return env
