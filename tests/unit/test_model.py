"""Workflow and action loading: YAML 1.2 reading, validation, names and step keys."""

from __future__ import annotations

import math

import pytest

from trio_runner.errors import ConfigError
from trio_runner.workflow import yamlload
from trio_runner.workflow.model import (
    Container,
    RunsOn,
    Step,
    Strategy,
    WorkflowError,
    load_action,
    load_task_payload,
    load_workflow,
    single_job,
    step_display_name,
    step_keys,
)
from trio_runner.workflow.yamlload import Mark, load_yaml, to_python


def wf(body: str) -> str:
    return "on: push\njobs:\n  j:\n    runs-on: x\n" + body


def error_of(text: str, file: str = "w.yml") -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load_workflow(text, file)
    return info.value


# --- YAML 1.2 --------------------------------------------------------------------------


def test_yaml11_booleans_stay_strings() -> None:
    data = to_python(load_yaml("on: yes\nyes: no\ny: n\noff: On\nt: true\nf: FALSE\n", "f"))
    assert data == {"on": "yes", "yes": "no", "y": "n", "off": "On", "t": True, "f": False}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3.10", 3.1),
        ("010", 10),
        ("0o17", 15),
        ("0x1F", 31),
        ("1e3", 1000.0),
        ("~", None),
        ("null", None),
        ("", None),
        ("-.inf", -math.inf),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("12:30", "12:30"),
        ("2024-01-01", "2024-01-01"),
        ("'3.10'", "3.10"),
        ("!!str 3", "3"),
        ("!!float 3", 3.0),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    assert to_python(load_yaml(f"k: {text}\n", "f")) == {"k": value}


def test_scalar_keeps_literal_text_and_mark() -> None:
    root = load_yaml("a:\n  v: 3.10\n", "f.yml")
    assert isinstance(root, yamlload.YMap)
    inner = root.get("a")
    assert isinstance(inner, yamlload.YMap)
    node = inner.get("v")
    assert isinstance(node, yamlload.YScalar)
    assert (node.value, node.text, node.mark) == (3.1, "3.10", Mark("f.yml", 2, 6))


def test_nan_is_a_float() -> None:
    value = to_python(load_yaml("k: .NaN", "f"))["k"]
    assert isinstance(value, float) and math.isnan(value)


def test_anchors_aliases_and_merge_keys() -> None:
    text = (
        "base: &b {x: 1, y: 2}\n"
        "other: &o {y: 3, z: 4}\n"
        "m:\n  <<: [*b, *o]\n  x: 9\n"
        "one:\n  <<: *o\n"
        "list: *b\n"
    )
    data = to_python(load_yaml(text, "f"))
    assert data["m"] == {"x": 9, "y": 2, "z": 4}
    assert data["one"] == {"y": 3, "z": 4}
    assert data["list"] == {"x": 1, "y": 2}


def test_quoted_merge_key_is_a_plain_key() -> None:
    assert to_python(load_yaml("'<<': 1", "f")) == {"<<": 1}


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ("a: [1\n", "invalid YAML", 2),
        ("a: *nope\n", "undefined alias", 1),
        ("a: 1\na: 2\n", "duplicate key 'a'", 2),
        ("a: &x [*x]\n", "recursive alias", 1),
        ("a: !custom 1\n", "unsupported tag", 1),
        ("a: !!int x\n", "is not a valid int", 1),
        ("<<: 1\n", "merge key", 1),
        ("a: 1\n---\nb: 2\n", "single document", 2),
    ],
)
def test_yaml_errors_name_position(text: str, problem: str, line: int) -> None:
    with pytest.raises(WorkflowError) as info:
        load_yaml(text, "f.yml")
    assert problem in str(info.value)
    assert info.value.mark is not None
    assert (info.value.mark.file, info.value.mark.line) == ("f.yml", line)
    assert str(info.value).startswith(f"f.yml:{line}:")


