"""Read processed-image events: each event once (a superseding event of a backfill too), a
consumer group that commits only what was yielded."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition

from pixelpipe.config import Settings
from pixelpipe.errors import MalformedEvent
from pixelpipe.schemas import (
    ProcessedEvent,
    decode_processed,
)
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import processed_topic


class ProcessedConsumer:
    """Processed-image events as an async iterator; each event is yielded once.

    An event is identified by ``(event_id, supersedes)``: the first record with a key is
    yielded and its repeats (at-least-once redelivery) are dropped, but the outcome of a
    ``pixelpipe backfill`` upload (same ``event_id``, ``supersedes`` naming the event it
    replaces) is a new event and passes through, so a consumer gets the full-quality
    renditions of an event it first got degraded.

    ``group``: a consumer group that commits what was yielded (resume where you left off);
    without one, a group-less reader of every partition. ``from_beginning``: start at the
    earliest offset (else at the end, or at the group's committed offset). ``follow``: keep
    waiting for new events (else stop at the end as of start-up). ``dedupe_window``: how many
    recent event keys are remembered to drop duplicates (at-least-once delivery can repeat one).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        group: str | None = None,
        from_beginning: bool = False,
        follow: bool = False,
        limit: int | None = None,
        dedupe_window: int = 100_000,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.group = group
        self.from_beginning = from_beginning
        self.follow = follow
        self.limit = limit
        self.duplicates_dropped = 0
        self._seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._window = dedupe_window
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> ProcessedConsumer:
        topic = processed_topic(self.settings.topic_prefix)
        consumer = kafka.consumer(
            self.settings, group=self.group, role="processed-consumer",
            auto_offset_reset="earliest" if self.from_beginning else "latest",
        )
        await kafka.start(consumer, self.settings)
        self._consumer = consumer
        if self.group is None:
            tps = await kafka.existing_partitions(self.settings, topic)
            consumer.assign(tps)
            if self.from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
        else:
            consumer.subscribe([topic])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _is_new(self, event: ProcessedEvent) -> bool:
        """First sight of ``(event_id, supersedes)``: a repeat is a duplicate, dropped."""
        key = (event.event_id, event.supersedes)
        if key in self._seen:
            self._seen.move_to_end(key)
            self.duplicates_dropped += 1
            return False
        self._seen[key] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return True

    async def __aiter__(self) -> AsyncIterator[ProcessedEvent]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("use 'async with ProcessedConsumer(...)'")
        yielded = 0
        stop_at: dict[TopicPartition, int] | None = None
        while self.limit is None or yielded < self.limit:
            if stop_at is None and not self.follow:
                while not consumer.assignment():
                    await asyncio.sleep(0.05)
                stop_at = await consumer.end_offsets(list(consumer.assignment()))
            batches = await consumer.getmany(timeout_ms=500, max_records=200)
            # the next offset to read per partition, as far as this iterator has gone: a
            # group commits exactly that, never records fetched but not yet yielded
            consumed: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for record in records:
                    consumed[tp] = record.offset + 1
                    try:
                        event = decode_processed(record.value)
                    except MalformedEvent:
                        continue
                    if not self._is_new(event):
                        continue
                    yield event
                    yielded += 1
                    if self.limit is not None and yielded >= self.limit:
                        break
                if self.limit is not None and yielded >= self.limit:
                    break
            if self.group is not None and consumed:
                await consumer.commit(consumed)
            if stop_at is not None and await _all_at_or_past(consumer, stop_at):
                return


async def _all_at_or_past(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if end > 0 and await consumer.position(tp) < end:
            return False
    return True
