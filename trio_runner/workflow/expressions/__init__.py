"""The ``${{ }}`` expression language (spec section 5): parse, evaluate, interpolate, conditions.

Public API (all synchronous and pure, apart from the caller's hooks):

``evaluate(expression, contexts, *, status=None, hash_files=None) -> Any``
    Evaluate one expression (text without ``${{ }}``). ``contexts`` maps context
    names (matched case-insensitively) to plain data; a name not in it is an
    error, a missing property is ``None``.
``evaluate_template(template, contexts, ...) -> Any``
    A template that is exactly one ``${{ }}`` segment gives the typed value;
    anything else gives a string; text without segments is returned unchanged.
``render_template(template, contexts, ...) -> str``
    As above where a string is required: an array/object from a single
    segment is an error, everything else goes through ``to_string``.
``interpolate(value, contexts, ..., splice=True) -> Any``
    Evaluate every string template inside dicts/lists (keys untouched). With
    ``splice``, a list item that is a single segment yielding an array is
    spliced into the list.
``evaluate_condition(condition, contexts, *, status, hash_files=None, default_check=True) -> bool``
    An ``if:`` value (implicit or ``${{ }}``-wrapped; empty means ``success()``).
    With ``default_check`` a condition that calls no status function becomes
    ``success() && (<cond>)``; pass ``False`` for ``pre-if``/``post-if``/
    ``continue-on-error``.
``calls_hash_files(value, *, condition=False) -> bool``
    Whether evaluating ``value`` may hash files. Evaluation calls the
    ``hash_files`` hook synchronously, so Trio callers then run the evaluation in
    a worker thread (``trio.to_thread.run_sync``); a hook that must reach the
    job container can use ``trio.from_thread.run`` from there.
``check_templates(value)``
    Parse every template in a structure (syntax errors at load time).
``to_string``, ``to_number``, ``is_truthy``, ``to_json``: value conversions.
``ExpressionError``: the only error raised for bad expressions or evaluation failures.
``StatusFunctions`` (protocol with ``success/failure/cancelled/always``) and
``FixedStatus`` (``for_job_status``, ``for_needs``, ``for_composite``).
``hash_files(workspace, arguments, *, home=None, tree=None) -> str``: the blocking
implementation over a ``Tree`` of files: ``LocalTree`` (the runner's disk, the default)
or ``ArchiveTree`` (a job container's files read through the engine's archive API).
Environments expose it as ``Environment.hash_files``.
``CaseSensitiveDict``: wrap an object (the Linux/macOS ``env`` context) whose
keys must match exactly.

Parsing is cached on the text, so repeated evaluation of the same templates is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ExpressionError
from .evaluator import Scope, evaluate_expression
from .functions import HashFilesHook
from .hashfiles import hash_files
from .parser import MAX_DEPTH, MAX_LENGTH, parse
from .status import FixedStatus, StatusFunctions
from .templates import (
    check_templates,
    condition_text,
    evaluate_parsed_condition,
    evaluate_parsed_template,
    interpolate_value,
    parse_template,
    render_parsed_template,
    template_calls_function,
)
from .values import CaseSensitiveDict, is_truthy, to_json, to_number, to_string

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "CaseSensitiveDict",
    "ExpressionError",
    "FixedStatus",
    "HashFilesHook",
    "StatusFunctions",
    "calls_hash_files",
    "check_templates",
    "evaluate",
    "evaluate_condition",
    "evaluate_template",
    "hash_files",
    "interpolate",
    "is_truthy",
    "render_template",
    "to_json",
    "to_number",
    "to_string",
]


def evaluate(
    expression: str,
    contexts: Mapping[str, Any],
    *,
    status: StatusFunctions | None = None,
    hash_files: HashFilesHook | None = None,
) -> Any:
    return evaluate_expression(parse(expression), Scope.create(contexts, status, hash_files))


def evaluate_template(
    template: str,
    contexts: Mapping[str, Any],
    *,
    status: StatusFunctions | None = None,
    hash_files: HashFilesHook | None = None,
) -> Any:
    return evaluate_parsed_template(
        parse_template(template), Scope.create(contexts, status, hash_files)
    )


def render_template(
    template: str,
    contexts: Mapping[str, Any],
    *,
    status: StatusFunctions | None = None,
    hash_files: HashFilesHook | None = None,
) -> str:
    return render_parsed_template(
        parse_template(template), Scope.create(contexts, status, hash_files)
    )


def interpolate(
    value: Any,
    contexts: Mapping[str, Any],
    *,
    status: StatusFunctions | None = None,
    hash_files: HashFilesHook | None = None,
    splice: bool = True,
) -> Any:
    return interpolate_value(value, Scope.create(contexts, status, hash_files), splice=splice)


def evaluate_condition(
    condition: Any,
    contexts: Mapping[str, Any],
    *,
    status: StatusFunctions,
    hash_files: HashFilesHook | None = None,
    default_check: bool = True,
) -> bool:
    return evaluate_parsed_condition(
        condition_text(condition),
        Scope.create(contexts, status, hash_files),
        default_check=default_check,
    )


def calls_hash_files(value: Any, *, condition: bool = False) -> bool:
    return template_calls_function(value, "hashFiles", condition=condition)
