"""``ProcessedConsumer`` drops repeated events but passes a backfill's outcome through: the
dedupe key is ``(event_id, supersedes)``. Its Kafka consumer is replaced by a fake holding one
partition's records (no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from pixelpipe.config import Settings
from pixelpipe.schemas import ProcessedEvent, RenditionResult, encode
from pixelpipe.streams.processed_consumer import ProcessedConsumer

SHA = "ab" * 32
TP = TopicPartition("pixelpipe.processed", 0)


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes | None


class FakeKafka:
    """What ``ProcessedConsumer.__aiter__`` uses of an aiokafka consumer, over one partition."""

    def __init__(self, values: list[bytes | None]) -> None:
        self.records = [Record(i, v) for i, v in enumerate(values)]
        self.at = 0
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {TP: len(self.records)}

    async def getmany(self, timeout_ms: int = 0, max_records: int = 200) -> dict[Any, Any]:
        batch = self.records[self.at : self.at + 3]  # small batches: dedupe spans them
        self.at += len(batch)
        return {TP: batch} if batch else {}

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def event(event_id: str, supersedes: str | None = None, degraded: str | None = None) -> bytes:
    return encode(ProcessedEvent(
        event_id=event_id, image_id=f"img-{event_id}", source_sha256=SHA,
        renditions=(RenditionResult(name="t", uri="blob://outputs/x", sha256=SHA, size=1,
                                    width=1, height=1, format="jpeg", degraded=degraded),),
        attempts=1, processing_ms=1.0, completed_at="2026-11-28T10:00:00.000Z",
        level=degraded or "full", supersedes=supersedes,
    ))


async def read_all(values: list[bytes | None], **options: Any) -> tuple[
        list[ProcessedEvent], ProcessedConsumer, FakeKafka]:
    consumer = ProcessedConsumer(Settings(), **options)
    fake = FakeKafka(values)
    consumer._consumer = fake  # type: ignore[assignment]
    return [e async for e in consumer], consumer, fake


async def test_a_superseding_event_passes_through_and_repeats_of_either_are_dropped() -> None:
    degraded = event("e1", degraded="basic")
    upgraded = event("e1", supersedes="0@0")
    values = [degraded, degraded, event("e2"), upgraded, b"not json", degraded, upgraded,
              event("e2")]
    events, consumer, _ = await read_all(values)
    assert [(e.event_id, e.supersedes) for e in events] == [
        ("e1", None), ("e2", None), ("e1", "0@0")]
    assert events[0].renditions[0].degraded == "basic"
    assert events[2].renditions[0].degraded is None
    assert consumer.duplicates_dropped == 4


async def test_a_second_backfill_of_the_same_event_is_a_new_event_too() -> None:
    values = [event("e1", degraded="basic"), event("e1", supersedes="0@0", degraded="basic"),
              event("e1", supersedes="0@1"), event("e1", supersedes="0@1")]
    events, consumer, _ = await read_all(values)
    assert [e.supersedes for e in events] == [None, "0@0", "0@1"]
    assert consumer.duplicates_dropped == 1


async def test_a_group_commits_past_what_was_read_and_limit_counts_yielded_events() -> None:
    values = [event("e1"), event("e1"), event("e1", supersedes="0@0"), event("e2")]
    events, _, fake = await read_all(values, group="g", limit=2)
    assert [(e.event_id, e.supersedes) for e in events] == [("e1", None), ("e1", "0@0")]
    assert fake.commits and fake.commits[-1][TP] == 3  # the duplicate read is committed too