def test_pure_python_loader_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlload, "_Loader", yamlload._PyLoader)
    assert to_python(load_yaml("on: yes\nv: 3.10\n", "f")) == {"on": "yes", "v": 3.1}


def test_workflow_error_is_config_error() -> None:
    assert issubclass(WorkflowError, ConfigError)


def test_empty_and_invalid_encoding() -> None:
    assert "empty" in str(error_of(""))
    assert "UTF-8" in str(error_of(b"a: \xff"))  # type: ignore[arg-type]


# --- workflows -------------------------------------------------------------------------

FULL = """
name: CI
on:
  push: {branches: [main]}
  workflow_dispatch:
    inputs:
      version: {type: string, default: 3.10}
      flag: {type: boolean, default: true, required: true}
      count: {type: number, default: 2}
      pick: {type: choice, options: [a, b], default: a}
  workflow_call:
    inputs:
      x: {type: number}
env: {PY: 3.10, EMPTY: , YES: yes}
defaults:
  run: {shell: bash, working-directory: src}
jobs:
  build:
    name: build (1.18)
    runs-on: {group: g, labels: [a, b]}
    needs: setup
    if: ${{ always() }}
    env: {A: 1}
    defaults: {run: {shell: sh}}
    outputs: {o: "${{ steps.s.outputs.v }}"}
    strategy:
      matrix: {go: [1.18], os: [linux]}
      fail-fast: false
      max-parallel: 2
      job-index: 0
      job-total: 3
    container:
      image: node:20
      credentials: {username: u, password: "${{ secrets.P }}"}
      env: {C: 1}
      ports: [80]
      volumes: [/a:/b]
      options: --cpus 1
    services:
      redis: redis:7
      db:
        image: postgres
        entrypoint: /bin/sh
        command: -c true
    timeout-minutes: 30
    continue-on-error: ${{ matrix.experimental }}
    environment: {name: prod, url: "https://x"}
    permissions: read-all
    concurrency: g
    steps:
      - id: s
        name: Say ${{ matrix.go }}
        if: success()
        run: echo hi
        shell: bash
        working-directory: sub
        env: {V: 1.10}
        continue-on-error: true
        timeout-minutes: 1.5
      - uses: actions/setup-python@v5
        with: {python-version: 3.10, flag: yes}
"""


def test_full_workflow() -> None:
    w = load_workflow(FULL, "ci.yml")
    assert w.name == "CI"
    assert w.on["push"] == {"branches": ["main"]}
    assert set(w.on) == {"push", "workflow_dispatch", "workflow_call"}
    inputs = w.dispatch_inputs
    assert inputs["version"].default == "3.10"
    assert (inputs["flag"].type, inputs["flag"].default, inputs["flag"].required) == (
        "boolean",
        True,
        True,
    )
    assert inputs["count"].default == 2
    assert inputs["pick"].options == ["a", "b"]
    assert w.call_inputs["x"].type == "number"
    assert w.env == {"PY": "3.10", "EMPTY": "", "YES": "yes"}
    assert (w.defaults.shell, w.defaults.working_directory) == ("bash", "src")
    job = single_job(w)
    assert job.id == "build" and job.display_name() == "build (1.18)"
    assert job.runs_on == RunsOn(labels=["a", "b"], group="g")
    assert job.needs == ["setup"]
    assert job.if_ == "${{ always() }}"
    assert job.env == {"A": "1"}
    assert job.defaults.shell == "sh"
    assert job.outputs == {"o": "${{ steps.s.outputs.v }}"}
    assert job.strategy == Strategy(
        matrix={"go": [1.18], "os": ["linux"]},
        fail_fast=False,
        max_parallel=2,
        job_index=0,
        job_total=3,
    )
    assert job.matrix_values == {"go": 1.18, "os": "linux"}
    assert job.strategy_context == {
        "fail-fast": False,
        "max-parallel": 2,
        "job-index": 0,
        "job-total": 3,
    }
    c = job.container
    assert isinstance(c, Container)
    assert (c.image, c.env, c.ports, c.volumes, c.options) == (
        "node:20",
        {"C": "1"},
        ["80"],
        ["/a:/b"],
        "--cpus 1",
    )
    assert c.credentials is not None and c.credentials.password == "${{ secrets.P }}"
    assert job.services["redis"].image == "redis:7"
    assert (job.services["db"].entrypoint, job.services["db"].command) == ("/bin/sh", "-c true")
    assert job.timeout_minutes == 30
    assert job.continue_on_error == "${{ matrix.experimental }}"
    assert job.environment == {"name": "prod", "url": "https://x"}
    s0, s1 = job.steps
    assert (s0.id, s0.name, s0.if_, s0.run, s0.shell, s0.working_directory) == (
        "s",
        "Say ${{ matrix.go }}",
        "success()",
        "echo hi",
        "bash",
        "sub",
    )
    assert s0.env == {"V": "1.10"}
    assert (s0.continue_on_error, s0.timeout_minutes) == (True, 1.5)
    assert s1.uses == "actions/setup-python@v5"
    assert s1.with_ == {"python-version": "3.10", "flag": "yes"}
    assert s1.index == 1 and s1.mark.line == FULL.count("\n", 0, FULL.index("- uses")) + 1


