"""Action repositories for tests: bare git repos on disk, optionally served over HTTP.

The sources live in tests/workflows/actions/repos/<owner>/<repo>; each becomes a bare
repository ``<root>/<owner>/<repo>`` with branch ``main`` and tag ``v1``, reachable as
``file://<root>`` (smart protocol, shallow clones work) or through :func:`serve_dumb_http`
(git's dumb HTTP protocol; it cannot clone shallow, so the full-clone fallback runs).
"""

from __future__ import annotations

import base64
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "workflows" / "actions" / "repos"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "HOME": "/nonexistent",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(work: Path, source: Path) -> str:
    """A work tree with ``source``'s files committed on main and tagged v1; its sha."""
    shutil.copytree(source, work)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "action", cwd=work)
    git("tag", "v1", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def make_action_repos(root: Path) -> dict[str, str]:
    """Bare repos for every source under ``root``; repository -> commit sha."""
    shas: dict[str, str] = {}
    for owner in sorted(SOURCES.iterdir()):
        for repo in sorted(owner.iterdir()):
            name = f"{owner.name}/{repo.name}"
            work = root.parent / "work-trees" / name
            shas[name] = make_repo(work, repo)
            bare = root / name
            bare.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "-q", "--bare", str(work), str(bare), cwd=root.parent)
            git("update-server-info", cwd=bare)
    return shas


@dataclass
class DumbHttp:
    url: str
    #: Authorization headers received, by request path.
    authorizations: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def serve_dumb_http(root: Path, *, private: str, token: str) -> Iterator[DumbHttp]:
    """Serve ``root`` on 127.0.0.1; paths under ``/<private>/`` need ``token:<token>``."""
    expected = "Basic " + base64.b64encode(f"token:{token}".encode()).decode()
    state = DumbHttp("")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            state.authorizations.append((self.path, header))
            if self.path.startswith(f"/{private}/") and header != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
