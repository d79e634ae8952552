"""A takeover drill: uploads in flight while workers are killed, join and leave.

Used by the chaos test (a few rounds) and by ``benchmarks/chaos`` (20+ takeovers over
thousands of uploads). The outcome is judged from outside, as an operator would: every
published event id is looked up on the processed and dead-letter topics, and the uploads
group's committed offsets are compared with the log end (a commit that stalls behind a hole
shows up as lag that never drains).

Each round publishes half a batch, waits until the current worker is part-way through it,
publishes the other half around the action (so every kill, join and leave lands with records
fetched but not finished), and does one action:

- ``kill9``: SIGKILL the only worker, start a new one (takeover after a crash);
- ``join-leave``: a second worker joins (rebalance), works, leaves with SIGTERM (rebalance);
- ``join-kill9``: a second worker joins, then the *first* is SIGKILLed (the survivor takes over).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from harness import PipelineEnv, WorkerProcess, consume_all

from pixelpipe.schemas import decode_deadletter
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic

RENDITIONS = [{"name": "t", "operations": ["resize:width=96,height=96,fit=inside",
                                           "format:type=jpeg,quality=80"]}]
ACTIONS = ("kill9", "join-leave", "join-kill9")
#: a slow fetch keeps several uploads in flight per worker without burning the two cores
DRILL_ENV = {"PIXELPIPE_FAULTS": "fetch:delay=200ms:always", "PIXELPIPE_MAX_INFLIGHT": "4"}


@dataclass
class DrillReport:
    published: list[str] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, set[str]] = field(default_factory=dict)
    takeovers: Counter[str] = field(default_factory=Counter)
    lag: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def lost(self) -> list[str]:
        return [e for e in self.published if e not in self.outcomes]

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.outcomes.values() if n > 1)

    def summary(self) -> str:
        return (
            f"{len(self.published)} uploads, {sum(self.takeovers.values())} takeovers "
            f"({dict(self.takeovers)}): {len(self.lost)} lost, {self.duplicates} duplicates, "
            f"lag after drain {sum(self.lag.values())}, {self.seconds:.0f} s"
        )


def outcome_count(worker: WorkerProcess) -> int:
    text = worker.log()
    return text.count("processed ") + text.count("dead-lettered ")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def _publish(pipeline: PipelineEnv, sources: Sequence[Path], count: int, start: int,
                   corrupt_every: int) -> tuple[list[str], set[str]]:
    ids: list[str] = []
    corrupt: set[str] = set()
    async with Publisher(pipeline.settings()) as publisher:
        for i in range(start, start + count):
            data = sources[i % len(sources)].read_bytes()
            broken = corrupt_every > 0 and i % corrupt_every == 0
            if broken:
                data = data[: len(data) // 3]
            upload = await publisher.publish_bytes(data, RENDITIONS, image_id=f"img-{i}")
            ids.append(upload.event_id)
            if broken:
                corrupt.add(upload.event_id)
    return ids, corrupt


def run_drill(
    pipeline: PipelineEnv, sources: Sequence[Path], *, rounds: int, per_round: int,
    actions: Sequence[str] = ACTIONS, corrupt_every: int = 40,
    say: Callable[[str], None] = lambda _: None, drain_timeout: float = 300,
) -> DrillReport:
    """Run ``rounds`` rounds of ``per_round`` uploads, one takeover action per round."""
    report = DrillReport()
    began = time.monotonic()
    serial = 0

    def start(name: str) -> WorkerProcess:
        nonlocal serial
        serial += 1
        return pipeline.start_worker(f"{name}{serial}", **DRILL_ENV)

    current = start("w")
    workers = [current]
    try:
        def publish(count: int) -> None:
            ids, corrupt = asyncio.run(
                _publish(pipeline, sources, count, len(report.published), corrupt_every))
            report.published.extend(ids)
            report.corrupt.update(corrupt)

        def part_way(worker: WorkerProcess, base: int, count: int) -> None:
            wait_until(lambda: outcome_count(worker) - base >= count, 120,
                       f"{worker.log_path.name} to get going")

        half = per_round // 2
        for r in range(rounds):
            action = actions[r % len(actions)]
            base = outcome_count(current)
            publish(half)
            part_way(current, base, half // 5)  # some done, most fetched or waiting
            if action == "kill9":
                publish(per_round - half)
                current.kill9()
                current = start("w")
                workers.append(current)
            elif action == "join-leave":
                second = start("j")  # joins while the first has uploads in flight
                workers.append(second)
                joined = outcome_count(second)
                publish(per_round - half)
                part_way(second, joined, 5)
                second.stop()  # leaves with uploads in flight
            elif action == "join-kill9":
                second = start("j")
                workers.append(second)
                base = outcome_count(current)
                publish(per_round - half)
                part_way(current, base, 5)
                current.kill9()
                current = second
            else:  # pragma: no cover - a typo in a caller
                raise ValueError(action)
            report.takeovers[action] += 1
            say(f"round {r + 1}/{rounds}: {action}, {len(report.published)} published")
        report.statuses = read_outcomes(pipeline, report.published, drain_timeout)
        report.outcomes = count_outcomes(pipeline)
        report.lag = drained_lag(pipeline, timeout=30)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.stop()
    report.seconds = time.monotonic() - began
    return report


def _records(pipeline: PipelineEnv, ids: Sequence[str], timeout: float) -> list[Any]:
    wanted = set(ids)

    def all_seen(records: list[Any]) -> bool:
        return wanted <= {orjson.loads(r.value).get("event_id") for r in records}

    return consume_all(
        pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
        done=all_seen, timeout=timeout,
    )


def read_outcomes(pipeline: PipelineEnv, ids: Sequence[str], timeout: float) -> dict[str, set[str]]:
    """event id -> the statuses seen for it ('processed' or a dead letter's error code)."""
    out: dict[str, set[str]] = {}
    for record in _records(pipeline, ids, timeout):
        if record.topic == dlq_topic(pipeline.prefix):
            letter = decode_deadletter(record.value)
            out.setdefault(letter.event_id, set()).add(letter.error.code)
        else:
            out.setdefault(orjson.loads(record.value)["event_id"], set()).add("processed")
    return out


def count_outcomes(pipeline: PipelineEnv) -> Counter[str]:
    """How many outcome records each event id has (more than one: a harmless duplicate)."""
    records = consume_all(
        pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
        done=lambda _r: False, timeout=3,
    )
    return Counter(orjson.loads(r.value).get("event_id") for r in records)


def drained_lag(pipeline: PipelineEnv, *, timeout: float) -> dict[int, int]:
    """Per uploads partition: log end minus the group's committed offset, once it stops moving.

    Every outcome is delivered by the time this runs, so a correct worker's commits reach the
    log end within a commit interval; a lag that stays is a stalled in-order ack queue.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    topic = uploads_topic(pipeline.prefix)
    settings = pipeline.settings()
    group, partitions = settings.uploads_group, settings.upload_partitions

    async def lag_now() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=pipeline.bootstrap, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await consumer.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
            return {tp.partition: ends[tp] - max(0, committed[tp].offset if tp in committed
                                                 else 0) for tp in parts}
        finally:
            await consumer.stop()
            await admin.close()

    deadline = time.monotonic() + timeout
    lag = asyncio.run(lag_now())
    while sum(lag.values()) and time.monotonic() < deadline:
        time.sleep(1)
        lag = asyncio.run(lag_now())
    return lag
