"""Step summaries (``GITHUB_STEP_SUMMARY``): read, mask, cut to size and upload to Gitea.

Each top-level step has one summary file (workflow-execution 6.6). At the end of the
job the non-empty ones are masked, cut to 1 MiB with a visible note, and uploaded when
Gitea advertises the ``job-summary`` capability. Nothing here ever fails the job:
problems are warning rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trio_runner.backends.base import Environment
from trio_runner.executor.commands import warning_row
from trio_runner.executor.joblog import JobLog
from trio_runner.masking import Masker

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_SUMMARY", "SUMMARY_BUDGET", "SummaryTarget", "cut_summary", "publish_summaries"]

MAX_SUMMARY = 1024 * 1024
SUMMARY_BUDGET = 15.0
REQUEST_TIMEOUT = 5.0
RETRY_DELAY = 1.0
CAPABILITY = "job-summary"
TRUNCATED_NOTE = "\n\n> [!WARNING]\n> This step summary was truncated: it exceeded 1 MiB.\n"
_RETRY_STATUS = frozenset({408, 429})


def cut_summary(text: str) -> str:
    """The summary as uploaded: at most 1 MiB of UTF-8, the note included when cut."""
    data = text.encode()
    if len(data) <= MAX_SUMMARY:
        return text
    room = MAX_SUMMARY - len(TRUNCATED_NOTE.encode())
    return data[:room].decode(errors="ignore") + TRUNCATED_NOTE


def _job_id_claim(token: str) -> str:
    """The ``JobID`` claim of the runtime token (a JWT; read, not verified)."""
    parts = token.split(".")
    if len(parts) < 2:
        return ""
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims: Any = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return ""
    value = claims.get("JobID") if isinstance(claims, dict) else None
    return str(value) if isinstance(value, int | str) and str(value) else ""


@dataclass(frozen=True)
class SummaryTarget:
    """Where summaries go; ``url_for`` is None when uploads are not possible."""

    runtime_url: str
    token: str
    run_id: str
    job_id: str
    enabled: bool

    @classmethod
    def from_job(cls, runner_env: Mapping[str, str], github: Mapping[str, Any]) -> SummaryTarget:
        capabilities = re.split(r"[\s,]+", runner_env.get("GITEA_ACTIONS_CAPABILITIES", ""))
        token = runner_env.get("ACTIONS_RUNTIME_TOKEN", "")
        runtime_url = runner_env.get("ACTIONS_RUNTIME_URL", "").rstrip("/")
        run_id, job_id = str(github.get("run_id") or ""), _job_id_claim(token)
        enabled = CAPABILITY in capabilities and bool(runtime_url and token and run_id and job_id)
        return cls(runtime_url, token, run_id, job_id, enabled)

    def url_for(self, index: int) -> str:
        return (
            f"{self.runtime_url}/_apis/pipelines/workflows/{self.run_id}/jobs/{self.job_id}"
            f"/steps/{index}/summary"
        )


async def _upload(client: httpx.AsyncClient, target: SummaryTarget, index: int, text: str) -> str:
    """PUT one summary; an empty string on success, else the problem."""
    import httpx

    headers = {
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "text/markdown; charset=utf-8",
    }
    problem = ""
    for attempt in range(2):
        if attempt:
            await trio.sleep(RETRY_DELAY)
        try:
            response = await client.put(
                target.url_for(index), content=text.encode(), headers=headers
            )
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
            continue
        if response.is_success:
            return ""
        problem = f"HTTP {response.status_code}"
        if response.status_code not in _RETRY_STATUS and response.status_code < 500:
            break
    return problem


async def publish_summaries(
    env: Environment,
    log: JobLog,
    masker: Masker,
    path_of: Callable[[int], str],
    count: int,
    target: SummaryTarget,
) -> None:
    """Read the summary of each of ``count`` steps and upload the non-empty ones."""
    summaries: list[tuple[int, str]] = []
    for index in range(count):
        try:
            data = await env.read_file(path_of(index))
        except OSError:
            continue
        text = masker.mask(data.decode(errors="replace"))
        if text.strip():
            cut = cut_summary(text)
            if cut is not text:
                await log.write(
                    warning_row(f"The step summary of step {index + 1} exceeds 1 MiB; it was cut")
                )
            summaries.append((index, cut))
    if not summaries or not target.enabled:
        return
    # httpx (and what it pulls in) costs tens of milliseconds to import; only jobs that
    # upload a summary pay for it.
    import httpx

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        for index, text in summaries:
            problem = await _upload(client, target, index, text)
            if problem:
                await log.write(
                    warning_row(f"Unable to upload the step summary of step {index + 1}: {problem}")
                )
