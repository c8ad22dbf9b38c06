"""Pure parts of action steps: uses parsing, input names, hosts, patches, clones, summaries."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.integration.action_repos import git, make_repo
from trio_runner.executor.action_cache import (
    ActionFetchError,
    CloneSettings,
    clone_action,
    git_environment,
    patch_toolkit,
)
from trio_runner.executor.actions import (
    DockerRef,
    LocalRef,
    RemoteRef,
    default_actions_host,
    input_env_name,
    parse_uses,
)
from trio_runner.executor.steps import StepError
from trio_runner.executor.summaries import MAX_SUMMARY, TRUNCATED_NOTE, SummaryTarget, cut_summary


@pytest.mark.parametrize(
    ("uses", "expected"),
    [
        ("docker://alpine:3", DockerRef("alpine:3")),
        ("./.github/actions/x/", LocalRef(".github/actions/x")),
        ("actions/checkout@v4", RemoteRef("actions", "checkout", "", "v4")),
        ("acme/tools/sub/dir@main", RemoteRef("acme", "tools", "sub/dir", "main")),
        (
            "https://gitea.example:3000/acme/tools/sub@v1.2",
            RemoteRef("acme", "tools", "sub", "v1.2", "https://gitea.example:3000"),
        ),
        ("http://127.0.0.1/o/r@abc", RemoteRef("o", "r", "", "abc", "http://127.0.0.1")),
    ],
)
def test_parse_uses(uses: str, expected: object) -> None:
    assert parse_uses(uses) == expected


@pytest.mark.parametrize("uses", ["actions/checkout", "checkout@v4", "a/b@", "$/x@v1"])
def test_parse_uses_rejects_bad_references(uses: str) -> None:
    with pytest.raises(StepError, match=r"Expected format \{org\}/\{repo\}\[/path\]@ref"):
        parse_uses(uses, self_repository=RemoteRef("o", "r", "", "sha"))


def test_self_repository_reference() -> None:
    own = RemoteRef("alice", "app", "", "0123abcd", "https://gitea.example")
    assert parse_uses("$/ci/action", self_repository=own) == RemoteRef(
        "alice", "app", "ci/action", "0123abcd", "https://gitea.example"
    )
    with pytest.raises(StepError):
        parse_uses("$/../escape", self_repository=own)


def test_remote_display_and_clone_url() -> None:
    ref = RemoteRef("acme", "tools", "sub", "v1")
    assert ref.display == "acme/tools/sub@v1"
    assert ref.clone_url("gitea.example/") == "https://gitea.example/acme/tools"
    assert RemoteRef("a", "b", "", "v1", "http://h:1").clone_url("x") == "http://h:1/a/b"


@pytest.mark.parametrize(
    ("name", "env"),
    [("my-input", "INPUT_MY-INPUT"), ("my input", "INPUT_MY_INPUT"), ("a.b", "INPUT_A.B")],
)
def test_input_env_names(name: str, env: str) -> None:
    assert input_env_name(name) == env


def test_default_actions_host() -> None:
    gh = "https://github.com"
    assert default_actions_host(gh, "https://mirror.example", "https://gitea") == (
        "https://mirror.example"
    )
    assert default_actions_host("https://gitea/", "https://mirror", "x") == "https://gitea"
    assert default_actions_host("", "", "https://gitea/") == "https://gitea"
    assert default_actions_host("", "", "") == gh


def test_token_goes_only_to_allowed_hosts() -> None:
    settings = CloneSettings(token="t0ken", auth_hosts=frozenset({"gitea.example"}))
    env = git_environment("https://gitea.example/o/r", settings)
    expected = "Authorization: Basic " + base64.b64encode(b"token:t0ken").decode()
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_VALUE_0"] == expected
    assert env["GIT_CONFIG_KEY_0"] == "http.https://gitea.example/o/r.extraHeader"
    for url in ("https://github.com/o/r", "https://user:pw@gitea.example/o/r"):
        assert git_environment(url, settings)["GIT_CONFIG_COUNT"] == "0"
    insecure = CloneSettings(insecure_hosts=frozenset({"gitea.example"}))
    assert git_environment("https://gitea.example/o/r", insecure)["GIT_CONFIG_VALUE_0"] == "false"


ARTIFACT = b"""class GHESNotSupportedError extends Error {}
function isGhes() {
  const ghUrl = new URL(process.env['GITHUB_SERVER_URL'] || 'https://github.com');
  const hostname = ghUrl.hostname.trimEnd().toUpperCase();
  const isLocalHost = hostname.endsWith('.LOCALHOST');
  return !isGitHubHost && !isGheHost && !isLocalHost;
}
const h = host.toLowerCase().endsWith('.localhost');
"""
CACHE = b"""function isGhes() { return !x.endsWith( ".LOCALHOST" ); }
function getCacheServiceURL() {
    if (process.env['ACTIONS_CACHE_SERVICE_V2']) {}
    switch (version) {
        case 'v1':
            return (process.env['ACTIONS_CACHE_URL'] ||
                process.env['ACTIONS_RESULTS_URL'] ||
                '');
        case 'v2':
            return process.env['ACTIONS_RESULTS_URL'] || '';
    }
}
"""


def test_patch_toolkit_artifact_and_cache() -> None:
    patched = patch_toolkit(ARTIFACT)
    assert patched is not None
    assert b"hostname.endsWith('')" in patched
    assert b"endsWith('.localhost')" in patched  # the HTTP client's test stays
    cache = patch_toolkit(CACHE)
    assert cache is not None
    assert b'endsWith( "" )' in cache
    prefer = b"(process.env.ACTIONS_CACHE_URL||process.env.ACTIONS_RESULTS_URL)"
    assert cache.count(prefer) == 2
    assert b"return " + prefer + b" || '';" in cache


def test_patch_toolkit_leaves_other_files_alone() -> None:
    assert patch_toolkit(b"console.log(x.endsWith('.LOCALHOST'))") is None
    assert patch_toolkit(b"GHESNotSupportedError without the host test") is None


def test_cut_summary() -> None:
    assert cut_summary("small") == "small"
    big = "é" * MAX_SUMMARY
    cut = cut_summary(big)
    assert len(cut.encode()) <= MAX_SUMMARY
    assert cut.endswith(TRUNCATED_NOTE)


def test_summary_target_needs_the_capability_and_a_job_id() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"JobID": 42}).encode()).decode().rstrip("=")
    env = {
        "ACTIONS_RUNTIME_URL": "https://gitea/api/actions_pipeline/",
        "ACTIONS_RUNTIME_TOKEN": f"head.{claims}.sig",
        "GITEA_ACTIONS_CAPABILITIES": "cancelling, job-summary",
    }
    target = SummaryTarget.from_job(env, {"run_id": "7"})
    assert target.enabled
    assert target.url_for(2) == (
        "https://gitea/api/actions_pipeline/_apis/pipelines/workflows/7/jobs/42/steps/2/summary"
    )
    without = SummaryTarget.from_job({**env, "GITEA_ACTIONS_CAPABILITIES": "cancelling"}, {})
    assert not without.enabled


# --- clones -------------------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "action.yml").write_text("runs:\n  using: node20\n  main: index.js\n")
    work = tmp_path / "origin"
    first = make_repo(work, source)
    (work / "second.txt").write_text("2\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "second", cwd=work)
    return work, first


def no_redact(text: str) -> str:
    return text


async def test_clone_tag_branch_and_commit(origin: tuple[Path, str], tmp_path: Path) -> None:
    work, first = origin
    url = f"file://{work}"
    cache = tmp_path / "cache"
    tag = await clone_action(cache / "tag", url, "v1", CloneSettings(), redact=no_redact)
    assert tag.sha == first and (cache / "tag" / ".git" / "shallow").exists()
    branch = await clone_action(cache / "branch", url, "main", CloneSettings(), redact=no_redact)
    assert branch.sha == git("rev-parse", "main", cwd=work)
    assert (cache / "branch" / "second.txt").exists()
    # A commit cannot be cloned shallow: the full clone fallback finds it.
    commit = await clone_action(cache / "commit", url, first, CloneSettings(), redact=no_redact)
    assert commit.sha == first and not (cache / "commit" / "second.txt").exists()
    with pytest.raises(ActionFetchError, match=f"use the full commit SHA {first}"):
        await clone_action(cache / "short", url, first[:8], CloneSettings(), redact=no_redact)
    with pytest.raises(ActionFetchError, match="no tag, branch or commit"):
        await clone_action(cache / "none", url, "v9", CloneSettings(), redact=no_redact)


async def test_existing_clones_are_fetched_unless_offline(
    origin: tuple[Path, str], tmp_path: Path
) -> None:
    work, _ = origin
    url, target = f"file://{work}", tmp_path / "cache" / "main"
    await clone_action(target, url, "main", CloneSettings(shallow=False), redact=no_redact)
    (work / "third.txt").write_text("3\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "third", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    offline = await clone_action(target, url, "main", CloneSettings(offline=True), redact=no_redact)
    assert offline.sha != head
    fetched = await clone_action(target, url, "main", CloneSettings(), redact=no_redact)
    assert fetched.sha == head and (target / "third.txt").exists()


async def test_after_checkout_sees_the_files_and_patches_survive_only_until_fetch(
    origin: tuple[Path, str], tmp_path: Path
) -> None:
    work, _ = origin
    seen: list[bool] = []

    def inspect(root: Path) -> None:
        seen.append((root / "action.yml").is_file())
        (root / "action.yml").write_text("patched")

    target = tmp_path / "cache" / "x"
    await clone_action(target, f"file://{work}", "v1", CloneSettings(), redact=no_redact,
                       after_checkout=inspect)  # fmt: skip
    assert seen == [True]
    await clone_action(target, f"file://{work}", "v1", CloneSettings(), redact=no_redact)
    assert (target / "action.yml").read_text().startswith("runs:")
