"""``pixelpipe backfill`` on the real broker (issue 10, "Upgrade later"): uploads served
degraded under a forced level are asked again once the cluster is healthy, and consumers get
a second, full-quality processed event for each, naming the one it supersedes.

Judged from outside: the CLI's output and exit codes, the uploads and processed topics, and a
``ProcessedConsumer`` reading from the beginning.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import (
    PipelineEnv,
    WorkerProcess,
    json_lines,
    read_to_end,
    wait_for_records,
    wait_until,
)
from images import mixed_images

from pixelpipe.policy.backfill import unhealthy
from pixelpipe.schemas import ProcessedEvent, decode_processed, decode_upload
from pixelpipe.streams.client import ProcessedConsumer, Publisher
from pixelpipe.streams.cluster_status import cluster_status
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic

pytestmark = [pytest.mark.broker]

COUNT = 6
RENDITIONS = [{"name": "t", "operations": ["resize:width=160,height=160,fit=inside",
                                           "format:type=jpeg,quality=90"]}]


async def publish(pipeline: PipelineEnv, sources: list[Path]) -> list[str]:
    async with Publisher(pipeline.settings()) as publisher:
        return [(await publisher.publish_bytes(source.read_bytes(), RENDITIONS)).event_id
                for source in sources]


def outcomes(pipeline: PipelineEnv, ids: list[str], per_event: int,
             timeout: float = 60) -> dict[str, list[tuple[int, int, ProcessedEvent]]]:
    """event id -> its processed events as (partition, offset, event), in offset order, once
    each of ``ids`` has ``per_event`` of them; fails on a dead letter of one of them."""
    wanted = set(ids)
    topic = processed_topic(pipeline.prefix)

    def done(records: list[Any]) -> bool:
        counts: dict[str, int] = defaultdict(int)
        for record in records:
            body = orjson.loads(record.value)
            assert not (record.topic != topic and body.get("event_id") in wanted), body
            counts[body.get("event_id")] += record.topic == topic
        return all(counts[i] >= per_event for i in wanted)

    records = wait_for_records(pipeline.bootstrap, [topic, dlq_topic(pipeline.prefix)], done,
                               timeout=timeout, what=f"{per_event} outcome(s) of {len(ids)}")
    out: dict[str, list[tuple[int, int, ProcessedEvent]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = decode_processed(record.value)
        if event.event_id in wanted:
            out[event.event_id].append((record.partition, record.offset, event))
    return dict(out)


def uploads_on_topic(pipeline: PipelineEnv) -> list[Any]:
    return [decode_upload(r.value)
            for r in read_to_end(pipeline.bootstrap, [uploads_topic(pipeline.prefix)])]


def service_level(worker: WorkerProcess) -> str:
    return str(worker.get("/status")[1]["service"]["level"])


def test_backfill_upgrades_what_was_served_degraded_once_the_cluster_is_healthy(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", COUNT, max_side=500)]
    # a heartbeat every second: the health gate reads the workers' levels from them
    worker = pipeline.start_worker("bf", PIXELPIPE_HEARTBEAT="1s")
    try:
        # Given uploads served while an operator pins basic
        pipeline.cli("degrade", "set", "basic", "--reason", "backfill drill")
        wait_until(lambda: service_level(worker) == "basic", 15, "the worker to obey basic")
        ids = asyncio.run(publish(pipeline, sources))
        first = outcomes(pipeline, ids, 1)
        degraded: dict[str, str] = {}  # event id -> partition@offset of its degraded outcome
        for event_id, seen in first.items():
            partition, offset, event = seen[-1]
            assert event.level == "basic" and event.supersedes is None
            assert [r.degraded for r in event.renditions] == ["basic"]
            degraded[event_id] = f"{partition}@{offset}"
        assert len(uploads_on_topic(pipeline)) == COUNT

        # When an operator previews a backfill: exactly those, and nothing is published
        dry = pipeline.cli("backfill", "--dry-run", "--json")
        plan = json_lines(dry.stdout)
        assert {line["event_id"]: line["supersedes"] for line in plan} == degraded
        assert {(line["action"], line["level"], line["worst"]) for line in plan} == {
            ("would_publish", "basic", "basic")}
        assert "nothing published" in dry.stderr.decode()
        # ... and a backfill while the override holds is refused, nothing published
        refused = pipeline.cli("backfill", check=False)
        assert refused.returncode == 1, refused.stderr
        message = refused.stderr.decode()
        assert message.count("\n") == 1 and "refusing to backfill 6 upload(s)" in message
        assert "degradation override basic in force" in message, message
        assert len(uploads_on_topic(pipeline)) == COUNT

        # When the cluster is healthy again (the worker's level, and its heartbeat)
        pipeline.cli("degrade", "auto")
        wait_until(lambda: service_level(worker) == "full", 30, "the worker to be back at full")
        wait_until(lambda: unhealthy(asyncio.run(cluster_status(pipeline.settings()))) == [],
                   15, "the status to show every worker at full")
        run = pipeline.cli("backfill", "--json", "--rate", "50")
        published = json_lines(run.stdout)
        assert {line["event_id"] for line in published} == set(ids)
        assert {line["action"] for line in published} == {"published"}
        assert "backfilled 6 upload(s)" in run.stderr.decode()

        # Then each was asked again: same ids, low priority, naming the degraded outcome
        again = [u for u in uploads_on_topic(pipeline) if u.supersedes is not None]
        assert {u.event_id: u.supersedes for u in again} == degraded
        assert {u.priority for u in again} == {"low"}
        # ... and each event id has a second processed event, at full, superseding the first
        second = outcomes(pipeline, ids, 2)
        for event_id, seen in second.items():
            upgraded = [event for _, _, event in seen if event.supersedes is not None]
            assert len(upgraded) >= 1, seen
            assert upgraded[0].supersedes == degraded[event_id]
            assert upgraded[0].level == "full"
            assert [r.degraded for r in upgraded[0].renditions] == [None]
            assert upgraded[0].renditions[0].uri != seen[0][2].renditions[0].uri

        # ... a consumer from the beginning gets both for each event id
        async def consume() -> list[tuple[str, str | None]]:
            async with ProcessedConsumer(pipeline.settings(), from_beginning=True) as events:
                return [(e.event_id, e.supersedes) async for e in events]

        got = asyncio.run(consume())
        assert Counter(got) == Counter([(i, None) for i in ids] + [(i, degraded[i]) for i in ids])

        # ... and a second backfill finds nothing left to do
        rerun = pipeline.cli("backfill", "--json")
        assert rerun.stdout == b"" and rerun.returncode == 0
        assert "nothing to backfill" in rerun.stderr.decode()
        assert "already_upgraded 6" in rerun.stderr.decode()
    finally:
        worker.stop()