@pytest.mark.parametrize(
    ("runs_on", "expected"),
    [
        ("ubuntu-latest", RunsOn(labels=["ubuntu-latest"])),
        ("[a, b]", RunsOn(labels=["a", "b"])),
        ("{group: g}", RunsOn(group="g")),
        ("{labels: one}", RunsOn(labels=["one"])),
        ("${{ matrix.os }}", "${{ matrix.os }}"),
    ],
)
def test_runs_on_forms(runs_on: str, expected: object) -> None:
    w = load_workflow(f"jobs:\n  j:\n    runs-on: {runs_on}\n    steps: []\n", "w")
    assert w.jobs["j"].runs_on == expected


def test_on_forms() -> None:
    assert load_workflow("on: push\njobs: {}", "w").on == {"push": None}
    assert load_workflow("on: [push, pull_request]\njobs: {}", "w").on == {
        "push": None,
        "pull_request": None,
    }


def test_templates_for_whole_values() -> None:
    text = (
        "env: ${{ fromJSON(vars.E) }}\njobs:\n  j:\n    runs-on: x\n"
        "    strategy: {matrix: '${{ fromJSON(vars.M) }}', max-parallel: '${{ vars.N }}'}\n"
        "    steps:\n      - run: x\n        env: ${{ fromJSON(vars.E) }}\n"
    )
    w = load_workflow(text, "w")
    assert w.env == "${{ fromJSON(vars.E) }}"
    strategy = w.jobs["j"].strategy
    assert isinstance(strategy, Strategy)
    assert strategy.matrix == "${{ fromJSON(vars.M) }}"
    assert strategy.max_parallel == "${{ vars.N }}"
    assert w.jobs["j"].steps[0].env == "${{ fromJSON(vars.E) }}"


def test_reusable_workflow_job() -> None:
    text = (
        "jobs:\n  call:\n    uses: ./.gitea/workflows/r.yml\n"
        "    with: {n: 3, b: true, s: x}\n    secrets: inherit\n"
    )
    job = load_workflow(text, "w").jobs["call"]
    assert (job.uses, job.with_, job.secrets, job.runs_on) == (
        "./.gitea/workflows/r.yml",
        {"n": 3, "b": True, "s": "x"},
        "inherit",
        None,
    )


