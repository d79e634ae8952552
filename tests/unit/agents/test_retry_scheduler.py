"""RetryScheduler without a broker: a fake consumer (getmany/commit/pause/resume), a fake
processor and router whose attempts finish when the test says, and a fake clock (the
module's ``time`` is replaced, so no production seam is needed).

What must hold: a record is dispatched only once its ``due_at`` has come (never early), in
arrival order per partition (a later-due head makes the next one late, not early); a
partition holding HIGH_WATER waiting records is paused and resumed only below LOW_WATER;
offsets are committed in order, and only after the attempt's outcome was delivered, so an
out-of-order completion never commits past an unfinished record; after a revoke, a late
completion commits nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pixelpipe.agents import retry
from pixelpipe.agents.retry import RetryScheduler
from pixelpipe.agents.upload_processor import Failed
from pixelpipe.config import Settings
from pixelpipe.policy.routing import iso
from pixelpipe.schemas import AttemptRecord, Origin, RetryEnvelope, encode

TOPIC = "pixelpipe.retry.5s"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
T0 = 1_700_000_000.0  # the fake clock's epoch (seconds)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes


def envelope_value(offset: int, due_in_s: float, attempts: int = 1) -> bytes:
    original = {"event_id": f"evt-{offset}", "image_id": f"img-{offset}"}
    return encode(RetryEnvelope(
        event_id=f"evt-{offset}", original=original,
        attempts=tuple(AttemptRecord(iso(datetime.fromtimestamp(T0, UTC)),
                                     "storage_unavailable", "main") for _ in range(attempts)),
        origin=Origin("pixelpipe.uploads", 0, offset),
        first_failed_at=iso(datetime.fromtimestamp(T0, UTC)),
        due_at=iso(datetime.fromtimestamp(T0 + due_in_s, UTC)), tier="5s",
        image_id=f"img-{offset}",
    ))


def record(tp: TopicPartition, offset: int, due_in_s: float, attempts: int = 1) -> Record:
    return Record(tp.topic, tp.partition, offset, envelope_value(offset, due_in_s, attempts))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + seconds


class FakeConsumer:
    def __init__(self) -> None:
        self.batches: list[dict[TopicPartition, list[Record]]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused: list[TopicPartition] = []
        self.resumed: list[TopicPartition] = []
        self.timeouts_ms: list[int] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        self.timeouts_ms.append(timeout_ms)
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.extend(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.resumed.extend(tps)


@dataclass
class FakeProcessor:
    """``process`` returns once the test releases the attempt (by the event id inside)."""

    started: list[tuple[str, Origin, int]] = field(default_factory=list)
    release: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, event_id: str) -> asyncio.Event:
        return self.release.setdefault(event_id, asyncio.Event())

    async def process(self, raw: bytes | None, origin: Origin, *, attempts: int = 1,
                      deferrals: int = 0) -> Any:
        event_id = orjson.loads(raw or b"{}")["event_id"]
        self.started.append((event_id, origin, attempts))
        await self.gate(event_id).wait()
        return ("outcome", event_id)


@dataclass
class FakeRouter:
    """``deliver`` returns once the test acknowledges (or raises, for a failed delivery)."""

    delivered: list[tuple[Any, Origin, str]] = field(default_factory=list)
    acks: dict[int, asyncio.Event] = field(default_factory=dict)
    auto_ack: bool = True
    fail: BaseException | None = None

    def ack(self, offset: int) -> asyncio.Event:
        return self.acks.setdefault(offset, asyncio.Event())

    async def deliver(self, outcome: Any, origin: Origin, *, tier: str,
                      history: RetryEnvelope | None) -> str:
        if not self.auto_ack:
            await self.ack(origin.offset).wait()
        if self.fail is not None:
            raise self.fail
        self.delivered.append((outcome, origin, tier))
        return "processed"


@dataclass
class FakeApp:
    crashed: list[BaseException] = field(default_factory=list)

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


@dataclass
class Rig:
    scheduler: RetryScheduler
    consumer: FakeConsumer
    processor: FakeProcessor
    router: FakeRouter
    app: FakeApp
    clock: Clock

    async def step(self, batch: dict[TopicPartition, list[Record]] | None = None) -> None:
        if batch:
            self.consumer.batches.append(batch)
        await self.scheduler._step(self.consumer)  # type: ignore[arg-type]
        await settle()

    def started(self) -> list[str]:
        return [event_id for event_id, _, _ in self.processor.started]

    async def finish(self, *event_ids: str) -> None:
        for event_id in event_ids:
            self.processor.gate(event_id).set()
            await settle()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    clock = Clock()
    monkeypatch.setattr(retry, "time", SimpleNamespace(time=clock.time))
    app, processor, router = FakeApp(), FakeProcessor(), FakeRouter()
    settings = Settings(retry_tiers=(("5s", 5.0),), max_inflight=100)
    scheduler = RetryScheduler(app, settings, processor, router)  # type: ignore[arg-type]
    consumer = FakeConsumer()
    scheduler._consumer = consumer  # type: ignore[assignment]
    return Rig(scheduler, consumer, processor, router, app, clock)


async def test_records_are_dispatched_when_due_and_never_early(rig: Rig) -> None:
    await rig.step({TP0: [record(TP0, 0, 5.0), record(TP0, 1, 10.0)]})
    assert rig.started() == []
    assert rig.scheduler.waiting == 2
    # the fetch waits no longer than the time to the next due head (capped at 200 ms)
    assert rig.consumer.timeouts_ms[-1] <= 200

    rig.clock.at(4.999)
    await rig.step()
    assert rig.started() == []  # a millisecond early is early

    rig.clock.at(5.0)
    await rig.step()
    assert rig.started() == ["evt-0"]

    rig.clock.at(9.9)
    await rig.step()
    assert rig.started() == ["evt-0"]
    rig.clock.at(10.05)
    await rig.step()
    assert rig.started() == ["evt-0", "evt-1"]
    assert rig.scheduler.waiting == 0
    assert min(rig.scheduler.lateness) >= 0  # never started before its due time
    # the attempt replays the original upload, counting the attempts so far
    assert rig.processor.started[1] == ("evt-1", Origin(TOPIC, 0, 1), 2)


async def test_the_wait_before_the_next_fetch_is_the_time_to_the_next_due_head(rig: Rig) -> None:
    await rig.step({TP0: [record(TP0, 0, 0.15)]})
    await rig.step()
    assert 140 <= rig.consumer.timeouts_ms[-1] <= 150


async def test_a_later_due_head_makes_the_next_record_late_never_early(rig: Rig) -> None:
    # jitter can put a later-due record first in a partition: it is kept in arrival order
    await rig.step({TP0: [record(TP0, 0, 6.0), record(TP0, 1, 5.0)],
                    TP1: [record(TP1, 100, 5.5)]})
    rig.clock.at(5.6)
    await rig.step()
    assert rig.started() == ["evt-100"]  # TP1 runs; TP0's due record waits behind its head
    rig.clock.at(6.0)
    await rig.step()
    assert rig.started() == ["evt-100", "evt-0", "evt-1"]  # arrival order within TP0


async def test_a_partition_past_high_water_is_paused_and_resumed_below_low_water(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "HIGH_WATER", 4)
    monkeypatch.setattr(retry, "LOW_WATER", 1)
    await rig.step({TP0: [record(TP0, i, 10.0 * (i + 1)) for i in range(3)],
                    TP1: [record(TP1, 100, 100.0)]})
    assert rig.consumer.paused == []  # 3 waiting: under the cap
    await rig.step({TP0: [record(TP0, 3, 40.0)]})
    assert rig.consumer.paused == [TP0]  # 4 waiting: paused; TP1 keeps being fetched
    await rig.step({TP0: [record(TP0, 4, 50.0)]})  # already fetched before the pause
    assert rig.consumer.paused == [TP0]  # paused once, not again

    rig.clock.at(20.0)
    await rig.step()
    assert rig.scheduler.waiting == 3 + 1  # 3 of TP0 (2 dispatched), 1 of TP1
    assert rig.consumer.resumed == []  # 3 waiting: not yet below LOW_WATER
    rig.clock.at(40.0)
    await rig.step()
    assert rig.consumer.resumed == [TP0]  # 1 waiting
    rig.clock.at(50.0)
    await rig.step()
    assert rig.consumer.resumed == [TP0]  # resumed once
    assert rig.started() == [f"evt-{i}" for i in range(5)]


async def test_commits_follow_offset_order_under_out_of_order_completion(rig: Rig) -> None:
    await rig.step({TP0: [record(TP0, 10, 0.0), record(TP0, 11, 0.0), record(TP0, 12, 0.0)]})
    assert rig.started() == ["evt-10", "evt-11", "evt-12"]  # all due: all running at once

    await rig.finish("evt-12")
    await rig.finish("evt-11")
    assert [o.offset for _, o, _ in rig.router.delivered] == [12, 11]
    assert rig.consumer.commits == []  # offset 10 is still running: nothing passes it

    await rig.finish("evt-10")
    assert rig.consumer.commits == [{TP0: 13}]


async def test_a_commit_waits_for_the_delivery_of_the_outcome(rig: Rig) -> None:
    rig.router.auto_ack = False
    await rig.step({TP0: [record(TP0, 0, 0.0), record(TP0, 1, 0.0)]})
    await rig.finish("evt-0", "evt-1")
    assert rig.consumer.commits == []  # processed, but the outcome is not acknowledged yet
    rig.router.ack(1).set()
    await settle()
    assert rig.consumer.commits == []  # offset 0's outcome still in flight
    rig.router.ack(0).set()
    await settle()
    assert rig.consumer.commits == [{TP0: 2}]


async def test_partitions_commit_independently(rig: Rig) -> None:
    await rig.step({TP0: [record(TP0, 0, 0.0), record(TP0, 1, 0.0)],
                    TP1: [record(TP1, 7, 0.0)]})
    await rig.finish("evt-7")
    assert rig.consumer.commits == [{TP1: 8}]
    await rig.finish("evt-1")
    assert rig.consumer.commits == [{TP1: 8}]


async def test_a_failed_delivery_commits_nothing_and_crashes_the_worker(rig: Rig) -> None:
    rig.router.fail = RuntimeError("broker refused")
    await rig.step({TP0: [record(TP0, 0, 0.0)]})
    await rig.finish("evt-0")
    assert rig.consumer.commits == []
    assert [str(e) for e in rig.app.crashed] == ["broker refused"]


async def test_after_a_revoke_a_late_completion_commits_nothing(rig: Rig) -> None:
    await rig.step({TP0: [record(TP0, 0, 0.0), record(TP0, 1, 30.0)],
                    TP1: [record(TP1, 100, 0.0)]})
    assert rig.started() == ["evt-0", "evt-100"]
    rig.scheduler.forget({TP0})
    assert rig.scheduler.waiting == 0  # TP0's waiting record is dropped (the new owner reads it)

    await rig.finish("evt-0", "evt-100")  # both finish after the revoke
    assert len(rig.router.delivered) == 2  # the outcomes are still delivered (idempotent)
    assert rig.consumer.commits == [{TP1: 101}]  # only the partition still owned

    rig.clock.at(30.0)
    await rig.step()
    assert len(rig.processor.started) == 2  # the revoked partition's record never runs here


async def test_an_undecodable_record_is_dead_lettered_at_once(rig: Rig) -> None:
    await rig.step({TP0: [Record(TOPIC, 0, 4, b"\x00not json")]})
    assert rig.processor.started == []
    ((outcome, origin, tier),) = rig.router.delivered
    assert isinstance(outcome, Failed) and outcome.error.code == "malformed_event"
    assert outcome.event_id == f"malformed:{TOPIC}:0:4"
    assert (origin, tier) == (Origin(TOPIC, 0, 4), "retry")
    assert rig.consumer.commits == [{TP0: 5}]
