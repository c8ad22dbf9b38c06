"""Runner-provided job variables: proxies and their credentials (workflow-execution 4.4, 7)."""

from __future__ import annotations

from trio_runner.executor.runner_env import CacheAccess, proxy_passwords, proxy_variables


def test_no_proxy_means_no_variables() -> None:
    assert proxy_variables({"PATH": "/bin"}, CacheAccess("http://10.1.2.3:4000/")) == {}


def test_both_spellings_and_no_proxy_additions() -> None:
    environ = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "internal.example,localhost"}
    variables = proxy_variables(environ, CacheAccess("http://10.1.2.3:4000/"), ["db"])
    assert variables["https_proxy"] == variables["HTTPS_PROXY"] == "http://proxy:3128"
    assert "http_proxy" not in variables
    assert variables["no_proxy"] == variables["NO_PROXY"]
    assert variables["no_proxy"].split(",") == [
        "internal.example",
        "localhost",
        "127.0.0.1",
        "::1",
        "db",
        "10.1.2.3",
    ]


def test_proxy_passwords_are_found_for_masking() -> None:
    environ = {"http_proxy": "http://user:s3cret@proxy:3128", "HTTPS_PROXY": "http://proxy"}
    assert proxy_passwords(environ) == ["s3cret"]