@pytest.mark.parametrize(
    ("body", "problem", "line", "column"),
    [
        ("    steps:\n      - run: x\n        bogus: 1\n", "unexpected key 'bogus'", 7, 9),
        ("    steps:\n      - name: x\n", "exactly one of 'run' and 'uses'", 6, 9),
        ("    steps:\n      - run: x\n        uses: a/b@v1\n", "exactly one", 6, 9),
        ("    steps:\n      - run: x\n        id: 1abc\n", "invalid id '1abc'", 7, 13),
        ("    steps:\n      - run: x\n        id: a.b\n", "invalid id 'a.b'", 7, 13),
        (
            "    steps:\n      - {run: x, id: s}\n      - {run: y, id: s}\n",
            "duplicate step id 's'",
            7,
            9,
        ),
        ("    steps:\n      - run: [x]\n", "expected a string", 6, 14),
        ("    steps:\n      - run: x\n        continue-on-error: maybe\n", "boolean", 7, 28),
        ("    steps:\n      - run: x\n        timeout-minutes: soon\n", "number", 7, 26),
        ("    steps:\n      - run: x\n        env: [a]\n", "expected a mapping", 7, 14),
        ("    steps: {}\n", "expected a list of steps", 5, 12),
        ("    bogus: 1\n", "unexpected key 'bogus'", 5, 5),
        ("    needs: [a, [b]]\n", "expected a string", 5, 16),
        ("    strategy: {matrix: {os: linux}}\n", "expected a list of values", 5, 29),
        ("    strategy: {matrix: {include: [1]}}\n", "list of mappings", 5, 34),
        ("    container: {image: x, entrypoint: y}\n", "unexpected key 'entrypoint'", 5, 27),
        ("    continue-on-error: yes\n", "expected a boolean", 5, 24),
    ],
)
def test_job_and_step_errors(body: str, problem: str, line: int, column: int) -> None:
    err = error_of(wf(body))
    assert problem in err.problem
    assert err.mark is not None and (err.mark.line, err.mark.column) == (line, column)
    assert str(err).startswith(f"w.yml:{line}:{column}: jobs.j")


def test_workflow_level_errors() -> None:
    assert "unexpected key 'foo'" in str(error_of("foo: 1\njobs: {}\n"))
    assert "invalid id 'a b'" in str(error_of("jobs:\n  a b: {runs-on: x}\n"))
    assert "'runs-on' is required" in str(error_of("jobs:\n  a: {steps: []}\n"))
    err = error_of(
        "on: {workflow_dispatch: {inputs: {a: {type: boolean, default: 1}}}}\njobs: {}\n"
    )
    assert "expected a boolean" in str(err)
    assert "unknown input type 'file'" in str(
        error_of("on: {workflow_call: {inputs: {a: {type: file}}}}\njobs: {}\n")
    )


def test_single_job_counts() -> None:
    with pytest.raises(WorkflowError, match=r"^no job found$"):
        single_job(load_workflow("jobs: {}", "w"))
    two = load_workflow("jobs:\n  b: {runs-on: x}\n  a: {runs-on: x}\n", "w")
    with pytest.raises(WorkflowError, match=r"^multiple jobs found: \[b a\]$"):
        single_job(two)


def test_load_task_payload() -> None:
    payload = wf("    strategy: {matrix: {v: [1]}}\n    steps: [{run: x}]\n").encode()
    workflow, job_id = load_task_payload(payload)
    assert job_id == "j" and workflow.jobs["j"].matrix_values == {"v": 1}
    several = wf("    strategy: {matrix: {v: [1, 2]}}\n").encode()
    with pytest.raises(WorkflowError, match="exactly one value"):
        load_task_payload(several)


# --- actions ---------------------------------------------------------------------------


def test_node_action() -> None:
    text = """
name: Setup
description: d
inputs:
  version: {description: v, default: 3.10, required: true}
  old: {deprecationMessage: use version}
outputs:
  path: {description: p}
runs:
  using: Node20
  main: dist/index.js
  pre: pre.js
  pre-if: runner.os == 'Linux'
  post: post.js
  post-if: always()
extra-key: tolerated
"""
    action = load_action(text, "action.yml")
    assert action.name == "Setup"
    assert action.inputs["version"].default == "3.10"
    assert action.inputs["version"].required is True
    assert action.inputs["old"].deprecation_message == "use version"
    assert action.outputs["path"].description == "p"
    runs = action.runs
    assert (runs.using, runs.is_node, runs.main, runs.pre, runs.post) == (
        "node20",
        True,
        "dist/index.js",
        "pre.js",
        "post.js",
    )
    assert (runs.pre_if, runs.post_if) == ("runner.os == 'Linux'", "always()")


