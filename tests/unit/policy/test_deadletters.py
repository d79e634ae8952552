"""The pure side of the dead-letter tooling: identity, filters, plans, replayed records."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pixelpipe.errors import ReplayRefused
from pixelpipe.policy.deadletters import (
    LetterFilter,
    StoredLetter,
    cause_of,
    collapse,
    letter_key,
    parse_when,
    stats_of,
)
from pixelpipe.policy.replay_plan import next_replays, plan_replay, replay_message
from pixelpipe.schemas import (
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    decode_retry,
    decode_upload,
)
from pixelpipe.schemas.replay import ReplayRecord, decode_replay_record

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ORIGIN = Origin("pixelpipe.uploads", 3, 42)


def upload(event_id: str = "e1", replays: int = 0) -> dict[str, object]:
    return {
        "schema": "pixelpipe.upload/1", "event_id": event_id, "image_id": f"img-{event_id}",
        "source": {"uri": "blob://sources/00/" + "0" * 64, "sha256": "0" * 64, "size": 3},
        "renditions": [{"name": "t", "preset": "thumbnail"}],
        "submitted_at": "2026-05-01T10:00:00Z", "replays": replays, "x-unknown": [1, 2],
    }


def letter(
    event_id: str = "e1", code: str = "retries_exhausted", attempt_codes: tuple[str, ...] = (
        "source_missing", "source_missing"), replays: int = 0,
    at: str = "2026-05-01T11:00:00.000Z", processor: str | None = "fetch",
    original: dict[str, object] | None = None,
) -> DeadLetter:
    return DeadLetter(
        event_id=event_id,
        original=upload(event_id, replays) if original is None else original,
        error=ErrorInfo(code, "X", "message", processor, False),
        attempts=tuple(AttemptRecord(at, c, t) for c, t in zip(
            attempt_codes, ("main", "5s", "30s"), strict=False)),
        origin=ORIGIN, first_failed_at=at, dead_lettered_at=at, replays=replays,
        image_id=f"img-{event_id}",
    )


def stored(dead: DeadLetter, offset: int = 0, **kwargs: object) -> StoredLetter:
    return StoredLetter(dead, 0, offset, **kwargs)  # type: ignore[arg-type]


def record(dead: DeadLetter, state: str = "published", replays: int = 1) -> ReplayRecord:
    return ReplayRecord(
        event_id=dead.event_id, letter_replays=dead.replays, state=state,  # type: ignore[arg-type]
        replays=replays, times=1, to="uploads", topic="pixelpipe.uploads", run_id="r",
        replayed_at="2026-05-01T11:30:00Z", code=dead.error.code,
        dead_lettered_at=dead.dead_lettered_at,
    )


def test_the_cause_is_the_last_attempts_code_and_code_filters_match_either() -> None:
    exhausted = stored(letter())
    corrupt = stored(letter("e2", "corrupt_image", ("corrupt_image",), processor="decode"))
    assert cause_of(exhausted.letter) == "source_missing"
    assert LetterFilter(codes=("source_missing",)).apply([exhausted, corrupt]) == [exhausted]
    assert LetterFilter(codes=("retries_exhausted",)).apply([exhausted, corrupt]) == [exhausted]
    assert LetterFilter(codes=("corrupt_image", "source_missing")).apply(
        [exhausted, corrupt]) == [exhausted, corrupt]
    assert LetterFilter(processors=("decode",)).apply([exhausted, corrupt]) == [corrupt]
    assert LetterFilter(image_ids=("img-e2",)).apply([exhausted, corrupt]) == [corrupt]
    assert LetterFilter(event_ids=("e1",)).apply([exhausted, corrupt], limit=5) == [exhausted]
    assert LetterFilter().apply([exhausted, corrupt], limit=1) == [exhausted]


def test_since_and_until_take_iso_times_or_ages() -> None:
    assert parse_when("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_when("90s", NOW) == NOW - timedelta(seconds=90)
    assert parse_when("2026-05-01T08:00:00Z", NOW) == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert parse_when("2026-05-01T08:00:00", NOW) == datetime(2026, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a time or an age"):
        parse_when("yesterday", NOW)
    old, new = stored(letter("a", at="2026-05-01T09:00:00Z")), stored(letter("b"))
    assert LetterFilter(since=parse_when("2h", NOW)).apply([old, new]) == [new]
    assert LetterFilter(until=parse_when("2h", NOW)).apply([old, new]) == [old]


def test_copies_of_a_letter_collapse_and_older_generations_are_superseded() -> None:
    first = letter("e1", at="2026-05-01T11:00:00Z")
    copy = letter("e1", at="2026-05-01T11:00:05Z")  # redelivered upload, dead again
    reborn = letter("e1", replays=1, at="2026-05-01T11:40:00Z")  # replayed, died again
    other = letter("e2", at="2026-05-01T11:00:00.500Z")
    ledger = {letter_key("e1", 0): record(first)}
    letters = collapse([(first, 0, 0), (copy, 0, 1), (other, 0, 2), (reborn, 0, 3)], ledger)
    assert [(s.event_id, s.letter.replays, s.offset) for s in letters] == [
        ("e1", 0, 0), ("e2", 0, 2), ("e1", 1, 3)]
    assert letters[0].duplicates == 1 and letters[0].letter.dead_lettered_at == first.dead_lettered_at
    assert [s.status for s in letters] == ["replayed", "pending", "pending"]
    # an older generation without a ledger record (e.g. replayed by hand) is superseded
    assert collapse([(first, 0, 0), (reborn, 0, 1)], {})[0].status == "superseded"
    stats = stats_of(letters, undecodable=2)
    assert stats["total"] == 3 and stats["duplicates"] == 1 and stats["undecodable"] == 2
    assert stats["by_code"] == {"retries_exhausted": 3}
    assert stats["by_cause"] == {"source_missing": 3}
    assert stats["by_status"] == {"pending": 2, "in_doubt": 0, "replayed": 1, "superseded": 0}
    assert (stats["replayed"], stats["not_replayed"]) == (1, 2)
    assert stats["oldest"] == "2026-05-01T11:00:00Z" and stats["newest"] == "2026-05-01T11:40:00Z"


def test_a_plan_skips_replayed_letters_unless_again_and_finishes_in_doubt_ones() -> None:
    done = stored(letter("a"), replay=record(letter("a")))
    doubt = stored(letter("b"), replay=record(letter("b"), state="publishing"))
    fresh = stored(letter("c"))
    gone = stored(letter("d"), superseded=True)
    plan = plan_replay([done, doubt, fresh, gone])
    assert [s.event_id for s in plan.letters] == ["b", "c"]
    assert plan.skipped == {"already_replayed": 1, "superseded": 1}
    assert [s.event_id for s in plan_replay([done, doubt, fresh, gone], again=True).letters] == [
        "a", "b", "c"]
    assert [s.event_id for s in plan_replay([done, doubt, fresh], limit=1).letters] == ["b"]
    # replays: one more than any before; an in-doubt one keeps the count it started with
    assert next_replays(fresh) == 1
    assert next_replays(done) == 2
    assert next_replays(stored(letter("e", replays=3))) == 4


def test_input_errors_are_refused_as_a_whole_unless_forced() -> None:
    letters = [
        stored(letter("a")),
        stored(letter("b", "malformed_event", ("malformed_event",), processor=None)),
        stored(letter("c", "malformed_event", ("malformed_event",), processor=None)),
        stored(letter("d", "deadline_exceeded", ("corrupt_image",))),
    ]
    with pytest.raises(ReplayRefused) as refused:
        plan_replay(letters)
    message = str(refused.value)
    assert "refusing to replay 3 dead letter(s)" in message
    assert "malformed_event (2), corrupt_image (1)" in message and "--force" in message
    assert len(plan_replay(letters, force=True).letters) == 4


def test_a_replayed_upload_is_the_original_with_its_event_id_and_replays_plus_one() -> None:
    dead = letter("e1")
    message = replay_message(dead, 1, to="uploads", uploads_topic="p.uploads")
    assert message.topic == "p.uploads" and message.key == b"img-e1"
    sent = orjson.loads(message.value)
    assert sent == {**upload("e1"), "replays": 1}  # unknown fields too, untouched
    event = decode_upload(message.value)
    assert (event.event_id, event.replays, event.submitted_at) == ("e1", 1, "2026-05-01T10:00:00Z")
    assert ("pixelpipe-event-id", b"e1") in message.headers
    assert ("pixelpipe-replays", b"1") in message.headers


def test_an_original_that_was_not_json_goes_back_as_its_bytes_and_never_to_retry() -> None:
    raw = b"{not json"
    dead = letter("malformed:t:0:7", "malformed_event", ("malformed_event",),
                  original={"base64": base64.b64encode(raw).decode()})
    message = replay_message(dead, 1, to="uploads", uploads_topic="p.uploads")
    assert message.value == raw
    with pytest.raises(ReplayRefused, match="only be replayed --to uploads"):
        plan_replay([stored(dead)], to="retry", force=True)


def test_a_replay_to_retry_is_an_envelope_due_now_with_a_fresh_history() -> None:
    dead = letter("e1")
    message = replay_message(dead, 2, to="retry", uploads_topic="p.uploads",
                             first_tier=("5s", "p.retry.5s"), now_iso="2026-05-01T12:00:00.000Z")
    assert message.topic == "p.retry.5s"
    envelope = decode_retry(message.value)
    assert envelope.attempts == () and envelope.tier == "5s"
    assert envelope.due_at == "2026-05-01T12:00:00.000Z" and envelope.origin == ORIGIN
    assert envelope.original["replays"] == 2 and envelope.event_id == "e1"


def test_ledger_records_round_trip_and_foreign_records_are_ignored() -> None:
    entry = record(letter("e1", replays=2), state="publishing", replays=3)
    back = decode_replay_record(entry.encode(), timestamp_ms=123)
    assert back is not None and back.key == "e1#2"
    assert back == ReplayRecord(**{**entry.to_json(), "intent_timestamp_ms": 123})
    assert decode_replay_record(None) is None
    assert decode_replay_record(b"junk") is None
    assert decode_replay_record(b'{"schema": "pixelpipe.replay/1"}') is None
