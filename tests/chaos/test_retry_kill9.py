"""kill -9 while events wait in the retry tiers: none lost, none early (issue 4, 5)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from harness import PipelineEnv, consume_all
from images import mixed_images

from pixelpipe.schemas import decode_processed, decode_retry, parse_time
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import processed_topic, retry_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

TIERS = ["3s", "6s", "9s"]
RENDITIONS = [{"name": "w", "operations": ["resize:width=200,height=200,fit=inside"]}]
COUNT = 30


async def publish(pipeline: PipelineEnv, paths: list[Path]) -> list[str]:
    async with Publisher(pipeline.settings()) as publisher:
        return [(await publisher.publish_file(p, RENDITIONS)).event_id for p in paths]


def test_kill9_while_events_wait_in_the_tiers_loses_none_and_fires_none_early(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "in", COUNT, max_side=600)]
    tiers = ",".join(TIERS)
    # Given a worker whose resize fails for its first 20 s, so every upload goes to a tier
    # (the breaker is kept out of it: this test is about the tiers)
    first = pipeline.start_worker("first", PIXELPIPE_FAULTS="resize:storage_unavailable:20s",
                                  PIXELPIPE_RETRY_TIERS=tiers, PIXELPIPE_BREAKER_MIN_CALLS="1000")
    ids = asyncio.run(publish(pipeline, sources))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.log().count("in tier 3s") < COUNT:
        time.sleep(0.1)
    assert first.log().count("in tier 3s") == COUNT
    # When it is killed with SIGKILL while they wait, and a healthy worker starts
    first.kill9()
    second = pipeline.start_worker("second", PIXELPIPE_RETRY_TIERS=tiers,
                                   PIXELPIPE_BREAKER_MIN_CALLS="1000")
    try:
        records = consume_all(
            pipeline.bootstrap, [processed_topic(pipeline.prefix)],
            done=lambda rs: {decode_processed(r.value).event_id for r in rs} >= set(ids),
            timeout=120,
        )
    finally:
        second.stop()
    # Then every upload is processed (none lost)
    processed = {}
    for record in records:
        event = decode_processed(record.value)
        processed.setdefault(event.event_id, event)
    assert set(processed) == set(ids)
    # And none ran before its due time: every dispatch by the scheduler was at or after due,
    late = [float(m) for m in re.findall(r"started (-?[\d.]+) ms after its due", second.log())]
    assert late and all(ms >= 0 for ms in late)
    # and, by the records: a copy processed from a tier (attempts >= 2, or after deferrals)
    # completed after the earliest due time of that event's retry records. (A copy processed
    # from the uploads topic again after the kill is an at-least-once duplicate: allowed.)
    retries = consume_all(pipeline.bootstrap, [retry_topic(t, pipeline.prefix) for t in TIERS],
                          done=lambda rs: False, timeout=3)
    first_due: dict[str, str] = {}
    for record in retries:
        envelope = decode_retry(record.value)
        if envelope.due_at < first_due.get(envelope.event_id, "9999"):
            first_due[envelope.event_id] = envelope.due_at
    assert set(first_due) == set(ids)
    copies = [decode_processed(r.value) for r in records]
    for copy in copies:
        if copy.attempts >= 2:
            assert parse_time(copy.completed_at) >= parse_time(first_due[copy.event_id])
    print(f"\n{COUNT} uploads waiting in tier 3s at kill -9; after restart all processed; "
          f"lateness max {max(late):.1f} ms over {len(late)} dispatches")