def test_docker_action() -> None:
    text = (
        "runs:\n  using: docker\n  image: Dockerfile\n  entrypoint: /e.sh\n"
        "  pre-entrypoint: /pre.sh\n  post-entrypoint: /post.sh\n"
        "  args: ['${{ inputs.a }}', 1.10]\n  env: {K: 1}\n"
    )
    runs = load_action(text, "a.yml").runs
    assert (runs.using, runs.image, runs.entrypoint, runs.pre_entrypoint, runs.post_entrypoint) == (
        "docker",
        "Dockerfile",
        "/e.sh",
        "/pre.sh",
        "/post.sh",
    )
    assert runs.args == ["${{ inputs.a }}", "1.10"]
    assert runs.env == {"K": "1"}


def test_composite_action() -> None:
    text = (
        "outputs:\n  o: {value: '${{ steps.a.outputs.x }}'}\n"
        "runs:\n  using: composite\n  steps:\n"
        "    - {id: a, run: echo, shell: bash}\n    - uses: ./inner\n"
    )
    action = load_action(text, "a.yml")
    assert action.outputs["o"].value == "${{ steps.a.outputs.x }}"
    assert [s.id for s in action.runs.steps] == ["a", None]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("runs: {using: node20}\n", "'main' is required"),
        ("runs: {using: docker}\n", "'image' is required"),
        ("runs: {using: composite}\n", "'steps' is required"),
        ("runs: {using: python}\n", "The runs.using key must be one of: [node12, node16"),
        ("name: x\n", "'runs' is required"),
        ("runs: {using: composite, steps: [{run: x}]}\n", "Required property is missing: shell"),
        (
            "runs: {using: composite, steps: [{run: x, shell: sh, timeout-minutes: 1}]}\n",
            "unexpected",
        ),
        ("runs: {using: composite, steps: [{id: a, uses: x}, {id: a, uses: y}]}\n", "duplicate"),
    ],
)
def test_action_errors(text: str, problem: str) -> None:
    with pytest.raises(WorkflowError) as info:
        load_action(text, "action.yml")
    assert problem in str(info.value)
    assert str(info.value).startswith("action.yml:1:")


# --- names and keys --------------------------------------------------------------------


def step(**fields: object) -> Step:
    return Step(index=0, mark=Mark("f", 1, 1), **fields)  # type: ignore[arg-type]


def test_display_names() -> None:
    assert step_display_name(step(name="Build", run="x")) == "Build"
    assert step_display_name(step(run="\n  make all  \n  make test\n")) == "Run make all"
    assert step_display_name(step(uses="actions/checkout@v4")) == "Run actions/checkout@v4"
    assert step_display_name(step(id="only")) == "Run only"


def test_step_keys() -> None:
    steps = [
        step(run="a"),
        step(uses="actions/checkout@v4"),
        step(run="b"),
        step(uses="actions/checkout@v3"),
        step(id="mine", run="c"),
        step(uses="my-org/my_repo/sub@v1"),
        step(uses="./local"),
        step(uses="./local"),
        step(uses="docker://alpine"),
        step(run="d"),
        step(uses="my-org/my_repo@v2"),
    ]
    assert step_keys(steps) == [
        "__run",
        "__actions_checkout",
        "__run_2",
        "actionscheckout2",
        "mine",
        "__my-org_my_repo",
        "__self",
        "__self_2",
        "__docker",
        "__run_3",
        "myorgmyrepo2",
    ]


def test_generated_keys_avoid_explicit_ids() -> None:
    assert step_keys([step(id="__run_2", run="x"), step(run="a"), step(run="b")]) == [
        "__run_2",
        "__run",
        "__run_3",
    ]
