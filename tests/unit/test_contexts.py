"""The ``github`` context built from a task context (workflow-execution 1.3, 4.1)."""

from __future__ import annotations

from typing import Any

from trio_runner.workflow.contexts import JobPaths, ServerUrls, github_context

PATHS = JobPaths(workspace="/w/ws", runner_dir="/w/act", temp="/w/tmp", tool_cache="/w/tc")


def build(task: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
    return github_context(
        task,
        secrets=secrets or {},
        workflow_name="CI",
        job_id="build",
        paths=PATHS,
        urls=ServerUrls("gitea.example"),
    )


def test_documented_keys_are_always_present_with_their_types() -> None:
    ctx = build({"event_name": "push"})
    for key in ("repositoryUrl", "retention_days", "run_id", "head_ref", "base_ref"):
        assert ctx[key] == ""
    assert ctx["secret_source"] == "Actions"
    assert ctx["ref_protected"] is False
    assert ctx["event"] == {}
    assert (ctx["server_url"], ctx["api_url"]) == (
        "https://gitea.example",
        "https://gitea.example/api/v1",
    )


def test_task_values_win_over_defaults() -> None:
    ctx = build(
        {
            "repositoryUrl": "https://gitea.example/o/r",
            "secret_source": "None",
            "ref_protected": True,
            "token": "task-token",
        }
    )
    assert ctx["repositoryUrl"] == "https://gitea.example/o/r"
    assert ctx["secret_source"] == "None" and ctx["ref_protected"] is True
    assert ctx["token"] == "task-token"


def test_token_prefers_gitea_token_then_github_token() -> None:
    assert build({"token": "t"}, {"GITHUB_TOKEN": "gh"})["token"] == "gh"
    assert build({"token": "t"}, {"GITHUB_TOKEN": "gh", "GITEA_TOKEN": "ge"})["token"] == "ge"
    assert build({}, {})["token"] == ""
