"""The fake's side of the wire: strict request decoding, answer encoding, error answers.

Requests are checked harder than Gitea does (unknown fields, nulls, naive timestamps and
invalid UTF-8 are refused) so that a sloppy client shows up in tests. Answers are encoded
the way Gitea's protojson encoder does it: lowerCamelCase, defaults omitted, int64 values as
decimal strings, bytes as base64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar, Union

import msgspec
import msgspec.inspect as mi

T = TypeVar("T", bound=msgspec.Struct)

# Connect code -> HTTP status (spec 2.1).
STATUS_FOR_CODE = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}

_GRPC_NAMES = {
    "unauthenticated": "Unauthenticated",
    "internal": "Internal",
    "already_exists": "AlreadyExists",
    "invalid_argument": "InvalidArgument",
    "not_found": "NotFound",
    "unavailable": "Unavailable",
    "permission_denied": "PermissionDenied",
}


@dataclass
class RpcError(Exception):
    """A failed call as Gitea produces it.

    ``grpc`` errors are gRPC status errors that Gitea's Connect layer does not translate:
    on the wire they become ``unknown`` + "rpc error: code = X desc = ..." (unless the fake
    runs with real Connect codes). Other errors carry their Connect code directly.
    """

    code: str
    message: str
    grpc: bool = False

    def body_and_status(self, connect_codes: bool) -> tuple[dict[str, str], int]:
        if self.grpc and not connect_codes:
            text = f"rpc error: code = {_GRPC_NAMES[self.code]} desc = {self.message}"
            return {"code": "unknown", "message": text}, 500
        return {"code": self.code, "message": self.message}, STATUS_FOR_CODE[self.code]


def grpc_error(code: str, desc: str) -> RpcError:
    return RpcError(code, desc, grpc=True)


def plain_error(message: str) -> RpcError:
    """What Register returns: a plain Go error, which Connect sends as ``unknown``."""
    return RpcError("unknown", message)


class DecodeProblem(Exception):
    """A request the fake refuses; ``violation`` says which protocol rule it breaks."""

    def __init__(self, message: str, violation: str, task_id: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.violation = violation
        self.task_id = task_id


_TYPE_INFO: dict[type[Any], mi.Type] = {}


def _type_info(cls: type[Any]) -> mi.Type:
    info = _TYPE_INFO.get(cls)
    if info is None:
        info = _TYPE_INFO[cls] = mi.type_info(cls)
    return info


def _struct_in(t: mi.Type) -> mi.StructType | None:
    if isinstance(t, mi.StructType):
        return t
    if isinstance(t, mi.UnionType):
        for member in t.types:
            if isinstance(member, mi.StructType):
                return member
    return None


_FIELD_TYPES: dict[int, dict[str, mi.Type]] = {}


def _field_types(struct: mi.StructType) -> dict[str, mi.Type]:
    fields = _FIELD_TYPES.get(id(struct.cls))
    if fields is None:
        fields = _FIELD_TYPES[id(struct.cls)] = {f.encode_name: f.type for f in struct.fields}
    return fields


def _shape_problems(value: Any, t: mi.Type, path: str, problems: list[str]) -> None:
    """Unknown keys and nulls anywhere below ``value``, which was decoded as plain JSON."""
    if value is None:
        problems.append(f"null value at {path}")
        return
    if isinstance(t, mi.AnyType):
        return
    struct = _struct_in(t)
    if struct is not None:
        if isinstance(value, dict):
            fields = _field_types(struct)
            for key, item in value.items():
                field = fields.get(key)
                if field is None:
                    problems.append(f"unknown field {path}.{key}")
                else:
                    _shape_problems(item, field, f"{path}.{key}", problems)
    elif isinstance(t, mi.ListType) and isinstance(value, list):
        for index, item in enumerate(value):
            _shape_problems(item, t.item_type, f"{path}[{index}]", problems)
    elif isinstance(t, mi.DictType) and isinstance(value, dict):
        for key, item in value.items():
            _shape_problems(item, t.value_type, f"{path}.{key}", problems)


def _naive_times(message: msgspec.Struct, path: str, problems: list[str]) -> None:
    # __struct_fields__ rather than msgspec.structs.fields(): this runs for every log row.
    cls = type(message)
    for name, encode_name in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True):
        value = getattr(message, name)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                problems.append(f"timestamp without time zone at {path}.{encode_name}")
        elif isinstance(value, msgspec.Struct):
            _naive_times(value, f"{path}.{encode_name}", problems)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    _naive_times(item, f"{path}.{encode_name}[{index}]", problems)


def _guess_task_id(body: bytes) -> int | None:
    """Best effort: the task a broken request was about, for attributing the violation."""
    try:
        raw = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    candidate = raw.get("taskId")
    state = raw.get("state")
    if candidate is None and isinstance(state, dict):
        candidate = state.get("id")
    try:
        return int(candidate) if candidate is not None else None
    except (TypeError, ValueError):
        return None


def _strict_type(t: mi.Type, built: dict[type[Any], Any]) -> Any:
    """The Python type accepting what ``t`` accepts minus everything the fake refuses."""
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        strict = [_strict_type(m, built) for m in members]
        return strict[0] if len(strict) == 1 else Union[tuple(strict)]  # noqa: UP007
    if isinstance(t, mi.StructType):
        return _strict_struct(t, built)
    if isinstance(t, mi.ListType):
        return list[_strict_type(t.item_type, built)]  # type: ignore[misc]
    if isinstance(t, mi.DictType):
        return dict[str, _strict_type(t.value_type, built)]  # type: ignore[misc]
    if isinstance(t, mi.DateTimeType):
        return Annotated[datetime, msgspec.Meta(tz=True)]
    if isinstance(t, mi.AnyType):
        raise TypeError("no strict mirror for Any")
    simple = {
        mi.StrType: str,
        mi.IntType: int,
        mi.BoolType: bool,
        mi.FloatType: float,
        mi.BytesType: bytes,
    }
    return simple[type(t)]


def _strict_struct(t: mi.StructType, built: dict[type[Any], Any]) -> Any:
    mirror = built.get(t.cls)
    if mirror is None:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            (f.encode_name, _strict_type(f.type, built))
            if f.required
            else (f.encode_name, _strict_type(f.type, built), None)
            for f in t.fields
        ]
        mirror = built[t.cls] = msgspec.defstruct(
            f"Strict{t.cls.__name__}", fields, forbid_unknown_fields=True, kw_only=True
        )
    return mirror


_STRICT: dict[type[Any], Any] = {}


def _strict_mirror(cls: type[Any]) -> Any:
    """A Struct type that decodes exactly the requests ``_check_slowly`` finds no fault in.

    Unknown fields, nulls (no field admits None; an absent optional field gets a None
    default that JSON cannot produce) and naive timestamps fail to decode. None when ``cls`` holds
    ``Any``, whose nested values only the slow walk checks.
    """
    if cls not in _STRICT:
        try:
            _STRICT[cls] = _strict_struct(_type_info(cls), {})  # type: ignore[arg-type]
        except TypeError:
            _STRICT[cls] = None
    return _STRICT[cls]


def decode_request(body: bytes, cls: type[T]) -> T:
    """Decode a request strictly; raises DecodeProblem naming the broken rule.

    A request that decodes into the strict mirror of ``cls`` is fine, which is checked in
    C; only one that does not (or a type the mirror cannot express) takes the walk that
    finds and names each problem.
    """
    mirror = _strict_mirror(cls)
    if mirror is not None and body:
        try:
            msgspec.json.decode(body, type=mirror, strict=False)
            return msgspec.json.decode(body, type=cls, strict=False)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    return _check_slowly(body, cls)


def _check_slowly(body: bytes, cls: type[T]) -> T:
    if not body:
        raise DecodeProblem(
            "zero-length payload is not a valid JSON object",
            "zero-length body (send {} for an empty message)",
            None,
        )
    name = cls.__name__
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeProblem(
            f"unmarshal {name}: invalid UTF-8 in string",
            "invalid UTF-8 in request",
            _guess_task_id(body),
        ) from None
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        violation = (
            "invalid UTF-8 in request (lone surrogate)"
            if "surrogate" in str(exc)
            else "malformed JSON"
        )
        raise DecodeProblem(f"unmarshal {name}: {exc}", violation, _guess_task_id(body)) from None
    if not isinstance(raw, dict):
        raise DecodeProblem(
            f"unmarshal {name}: not a JSON object", "request is not a JSON object", None
        )
    problems: list[str] = []
    _shape_problems(raw, _type_info(cls), "$", problems)
    if problems:
        problem = "; ".join(problems)
        raise DecodeProblem(f"unmarshal {name}: {problems[0]}", problem, _guess_task_id(body))
    try:
        message = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise DecodeProblem(
            f"unmarshal {name}: {exc}", f"bad field value: {exc}", _guess_task_id(body)
        ) from None
    _naive_times(message, "$", problems)
    if problems:
        problem = "; ".join(problems)
        raise DecodeProblem(f"unmarshal {name}: {problems[0]}", problem, _guess_task_id(body))
    return message


def _stringify_int64(value: Any, t: mi.Type) -> Any:
    if isinstance(t, mi.IntType) and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    struct = _struct_in(t)
    if struct is not None and isinstance(value, dict):
        fields = _field_types(struct)
        return {k: _stringify_int64(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(t, mi.ListType) and isinstance(value, list):
        return [_stringify_int64(item, t.item_type) for item in value]
    if isinstance(t, mi.DictType) and isinstance(value, dict):
        return {k: _stringify_int64(v, t.value_type) for k, v in value.items()}
    return value


def encode_answer(message: msgspec.Struct) -> bytes:
    """Gitea's protojson form of ``message``: int64 fields become decimal strings."""
    builtins = msgspec.to_builtins(message)
    return msgspec.json.encode(_stringify_int64(builtins, _type_info(type(message))))
