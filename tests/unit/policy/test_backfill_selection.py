"""``policy.backfill``: which degraded outcomes a backfill asks for again, the upload it
publishes, and the health gate. Pure: no broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pixelpipe.policy.backfill import (
    SeenProcessed,
    backfill_message,
    mark_rank,
    refusal,
    select,
    unhealthy,
    worst_mark,
)
from pixelpipe.policy.degradation import LEVELS
from pixelpipe.schemas import ProcessedEvent, RenditionResult, decode_upload
from pixelpipe.schemas import headers as h

SHA = "cd" * 32


def seen(event_id: str, *marks: str | None, partition: int = 0, offset: int = 0,
         completed_at: str = "2026-11-28T10:00:00.000Z", level: str | None = None,
         supersedes: str | None = None) -> SeenProcessed:
    renditions = tuple(
        RenditionResult(name=f"r{i}", uri=f"blob://outputs/{i}", sha256=SHA, size=1, width=1,
                        height=1, format="jpeg", degraded=mark)
        for i, mark in enumerate(marks or (None,))
    )
    worst = max((m for m in marks if m), key=LEVELS.index, default="full")
    event = ProcessedEvent(
        event_id=event_id, image_id=f"img-{event_id}", source_sha256=SHA,
        renditions=renditions, attempts=1, processing_ms=1.0, completed_at=completed_at,
        level=level or worst, supersedes=supersedes,
    )
    return SeenProcessed(event=event, partition=partition, offset=offset)


def ids(records: list[SeenProcessed], **options: Any) -> list[str]:
    return [c.event_id for c in select(records, **options).candidates]


def test_the_worst_mark_is_the_worst_degraded_rendition() -> None:
    assert worst_mark(seen("a", None, "reduced_quality", "basic").event) == "basic"
    assert worst_mark(seen("a", "emergency", "basic").event) == "emergency"
    assert worst_mark(seen("a", None, None).event) is None
    # a mark this version does not know is worse than every level: asked again
    assert mark_rank("melted") > mark_rank("emergency") > mark_rank("basic")


def test_an_event_with_a_degraded_rendition_is_selected_and_names_where_it_was_read() -> None:
    selection = select([seen("a", None, "basic", partition=4, offset=17), seen("b", None)])
    (candidate,) = selection.candidates
    assert candidate.event_id == "a" and candidate.image_id == "img-a"
    assert candidate.supersedes == "4@17"
    assert (candidate.level, candidate.worst) == ("basic", "basic")
    assert candidate.summary() == {
        "event_id": "a", "image_id": "img-a", "level": "basic", "worst": "basic",
        "completed_at": "2026-11-28T10:00:00.000Z", "supersedes": "4@17",
    }
    assert (selection.read, selection.events, selection.skipped) == (2, 2, {})


@pytest.mark.parametrize(("floor", "expected"), [
    (None, ["rq", "basic", "cached", "emerg"]),
    ("full", ["rq", "basic", "cached", "emerg"]),
    ("reduced_quality", ["rq", "basic", "cached", "emerg"]),
    ("basic", ["basic", "cached", "emerg"]),
    ("cached_only", ["cached", "emerg"]),
    ("emergency", ["emerg"]),
])
def test_level_keeps_events_whose_worst_mark_is_that_bad_or_worse(
    floor: Any, expected: list[str]
) -> None:
    records = [
        seen("full", None, offset=0, completed_at="2026-11-28T10:00:00.000Z"),
        seen("rq", None, "reduced_quality", offset=1, completed_at="2026-11-28T10:00:01.000Z"),
        seen("basic", "reduced_quality", "basic", offset=2,
             completed_at="2026-11-28T10:00:02.000Z"),
        seen("cached", "cached_only", offset=3, completed_at="2026-11-28T10:00:03.000Z"),
        seen("emerg", "emergency", offset=4, completed_at="2026-11-28T10:00:04.000Z"),
    ]
    selection = select(records, level=floor)
    assert [c.event_id for c in selection.candidates] == expected
    milder = 4 - len(expected)
    assert selection.skipped == ({"milder": milder} if milder else {})


def test_the_latest_outcome_of_an_event_decides() -> None:
    # degraded, then a redelivered copy also degraded: the later one is the one to supersede
    selection = select([seen("a", "basic", offset=3), seen("a", "basic", offset=9)])
    assert [c.supersedes for c in selection.candidates] == ["0@9"]
    # a later outcome worse than the first: its worst mark counts
    (candidate,) = select([seen("a", "reduced_quality", offset=1),
                           seen("a", "emergency", offset=2)]).candidates
    assert candidate.worst == "emergency" and candidate.supersedes == "0@2"


def test_an_event_already_upgraded_is_skipped() -> None:
    records = [seen("a", "basic", offset=5), seen("a", None, offset=8, supersedes="0@5"),
               seen("b", "basic", offset=6)]
    selection = select(records)
    assert [c.event_id for c in selection.candidates] == ["b"]
    assert selection.skipped == {"already_upgraded": 1}
    # order of reading does not matter within a partition: offsets do
    assert ids(list(reversed(records))) == ["b"]
    # an upgrade that came out degraded again (a forced backfill) is asked again, naming it
    again = select([seen("a", "basic", offset=5), seen("a", "basic", offset=8, supersedes="0@5")])
    assert [c.supersedes for c in again.candidates] == ["0@8"]


def test_across_partitions_the_later_completion_is_the_latest() -> None:
    early = seen("a", None, partition=1, offset=100, completed_at="2026-11-28T10:00:00.000Z")
    late = seen("a", "basic", partition=2, offset=1, completed_at="2026-11-28T11:00:00.000Z")
    assert ids([early, late]) == ["a"] and ids([late, early]) == ["a"]
    upgraded = seen("a", None, partition=3, offset=0, completed_at="2026-11-28T12:00:00.000Z")
    assert ids([late, upgraded]) == [] and ids([upgraded, late]) == []


def test_candidates_come_oldest_first_and_limit_keeps_the_oldest() -> None:
    records = [
        seen("late", "basic", partition=1, offset=0, completed_at="2026-11-28T10:00:09.000Z"),
        seen("early", "basic", partition=2, offset=7, completed_at="2026-11-28T10:00:01.000Z"),
        seen("mid", "basic", partition=0, offset=3, completed_at="2026-11-28T10:00:05.000Z"),
    ]
    assert ids(records) == ["early", "mid", "late"]
    selection = select(records, limit=2)
    assert [c.event_id for c in selection.candidates] == ["early", "mid"]
    assert selection.skipped == {"over_limit": 1}
    assert select([], level="basic").candidates == ()


# --------------------------------------------------------------------------- the upload


ORIGINAL: dict[str, Any] = {
    "schema": "pixelpipe.upload/1", "event_id": "e-1", "image_id": "img-1",
    "source": {"uri": f"blob://sources/cd/{SHA}", "sha256": SHA, "size": 10},
    "renditions": [{"name": "t", "preset": "thumbnail"}], "priority": "high",
    "submitted_at": "2026-11-27T00:00:00.000Z", "deadline": "2026-11-27T00:05:00.000Z",
    "attributes": {"tenant": "a"}, "replays": 1, "a_future_field": [1, 2],
}


def test_the_backfill_upload_is_the_original_asked_again_at_low_priority() -> None:
    message = backfill_message(ORIGINAL, "3@41", "2026-11-28T12:00:00.000Z")
    body = orjson.loads(message.value)
    assert message.event_id == "e-1" and message.key == b"img-1"  # same id, key and partition
    assert h.header_map(message.headers) == {h.EVENT_ID: "e-1", h.SCHEMA: "pixelpipe.upload/1"}
    assert body["priority"] == "low" and body["supersedes"] == "3@41"
    # a new request: its own submission time and no deadline of the old one
    assert body["submitted_at"] == "2026-11-28T12:00:00.000Z" and "deadline" not in body
    kept = {k: v for k, v in ORIGINAL.items() if k not in ("priority", "submitted_at", "deadline")}
    assert {k: body[k] for k in kept} == kept  # every other field, unknown ones too
    upload = decode_upload(message.value)
    assert upload.supersedes == "3@41" and upload.priority == "low" and upload.replays == 1
    assert ORIGINAL["priority"] == "high"  # the original is not changed


# --------------------------------------------------------------------------- health gate


def worker(wid: str, level: str = "full", *, missing: bool = False,
           forced: bool = False) -> dict[str, Any]:
    return {"id": wid, "level": level, "missing": missing, "forced": forced}


def status(*workers: dict[str, Any], override: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"workers": list(workers), "level": {"override": override, "workers": {}}}


def test_a_cluster_of_full_workers_without_override_is_healthy() -> None:
    healthy = status(worker("h-1"), worker("h-2"), worker("gone", "basic", missing=True))
    assert unhealthy(healthy) == []
    assert refusal(healthy, 6) is None


def test_an_override_a_degraded_worker_or_no_worker_is_not_healthy() -> None:
    forced = status(worker("h-1", "basic", forced=True),
                    override={"level": "basic", "until": None, "reason": "", "by": "op@h"})
    assert unhealthy(forced) == [
        "degradation override basic in force (set by op@h, until 'pixelpipe degrade auto')",
        "worker h-1 at basic (forced)",
    ]
    line = refusal(forced, 6)
    assert line is not None and "\n" not in line
    assert line.startswith("refusing to backfill 6 upload(s): the cluster is not healthy: ")
    assert line.endswith("(wait until every worker is at full, or pass --force)")
    assert unhealthy(status(worker("h-1"), worker("h-2", "reduced_quality"))) == [
        "worker h-2 at reduced_quality"]
    assert unhealthy(status(worker("gone", missing=True))) == ["no live worker"]
    timed = status(worker("h-1"), override={"level": "emergency",
                                            "until": "2026-11-28T12:00:00Z", "by": None})
    assert unhealthy(timed) == [
        "degradation override emergency in force (until 2026-11-28T12:00:00Z)"]
