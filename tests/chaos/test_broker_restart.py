"""Restart the broker with uploads in flight: no event is lost (non-negotiable)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, consume_all
from images import mixed_images
from kafka_broker import Broker

from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

RENDITIONS = [{"name": "w", "operations": ["resize:width=400,height=400,fit=inside",
                                           "format:type=webp,quality=75"]}]
TOTAL = 120


async def publish(pipeline: PipelineEnv, sources: list[Path]) -> list[str]:
    async with Publisher(pipeline.settings()) as publisher:
        return [(await publisher.publish_file(sources[i % len(sources)], RENDITIONS)).event_id
                for i in range(TOTAL)]


def test_a_broker_restart_mid_stream_loses_no_upload(
    kafka_broker: Broker, pipeline: PipelineEnv, tmp_path: Path
) -> None:
    if not kafka_broker.can_control:
        if os.environ.get("CI"):
            raise AssertionError("CI must run this against a broker the tests control")
        pytest.skip(f"the {kafka_broker.kind} broker is not the tests' to restart")
    sources = [img.path for img in mixed_images(tmp_path / "in", 12, max_side=1200)]
    # Given a worker busy with 120 uploads (the breaker kept out: this is about delivery)
    extra = {"PIXELPIPE_BREAKER_MIN_CALLS": "100000"}
    worker = pipeline.start_worker("first", **extra)
    ids = asyncio.run(publish(pipeline, sources))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.log().count("processed ") < 20:
        time.sleep(0.2)
    # When the broker is stopped and started again mid-stream
    began = time.monotonic()
    kafka_broker.restart()
    outage = time.monotonic() - began
    # Then the worker either rides it out or stops rather than skip an event; a supervisor
    # (here: the test) starts it again, as systemd or Kubernetes would
    workers, restarts = [worker], 0
    wanted = set(ids)

    def all_seen(records: list[Any]) -> bool:
        nonlocal restarts
        if workers[-1].process.poll() is not None:
            restarts += 1
            workers.append(pipeline.start_worker(f"again-{restarts}", **extra))
        return wanted <= {orjson.loads(r.value).get("event_id") for r in records}

    try:
        records = consume_all(
            pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
            done=all_seen, timeout=240,
        )
    finally:
        for w in workers:
            w.stop()
    seen = {orjson.loads(r.value).get("event_id") for r in records}
    missing = wanted - seen
    assert not missing, f"{len(missing)} uploads lost; worker log:\n{workers[-1].log()[-3000:]}"
    statuses = {orjson.loads(r.value).get("schema") for r in records}
    print(f"\nbroker restarted in {outage:.1f} s mid-stream: {len(records)} outcome records for "
          f"{TOTAL} uploads, 0 lost, worker restarts: {restarts}, schemas {sorted(statuses)}")
