"""Bytes <-> event records, with orjson.

Decoding never lets a foreign exception escape: anything that is not a valid event of the
expected schema becomes :class:`~pixelpipe.errors.MalformedEvent` with a message naming the
first offending field. Unknown fields are ignored (forward compatibility); a missing or
unknown ``schema`` is malformed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, TypeVar, cast

import orjson

from pixelpipe.errors import MalformedEvent
from pixelpipe.schemas.events import (
    PRIORITIES,
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    OperationItem,
    Origin,
    Priority,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    RetryEnvelope,
    SourceRef,
    UploadEvent,
)
from pixelpipe.schemas.names import (
    DEADLETTER_SCHEMA,
    PROCESSED_SCHEMA,
    RETRY_SCHEMA,
    UPLOAD_SCHEMA,
)
from pixelpipe.schemas.times import parse_time, utc_now_iso

__all__ = [
    "decode_deadletter",
    "decode_json_object",
    "decode_processed",
    "decode_retry",
    "decode_upload",
    "encode",
    "original_of",
    "parse_time",
    "to_dict",
    "utc_now_iso",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: the largest message we accept as an upload; Kafka's default max message is 1 MB anyway
MAX_EVENT_BYTES = 1024 * 1024
MAX_RENDITIONS = 32
#: the deepest nesting of arrays and objects an event may have (the top-level object is 1):
#: orjson parses 1024 levels but encodes only 254, so a deeper upload could be decoded and
#: then not be encoded again (its processed event, dead letter or retry would fail to send)
MAX_DEPTH = 64
#: a dead letter or retry envelope holds the upload one level down, in ``original``
MAX_ENVELOPE_DEPTH = MAX_DEPTH + 1
MAX_OPERATIONS = 32

T = TypeVar("T")


# --------------------------------------------------------------------------- encoding


def to_dict(event: UploadEvent | ProcessedEvent | DeadLetter | RetryEnvelope) -> dict[str, Any]:
    """The JSON object of an event, as it goes on the wire."""
    data = asdict(event)
    if isinstance(event, UploadEvent):
        for rendition in data["renditions"]:
            if rendition["preset"] is None:
                del rendition["preset"]
            if rendition["operations"] is None:
                del rendition["operations"]
            else:
                rendition["operations"] = list(rendition["operations"])
            if not rendition["optional"]:
                del rendition["optional"]
            if rendition["fallback_format"] is None:
                del rendition["fallback_format"]
        if data["deadline"] is None:
            del data["deadline"]
    if isinstance(event, UploadEvent | ProcessedEvent) and data["supersedes"] is None:
        # absent unless set (a backfill): every other record stays as it was before the field
        del data["supersedes"]
    if isinstance(event, DeadLetter):
        data["error"]["class"] = data["error"].pop("class_")
    return data


def encode(event: UploadEvent | ProcessedEvent | DeadLetter | RetryEnvelope) -> bytes:
    """Serialise an event to the bytes of one Kafka message value."""
    return orjson.dumps(to_dict(event))


# --------------------------------------------------------------------------- decoding helpers


def decode_json_object(raw: bytes | None, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a message value as one JSON object at most ``max_depth`` levels deep, or raise
    ``MalformedEvent``."""
    if raw is None:
        raise MalformedEvent("message has no value (a tombstone?)")
    if len(raw) > MAX_EVENT_BYTES:
        raise MalformedEvent(f"message is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not valid JSON: {_json_problem(raw, exc)}") from exc
    if not isinstance(data, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(data).__name__}")
    if _deeper_than(data, max_depth):
        raise MalformedEvent(f"arrays and objects nested more than {max_depth} levels deep")
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _show(value: Any) -> str:
    """``value`` for an error message, at most 80 characters (``repr`` of a container nested
    too deep raises ``RecursionError``)."""
    try:
        return f"{value!r:.80}"
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"


