"""Kafka headers that mirror the routing facts, so generic tools can filter without parsing.

Each header is set, never appended: their number and size stay bounded however many attempts
an event makes (``pixelpipe-attempt`` is a count, not a list).
"""

from __future__ import annotations

from collections.abc import Iterable

EVENT_ID = "pixelpipe-event-id"
SCHEMA = "pixelpipe-schema"
ATTEMPT = "pixelpipe-attempt"
DUE_AT = "pixelpipe-due-at"
ERROR_CODE = "pixelpipe-error-code"
ORIGIN_TOPIC = "pixelpipe-origin-topic"
ORIGIN_PARTITION = "pixelpipe-origin-partition"
ORIGIN_OFFSET = "pixelpipe-origin-offset"

#: header values are cut to this many bytes (an event id is 36, an error code < 32)
MAX_VALUE_BYTES = 128

Headers = list[tuple[str, bytes]]


def make_headers(**values: str | int | None) -> Headers:
    """Headers from keyword arguments named by the constants above (``event_id=...``)."""
    names = {
        "event_id": EVENT_ID,
        "schema": SCHEMA,
        "attempt": ATTEMPT,
        "due_at": DUE_AT,
        "error_code": ERROR_CODE,
        "origin_topic": ORIGIN_TOPIC,
        "origin_partition": ORIGIN_PARTITION,
        "origin_offset": ORIGIN_OFFSET,
    }
    headers: Headers = []
    for key, value in values.items():
        if value is None:
            continue
        headers.append((names[key], str(value).encode()[:MAX_VALUE_BYTES]))
    return headers


def header_map(headers: object) -> dict[str, str]:
    """Headers as received (list of pairs or a mapping) -> ``{name: text}``; the last wins."""
    items: Iterable[tuple[object, object]]
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, list | tuple):
        items = headers
    else:
        items = ()
    out: dict[str, str] = {}
    for key, value in items:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[str(key)] = str(value)
    return out
