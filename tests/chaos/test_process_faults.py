"""A transform that segfaults, one that hangs, one that allocates 10 GB (issue 14): inside
the image process of a real worker on the real broker. Each upload's first attempt ends as a
retry within the task timeout + 2 s, the worker survives, the pool recovers, and every
published event id ends processed (judged from the topics, as an outside reader)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, read_to_end, wait_for_records
from images import mixed_images

from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic, retry_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

TASK_TIMEOUT_S = 3
CASES = {  # rendition operations -> the fault its first call suffers, the code it ends with
    "crash": (["resize:width=64", "format:type=jpeg"], "worker_crashed"),
    "hang": (["blur:sigma=1", "format:type=png"], "processing_timeout"),
    "oom": (["sharpen", "format:type=webp"], "worker_crashed"),
}


def test_crash_hang_and_oom_in_the_image_process_end_in_retries_and_nothing_is_lost(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", 3, max_side=300)
               if img.path.suffix in (".jpg", ".png")]
    worker = pipeline.start_worker(
        "faulty", PIXELPIPE_WORKERS="1", PIXELPIPE_TASK_TIMEOUT=str(TASK_TIMEOUT_S),
        PIXELPIPE_FAULTS="resize:crash:1;blur:hang:1;sharpen:oom:1",
    )
    try:
        async def publish() -> dict[str, tuple[str, float]]:
            ids: dict[str, tuple[str, float]] = {}
            async with Publisher(pipeline.settings()) as publisher:
                for n, (fault, (ops, _code)) in enumerate(CASES.items()):
                    upload = await publisher.publish_bytes(
                        sources[n % len(sources)].read_bytes(), [{"name": fault, "operations": ops}])
                    ids[upload.event_id] = (fault, 0.0)
                    await asyncio.sleep(TASK_TIMEOUT_S + 1)  # one at a time: no queueing
            return ids

        ids = asyncio.run(publish())

        def all_done(records: list[Any]) -> bool:
            return set(ids) <= {orjson.loads(r.value)["event_id"] for r in records}

        outcomes = wait_for_records(
            pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
            all_done, timeout=90, what="an outcome for every upload")
        by_id = {orjson.loads(r.value)["event_id"]: r for r in outcomes}
        uploads = {orjson.loads(r.value)["event_id"]: r for r in read_to_end(
            pipeline.bootstrap, [f"{pipeline.prefix}.uploads"])}
        retries = {orjson.loads(r.value)["event_id"]: r for r in read_to_end(
            pipeline.bootstrap, [retry_topic("1s", pipeline.prefix)])}
        for event_id, (fault, _) in ids.items():
            outcome = by_id[event_id]
            assert outcome.topic == processed_topic(pipeline.prefix), (fault, outcome.value)
            assert orjson.loads(outcome.value)["attempts"] == 2, fault
            retry = orjson.loads(retries[event_id].value)
            assert retry["attempts"][0]["code"] == CASES[fault][1], (fault, retry)
            # the failed first attempt was routed within the task timeout + 2 s of its upload
            took = (retries[event_id].timestamp - uploads[event_id].timestamp) / 1000
            assert took <= TASK_TIMEOUT_S + 2, (fault, took)
        assert worker.process.poll() is None  # the worker survived all three
        status, body = worker.get("/health")
        assert status == 200 and body["status"] == "ok"
    finally:
        worker.stop()