def _json_problem(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with ``raw``, in words, with the byte offset where it goes wrong.

    orjson reports bytes that are not UTF-8 as "str is not valid UTF-8: surrogates not allowed"
    at position 0, wherever they are; the UTF-8 decoder knows the first bad byte."""
    if not raw:
        return "the message is empty"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        byte = raw[bad.start : bad.start + 1].hex()
        return (f"not UTF-8 text: byte 0x{byte} at offset {bad.start} ({bad.reason}); "
                "JSON must be UTF-8")
    return f"{exc.msg} at byte offset {exc.pos} (line {exc.lineno}, column {exc.colno})"


def original_of(raw: bytes | None) -> dict[str, Any]:
    """The upload exactly as received, for a dead letter: the JSON object, else base64 bytes."""
    if raw is None:
        return {"base64": None}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(data, dict) and not _deeper_than(data, MAX_DEPTH):
        return data  # not deeper than an upload may be: a dead letter can still hold it
    return {"base64": base64.b64encode(raw).decode("ascii")}


def _field(data: Mapping[str, Any], name: str, kind: type[T], where: str = "") -> T:
    if name not in data:
        raise MalformedEvent(f"missing field {where}{name}")
    value = data[name]
    # bool is an int in Python; a JSON true is never a valid size or count
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"field {where}{name} must be {kind.__name__}, got {_show(value)}")
    return value


def _opt(data: Mapping[str, Any], name: str, kind: type[T], where: str = "") -> T | None:
    if data.get(name) is None:
        return None
    return _field(data, name, kind, where)


def _nonempty(value: str, name: str) -> str:
    if not value.strip():
        raise MalformedEvent(f"field {name} must not be empty")
    return value


def _time(value: str, name: str) -> str:
    try:
        parse_time(value)
    except ValueError as exc:
        raise MalformedEvent(f"field {name} is not an ISO-8601 time: {value!r:.60}") from exc
    return value


def _check_schema(data: Mapping[str, Any], expected: str) -> None:
    schema = data.get("schema")
    if schema is None:
        raise MalformedEvent("missing field schema")
    if schema != expected:
        raise MalformedEvent(f"unknown schema {_show(schema)}; expected {expected!r}")


# --------------------------------------------------------------------------- upload


def _rendition(data: Any, index: int) -> RenditionRequest:
    where = f"renditions[{index}]."
    if not isinstance(data, dict):
        raise MalformedEvent(f"renditions[{index}] must be an object")
    name = _nonempty(_field(data, "name", str, where), where + "name")
    preset = _opt(data, "preset", str, where)
    raw_ops = _opt(data, "operations", list, where)
    if (preset is None) == (raw_ops is None):
        raise MalformedEvent(f"{where[:-1]} needs exactly one of preset or operations")
    operations: tuple[OperationItem, ...] | None = None
    if raw_ops is not None:
        if len(raw_ops) > MAX_OPERATIONS:
            raise MalformedEvent(f"{where}operations has more than {MAX_OPERATIONS} entries")
        for j, item in enumerate(raw_ops):
            if isinstance(item, str):
                continue
            if not isinstance(item, dict) or not isinstance(item.get("op"), str):
                raise MalformedEvent(
                    f"{where}operations[{j}] must be a spec string or an object with 'op'"
                )
        operations = tuple(cast(list[OperationItem], raw_ops))
    optional = _opt(data, "optional", list, where) or []
    if not all(isinstance(o, str) for o in optional):
        raise MalformedEvent(f"{where}optional must be a list of processor names")
    fallback = _opt(data, "fallback_format", str, where)
    return RenditionRequest(
        name=name,
        preset=preset,
        operations=operations,
        optional=tuple(optional),
        fallback_format=fallback,
    )


def decode_upload(raw: bytes | None) -> UploadEvent:
    """Decode and validate a ``pixelpipe.upload/1`` message; ``MalformedEvent`` otherwise."""
    data = decode_json_object(raw)
    _check_schema(data, UPLOAD_SCHEMA)
    source = _field(data, "source", dict)
    sha = _field(source, "sha256", str, "source.")
    if not _SHA256.match(sha):
        raise MalformedEvent("field source.sha256 must be 64 lowercase hex digits")
    size = _field(source, "size", int, "source.")
    if size < 0:
        raise MalformedEvent("field source.size must not be negative")
    renditions_raw = _field(data, "renditions", list)
    if not renditions_raw:
        raise MalformedEvent("field renditions must hold at least one rendition")
    if len(renditions_raw) > MAX_RENDITIONS:
        raise MalformedEvent(f"field renditions has more than {MAX_RENDITIONS} entries")
    renditions = tuple(_rendition(r, i) for i, r in enumerate(renditions_raw))
    names = [r.name for r in renditions]
    if len(set(names)) != len(names):
        raise MalformedEvent("rendition names must be unique")
    priority = data.get("priority", "normal")
    if priority not in PRIORITIES:
        raise MalformedEvent(f"field priority must be one of {', '.join(PRIORITIES)}")
    deadline = _opt(data, "deadline", str)
    attributes = _opt(data, "attributes", dict) or {}
    replays = _opt(data, "replays", int) or 0
    supersedes = _opt(data, "supersedes", str)
    return UploadEvent(
        event_id=_nonempty(_field(data, "event_id", str), "event_id"),
        image_id=_nonempty(_field(data, "image_id", str), "image_id"),
        source=SourceRef(
            uri=_nonempty(_field(source, "uri", str, "source."), "source.uri"),
            sha256=sha,
            size=size,
            content_type=_opt(source, "content_type", str, "source.")
            or "application/octet-stream",
        ),
        renditions=renditions,
        submitted_at=_time(_field(data, "submitted_at", str), "submitted_at"),
        priority=cast(Priority, priority),
        deadline=None if deadline is None else _time(deadline, "deadline"),
        attributes=attributes,
        replays=replays,
        supersedes=None if supersedes is None else _nonempty(supersedes, "supersedes"),
    )


# --------------------------------------------------------------------------- processed


def decode_processed(raw: bytes | None) -> ProcessedEvent:
    """Decode a ``pixelpipe.processed/1`` message; ``MalformedEvent`` otherwise."""
    data = decode_json_object(raw)
    _check_schema(data, PROCESSED_SCHEMA)
    results = []
    for i, item in enumerate(_field(data, "renditions", list)):
        where = f"renditions[{i}]."
        if not isinstance(item, dict):
            raise MalformedEvent(f"renditions[{i}] must be an object")
        results.append(
            RenditionResult(
                name=_field(item, "name", str, where),
                uri=_field(item, "uri", str, where),
                sha256=_field(item, "sha256", str, where),
                size=_field(item, "size", int, where),
                width=_field(item, "width", int, where),
                height=_field(item, "height", int, where),
                format=_field(item, "format", str, where),
                degraded=_opt(item, "degraded", str, where),
                skipped=tuple(_opt(item, "skipped", list, where) or ()),
            )
        )
    processing_ms = data.get("processing_ms")
    if not isinstance(processing_ms, int | float) or isinstance(processing_ms, bool):
        raise MalformedEvent("field processing_ms must be a number")
    return ProcessedEvent(
        event_id=_field(data, "event_id", str),
        image_id=_field(data, "image_id", str),
        source_sha256=_field(data, "source_sha256", str),
        renditions=tuple(results),
        attempts=_field(data, "attempts", int),
        processing_ms=float(processing_ms),
        completed_at=_field(data, "completed_at", str),
        attributes=_opt(data, "attributes", dict) or {},
        level=_opt(data, "level", str) or "full",  # absent in events from before issue 10
        supersedes=_opt(data, "supersedes", str),  # set on a backfill's outcome only
    )


# --------------------------------------------------------------------------- dead letter


def decode_deadletter(raw: bytes | None) -> DeadLetter:
    """Decode a ``pixelpipe.deadletter/1`` message; ``MalformedEvent`` otherwise."""
    data = decode_json_object(raw, MAX_ENVELOPE_DEPTH)
    _check_schema(data, DEADLETTER_SCHEMA)
    error = _field(data, "error", dict)
    return DeadLetter(
        event_id=_field(data, "event_id", str),
        original=_field(data, "original", dict),
        error=ErrorInfo(
            code=_field(error, "code", str, "error."),
            class_=_field(error, "class", str, "error."),
            message=_field(error, "message", str, "error."),
            processor=_opt(error, "processor", str, "error."),
            retryable=_field(error, "retryable", bool, "error."),
        ),
        attempts=_attempts(data),
        origin=_origin(data),
        first_failed_at=_field(data, "first_failed_at", str),
        dead_lettered_at=_field(data, "dead_lettered_at", str),
        replays=_opt(data, "replays", int) or 0,
        image_id=_opt(data, "image_id", str),
    )


def _attempts(data: Mapping[str, Any]) -> tuple[AttemptRecord, ...]:
    attempts = []
    for i, item in enumerate(_field(data, "attempts", list)):
        if not isinstance(item, dict):
            raise MalformedEvent(f"attempts[{i}] must be an object")
        where = f"attempts[{i}]."
        attempts.append(
            AttemptRecord(
                at=_field(item, "at", str, where),
                code=_field(item, "code", str, where),
                tier=_field(item, "tier", str, where),
            )
        )
    return tuple(attempts)


def _origin(data: Mapping[str, Any]) -> Origin:
    origin = _field(data, "origin", dict)
    return Origin(
        topic=_field(origin, "topic", str, "origin."),
        partition=_field(origin, "partition", int, "origin."),
        offset=_field(origin, "offset", int, "origin."),
    )


def decode_retry(raw: bytes | None) -> RetryEnvelope:
    """Decode a ``pixelpipe.retry/1`` message; ``MalformedEvent`` otherwise."""
    data = decode_json_object(raw, MAX_ENVELOPE_DEPTH)
    _check_schema(data, RETRY_SCHEMA)
    return RetryEnvelope(
        event_id=_field(data, "event_id", str),
        original=_field(data, "original", dict),
        attempts=_attempts(data),
        origin=_origin(data),
        first_failed_at=_time(_field(data, "first_failed_at", str), "first_failed_at"),
        due_at=_time(_field(data, "due_at", str), "due_at"),
        tier=_field(data, "tier", str),
        image_id=_opt(data, "image_id", str),
        deferrals=_opt(data, "deferrals", int) or 0,
    )
