"""kill -9 the worker with 300 uploads in flight: none is lost (issue 2, acceptance 3)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, consume_all
from images import mixed_images

from pixelpipe.schemas import decode_deadletter, decode_processed
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

RENDITIONS = [{"name": "w", "operations": ["resize:width=480,height=480,fit=inside",
                                           "format:type=webp,quality=80"]}]
TOTAL = 300
CORRUPT_EVERY = 25  # 12 of the 300 are broken on purpose: dead letters must survive too


async def publish_all(pipeline: PipelineEnv, sources: list[Path]) -> list[str]:
    ids = []
    async with Publisher(pipeline.settings()) as publisher:
        for i in range(TOTAL):
            data = sources[i % len(sources)].read_bytes()
            if i % CORRUPT_EVERY == 0:
                data = data[: len(data) // 3]
            upload = await publisher.publish_bytes(data, RENDITIONS, image_id=f"img-{i}")
            ids.append(upload.event_id)
    return ids


def outcomes(
    pipeline: PipelineEnv, ids: list[str], timeout: float
) -> list[tuple[str, str, tuple[str, ...]]]:
    """(event_id, 'processed' | code, output uris) for every outcome record on the topics,
    read until every one of ``ids`` has one (or the timeout)."""
    wanted = set(ids)

    def all_seen(records: list[Any]) -> bool:
        seen = {orjson.loads(r.value).get("event_id") for r in records}
        return wanted <= seen

    records = consume_all(
        pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
        done=all_seen, timeout=timeout,
    )
    out = []
    for record in records:
        if record.topic == dlq_topic(pipeline.prefix):
            letter = decode_deadletter(record.value)
            out.append((letter.event_id, letter.error.code, ()))
        else:
            event = decode_processed(record.value)
            out.append((event.event_id, "processed", tuple(r.uri for r in event.renditions)))
    return out


def test_kill9_with_300_uploads_in_flight_loses_nothing(pipeline: PipelineEnv, tmp_path: Path) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", 20, max_side=1200)
               if img.path.suffix in (".jpg", ".png", ".webp")]
    # Given a worker busy with 300 uploads
    first = pipeline.start_worker("first")
    ids = asyncio.run(publish_all(pipeline, sources))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.log().count("processed ") < 40:
        time.sleep(0.2)
    done_before = first.log().count("processed ") + first.log().count("dead-lettered ")
    # When it is killed with SIGKILL mid-stream and a new worker takes over
    first.kill9()
    assert 0 < done_before < TOTAL, f"the kill should land mid-stream ({done_before} done)"
    second = pipeline.start_worker("second")
    try:
        seen = outcomes(pipeline, ids, timeout=240)
    finally:
        second.stop()
    # Then every event_id ends processed or dead-lettered
    by_id: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
    for event_id, status, uris in seen:
        by_id[event_id].append((status, uris))
    missing = set(ids) - set(by_id)
    assert not missing, f"{len(missing)} events lost"
    # And a duplicate (at-least-once) has the same outcome and the same output keys
    duplicates = {e: o for e, o in by_id.items() if len(o) > 1}
    for event_id, copies in duplicates.items():
        assert len(set(copies)) == 1, (event_id, copies)
    broken = {ids[i] for i in range(0, TOTAL, CORRUPT_EVERY)}
    for event_id, copies in by_id.items():
        assert copies[0][0] == ("corrupt_image" if event_id in broken else "processed")
    print(f"\nkill -9 after {done_before} of {TOTAL} outcomes: {len(seen)} outcome records, "
          f"{len(duplicates)} event ids delivered twice, 0 lost")
