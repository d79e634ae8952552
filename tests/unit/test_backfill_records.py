"""``supersedes`` (``pixelpipe backfill``) on uploads and processed events: a compatible
extension. It round-trips through the codec, is absent from records that do not set it (older
readers and older records see nothing new), and matches the JSON Schemas. No broker."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from jsonschema import ValidationError
from test_record_schemas import schema_of, validator

from pixelpipe.errors import MalformedEvent
from pixelpipe.policy.backfill import backfill_message
from pixelpipe.schemas import (
    PROCESSED_SCHEMA,
    UPLOAD_SCHEMA,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    SourceRef,
    UploadEvent,
    decode_processed,
    decode_upload,
    encode,
    parse_time,
    to_dict,
    utc_now_iso,
)

SHA = "ef" * 32

UPLOAD = UploadEvent(
    event_id="e-1", image_id="img-1",
    source=SourceRef(uri=f"blob://sources/ef/{SHA}", sha256=SHA, size=3,
                     content_type="image/jpeg"),
    renditions=(RenditionRequest(name="t", preset="thumbnail"),),
    submitted_at=utc_now_iso(), priority="low",
)
PROCESSED = ProcessedEvent(
    event_id="e-1", image_id="img-1", source_sha256=SHA,
    renditions=(RenditionResult(name="t", uri="blob://outputs/x", sha256=SHA, size=5, width=2,
                                height=3, format="jpeg"),),
    attempts=1, processing_ms=2.5, completed_at=utc_now_iso(),
)


def check(name: str, body: dict[str, Any]) -> None:
    """Valid against the schema of ``name``, and every time present in the wire's format
    (``test_record_schemas.check`` wants every time field present; an upload's deadline is
    optional)."""
    validator(name).validate(body)
    for field, spec in schema_of(name)["properties"].items():
        if spec.get("format") == "date-time" and body.get(field) is not None:
            assert body[field].endswith("Z"), (field, body[field])
            parse_time(body[field])


def body_of(event: UploadEvent | ProcessedEvent) -> dict[str, Any]:
    data = orjson.loads(encode(event))
    assert isinstance(data, dict)
    return data


def test_an_upload_that_supersedes_round_trips_and_matches_its_schema() -> None:
    event = dataclasses.replace(UPLOAD, supersedes="7@1234")
    body = body_of(event)
    assert body["supersedes"] == "7@1234"
    check(UPLOAD_SCHEMA, body)
    assert decode_upload(encode(event)) == event


def test_a_processed_event_that_supersedes_round_trips_and_matches_its_schema() -> None:
    event = dataclasses.replace(PROCESSED, supersedes="7@1234")
    body = body_of(event)
    assert body["supersedes"] == "7@1234"
    check(PROCESSED_SCHEMA, body)
    assert decode_processed(encode(event)) == event


@pytest.mark.parametrize("event", [UPLOAD, PROCESSED], ids=["upload", "processed"])
def test_without_supersedes_nothing_changes_on_the_wire(event: Any) -> None:
    assert event.supersedes is None
    body = body_of(event)
    assert "supersedes" not in body and "supersedes" not in to_dict(event)
    check(UPLOAD_SCHEMA if isinstance(event, UploadEvent) else PROCESSED_SCHEMA, body)
    decode = decode_upload if isinstance(event, UploadEvent) else decode_processed
    assert decode(encode(event)) == event
    # a record from before the field (absent) or one that writes null: None
    assert decode(orjson.dumps({**body, "supersedes": None})).supersedes is None


def test_a_supersedes_that_is_not_a_string_is_malformed_and_refused_by_the_schemas() -> None:
    upload, processed = body_of(UPLOAD), body_of(PROCESSED)
    for bad in (12, ["7@1"], {"partition": 7}):
        with pytest.raises(MalformedEvent, match="supersedes"):
            decode_upload(orjson.dumps({**upload, "supersedes": bad}))
        with pytest.raises(MalformedEvent, match="supersedes"):
            decode_processed(orjson.dumps({**processed, "supersedes": bad}))
        with pytest.raises(ValidationError):
            validator(UPLOAD_SCHEMA).validate({**upload, "supersedes": bad})
        with pytest.raises(ValidationError):
            validator(PROCESSED_SCHEMA).validate({**processed, "supersedes": bad})
    with pytest.raises(MalformedEvent, match="supersedes must not be empty"):
        decode_upload(orjson.dumps({**upload, "supersedes": " "}))


def test_the_upload_a_backfill_publishes_matches_the_upload_schema() -> None:
    original = body_of(dataclasses.replace(UPLOAD, priority="high",
                                           deadline="2026-11-28T00:00:00.000Z"))
    message = backfill_message(original, "2@9", utc_now_iso())
    body = orjson.loads(message.value)
    check(UPLOAD_SCHEMA, body)
    upload = decode_upload(message.value)
    assert (upload.event_id, upload.image_id) == (UPLOAD.event_id, UPLOAD.image_id)
    assert (upload.priority, upload.supersedes, upload.deadline) == ("low", "2@9", None)
