"""Load and observation for the degradation benchmark: scheduled publishing of unique heavy
uploads, a follower of the outcome topics, and a peak-RSS sampler of a worker's process tree."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer
from harness import PipelineEnv

from pixelpipe.schemas import decode_processed
from pixelpipe.schemas.times import parse_time
from pixelpipe.storage.local import LocalBlobStore
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic

HEAVY = [{"name": "h", "operations": ["rotate:angle=90", "resize:width=1600,height=1600,fit=inside",
                                      "format:type=jpeg,quality=90"]}]


def unique_jpeg(data: bytes, tag: str) -> bytes:
    """``data`` (a JPEG) with a comment segment right after SOI: same pixels, new sha256."""
    payload = f"pixelpipe-bench {tag}".encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class RssSampler(threading.Thread):
    """Peak RSS of a process and all its children, sampled every second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            self._halt.wait(1.0)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


@dataclass
class Outcomes:
    """First processed event and dead letters per event id, read as they arrive.

    ``reclaim``: when set, an upload's source and outputs are deleted once its outcome is
    read (event id -> source path, filled by the publisher), so a 10-minute cell of unique
    multi-megabyte photographs does not fill the disk. Nothing in a benchmark cell reads an
    upload again after its outcome (no rebalance, no replay).
    """

    processed: dict[str, Any] = field(default_factory=dict)
    dead: dict[str, dict[str, Any]] = field(default_factory=dict)
    reclaim: dict[str, Path] | None = None
    store: LocalBlobStore | None = None

    def _reclaim(self, event_id: str, outputs: list[str]) -> None:
        if self.reclaim is None or self.store is None:
            return
        source = self.reclaim.pop(event_id, None)
        if source is not None:
            source.unlink(missing_ok=True)
        for uri in outputs:
            if uri.startswith("blob://outputs/"):
                with contextlib.suppress(Exception):
                    self.store.resolve(uri).unlink(missing_ok=True)

    def settled(self, ids: list[str]) -> int:
        return sum(1 for i in ids if i in self.processed or i in self.dead)


async def follow(pipeline: PipelineEnv, outcomes: Outcomes, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix),
        bootstrap_servers=pipeline.bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=200,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.topic == processed_topic(pipeline.prefix):
                        event = decode_processed(record.value)
                        outcomes.processed.setdefault(event.event_id, event)
                        outcomes._reclaim(event.event_id, [r.uri for r in event.renditions])
                    else:
                        body = orjson.loads(record.value)
                        outcomes.dead.setdefault(str(body.get("event_id")), body)
                        outcomes._reclaim(str(body.get("event_id")), [])
    finally:
        await consumer.stop()


async def publish_at_rate(pipeline: PipelineEnv, photos: list[bytes], rate: float, seconds: float,
                          tag: str, submitted: dict[str, float],
                          sources: dict[str, Path] | None = None,
                          ) -> tuple[list[str], float, float]:
    """Publish ``rate`` uploads/s for ``seconds`` (on a schedule, not throttled by acks).
    Returns the ids (``submitted`` gets each one's ``submitted_at``) and the wall-clock window (epoch seconds) the publishing took."""
    count = max(1, round(rate * seconds))
    ids: list[str] = []
    store = LocalBlobStore(pipeline.data_dir)
    async with Publisher(pipeline.settings()) as publisher:
        async def one(i: int) -> None:
            data = unique_jpeg(photos[i % len(photos)], f"{tag}-{i}")
            upload = await publisher.publish_bytes(data, HEAVY, image_id=f"{tag}-{i}")
            ids.append(upload.event_id)
            submitted[upload.event_id] = parse_time(upload.event.submitted_at).timestamp()
            if sources is not None:
                sources[upload.event_id] = store.resolve(upload.event.source.uri)

        began = time.time()
        origin = time.monotonic()
        tasks = []
        for i in range(count):
            delay = origin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        ended = max(time.time(), began + seconds)
    return ids, began, ended


async def wait_settled(outcomes: Outcomes, ids: list[str], timeout: float, say: Any) -> float:
    began = time.monotonic()
    last_report = began
    while outcomes.settled(ids) < len(ids) and time.monotonic() - began < timeout:
        await asyncio.sleep(0.5)
        if time.monotonic() - last_report > 30:
            say(f"    draining: {outcomes.settled(ids)}/{len(ids)} settled")
            last_report = time.monotonic()
    return time.monotonic() - began
