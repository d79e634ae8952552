"""The event codec: valid events round-trip, anything else is malformed_event, never a crash."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import pixelpipe.schemas as schemas_pkg
from pixelpipe.errors import MalformedEvent
from pixelpipe.schemas import (
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    SourceRef,
    UploadEvent,
    decode_deadletter,
    decode_processed,
    decode_upload,
    encode,
    original_of,
    to_dict,
)

SHA = "ab" * 32
JSON_DIR = Path(schemas_pkg.__file__).parent / "json"


def upload(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "schema": "pixelpipe.upload/1",
        "event_id": "e-1",
        "image_id": "img-1",
        "source": {"uri": f"blob://sources/ab/{SHA}", "sha256": SHA, "size": 10,
                   "content_type": "image/jpeg"},
        "renditions": [{"name": "t", "preset": "thumbnail"},
                       {"name": "w", "operations": ["resize:width=8", {"op": "grayscale"}]}],
        "priority": "high",
        "submitted_at": "2026-11-28T00:00:00.000Z",
        "attributes": {"tenant": "a"},
    }
    event.update(changes)
    return event


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((JSON_DIR / name).read_text()))


def test_upload_round_trips_and_matches_its_json_schema() -> None:
    raw = orjson.dumps(upload())
    event = decode_upload(raw)
    assert event.renditions[1].operations == ("resize:width=8", {"op": "grayscale"})
    assert event.priority == "high"
    again = decode_upload(encode(event))
    assert again == event
    validator("upload-1.json").validate(orjson.loads(encode(event)))


def test_unknown_fields_are_ignored() -> None:
    event = decode_upload(orjson.dumps(upload(future_field={"x": 1})))
    assert event.event_id == "e-1"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (None, "no value"),
        (orjson.dumps(upload(schema="pixelpipe.upload/2")), "unknown schema"),
        (orjson.dumps({k: v for k, v in upload().items() if k != "schema"}), "missing field schema"),
        (orjson.dumps({k: v for k, v in upload().items() if k != "event_id"}), "event_id"),
        (orjson.dumps(upload(renditions=[])), "at least one"),
        (orjson.dumps(upload(renditions=[{"name": "x"}])), "exactly one of preset or operations"),
        (orjson.dumps(upload(priority="urgent")), "priority"),
        (orjson.dumps(upload(source={"uri": "u", "sha256": "XYZ", "size": 1})), "sha256"),
        (orjson.dumps(upload(source={"uri": "u", "sha256": SHA, "size": True})), "size"),
        (orjson.dumps(upload(submitted_at="yesterday")), "ISO-8601"),
        (orjson.dumps(upload(renditions=[{"name": "a", "preset": "p"},
                                         {"name": "a", "preset": "p"}])), "unique"),
    ],
)
def test_invalid_uploads_are_malformed_events_with_a_precise_message(
    raw: bytes | None, needle: str
) -> None:
    with pytest.raises(MalformedEvent, match=needle) as info:
        decode_upload(raw)
    assert info.value.code == "malformed_event"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_malformed_event_only(raw: bytes) -> None:
    with contextlib.suppress(MalformedEvent):
        decode_upload(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(upload())), json_values, max_size=8))
def test_upload_with_wild_field_values_is_decoded_or_malformed(fields: dict[str, object]) -> None:
    with contextlib.suppress(MalformedEvent):
        decode_upload(orjson.dumps(upload(**fields)))


def test_original_keeps_non_json_bytes_as_base64() -> None:
    assert original_of(b"\x00\x01") == {"base64": "AAE="}
    assert original_of(b'{"a": 1}') == {"a": 1}
    assert original_of(b"[1]") == {"base64": "WzFd"}


def test_processed_and_deadletter_round_trip_and_match_their_json_schemas() -> None:
    processed = ProcessedEvent(
        event_id="e", image_id="i", source_sha256=SHA,
        renditions=(RenditionResult(name="t", uri="blob://outputs/x", sha256=SHA, size=5,
                                    width=2, height=3, format="webp"),),
        attempts=1, processing_ms=1.5, completed_at="2026-11-28T00:00:00.000Z",
    )
    assert decode_processed(encode(processed)) == processed
    validator("processed-1.json").validate(orjson.loads(encode(processed)))
    letter = DeadLetter(
        event_id="e", original={"base64": "AA=="},
        error=ErrorInfo(code="corrupt_image", class_="CorruptImage", message="m",
                        processor="decode", retryable=False),
        attempts=(AttemptRecord(at="2026-11-28T00:00:00.000Z", code="corrupt_image",
                                tier="main"),),
        origin=Origin(topic="pixelpipe.uploads", partition=3, offset=9),
        first_failed_at="2026-11-28T00:00:00.000Z", dead_lettered_at="2026-11-28T00:00:00.000Z",
    )
    assert to_dict(letter)["error"]["class"] == "CorruptImage"
    assert decode_deadletter(encode(letter)) == letter
    validator("deadletter-1.json").validate(orjson.loads(encode(letter)))


def test_publisher_side_records_encode_valid_uploads() -> None:
    event = UploadEvent(
        event_id="e", image_id="i",
        source=SourceRef(uri="blob://sources/ab/x", sha256=SHA, size=1),
        renditions=(RenditionRequest(name="t", preset="thumbnail"),),
        submitted_at="2026-11-28T00:00:00.000Z",
    )
    validator("upload-1.json").validate(orjson.loads(encode(event)))
    assert decode_upload(encode(event)) == event


def test_retry_envelope_round_trips_and_matches_its_json_schema() -> None:
    from pixelpipe.schemas import RetryEnvelope, decode_retry

    envelope = RetryEnvelope(
        event_id="e", original=orjson.loads(orjson.dumps(upload())),
        attempts=(AttemptRecord(at="2026-11-28T00:00:00.000Z", code="storage_unavailable",
                                tier="main"),),
        origin=Origin(topic="pixelpipe.uploads", partition=1, offset=2),
        first_failed_at="2026-11-28T00:00:00.000Z", due_at="2026-11-28T00:00:05.000Z",
        tier="5s", image_id="img-1",
    )
    assert decode_retry(encode(envelope)) == envelope
    validator("retry-1.json").validate(orjson.loads(encode(envelope)))
    with pytest.raises(MalformedEvent):
        decode_retry(orjson.dumps({**orjson.loads(encode(envelope)), "due_at": "soon"}))
