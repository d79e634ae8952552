"""Read the dead-letter topic and the replay ledger: the async API behind ``dlq list/show/stats``.

    async with DeadLetterReader(settings) as reader:
        letters = await reader.letters(LetterFilter(codes=("source_missing",)))
        summary = await reader.stats()

A reader is group-less (it commits nothing and disturbs no one) and reads both topics from the
beginning to their end *as of the call*: letters that arrive meanwhile are for the next call.
The dead-letter topic is never deleted by time and the ledger is compacted, so both are read
whole; a letter is one object per ``(event_id, replays)`` (see ``streams.deadletters``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable, DeadLetterNotFound, MalformedEvent
from pixelpipe.policy.deadletters import (
    REPLAYS_HEADER,
    LetterFilter,
    ReplayRecord,
    StoredLetter,
    collapse,
    stats_of,
)
from pixelpipe.schemas import DeadLetter, decode_deadletter
from pixelpipe.schemas import headers as h
from pixelpipe.schemas.replay import decode_replay_record
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import dlq_replays_topic, dlq_topic

#: the CLI's default: long enough for a loaded broker, short enough that a dead one is obvious
DEFAULT_TIMEOUT_S = 10.0


async def connect_consumer(settings: Settings, timeout_s: float = DEFAULT_TIMEOUT_S) -> AIOKafkaConsumer:
    """A started group-less consumer, or ``BrokerUnavailable`` within ``timeout_s``."""
    consumer = kafka.consumer(settings, group=None, role="dlq-reader")
    await kafka.start(consumer, settings, timeout_s)
    return consumer


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    *,
    start_ms: int | None = None,
    stall_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[Any]:
    """Every record of ``partitions`` from the beginning (or from ``start_ms``, a Kafka
    timestamp) up to their end offsets as of the call, in offset order per partition.

    Raises ``BrokerUnavailable`` when no record arrives for ``stall_s`` while some are due.
    """
    tps = list(partitions)
    if not tps:
        return
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    if start_ms is None:
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
    else:
        found = await consumer.offsets_for_times({tp: start_ms for tp in tps})
        starts = {}
        for tp in tps:
            at = found.get(tp)
            starts[tp] = ends[tp] if at is None else at.offset
            consumer.seek(tp, starts[tp])
    remaining = {tp: ends[tp] for tp in tps if starts[tp] < ends[tp]}
    last_progress = time.monotonic()
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=2000)
        for tp, records in batches.items():
            for record in records:
                if record.offset < remaining.get(tp, 0):
                    yield record
        if batches:
            last_progress = time.monotonic()
        for tp in list(remaining):
            if await consumer.position(tp) >= remaining[tp]:
                del remaining[tp]
        if remaining and time.monotonic() - last_progress > stall_s:
            raise BrokerUnavailable(
                f"reading {', '.join(sorted({tp.topic for tp in remaining}))} stalled for "
                f"{stall_s:.0f} s"
            )


class DeadLetterReader:
    """Dead letters with their replay state, filtered; ``stats``; one event's letters.

    ``settings``: broker and topic prefix (default ``Settings.from_env()``, ``PIXELPIPE_KAFKA``
    and ``PIXELPIPE_TOPIC_PREFIX``). ``timeout_s``: how long to wait for the broker before
    ``BrokerUnavailable`` (default 10 s).
    """

    def __init__(self, settings: Settings | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.settings = settings or Settings.from_env()
        self.timeout_s = timeout_s
        #: records of the dead-letter topic that are not ``pixelpipe.deadletter/1`` (last read)
        self.undecodable = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> DeadLetterReader:
        self._consumer = await connect_consumer(self.settings, self.timeout_s)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("use 'async with DeadLetterReader(...)'")
        return self._consumer

    async def ledger(self) -> dict[str, ReplayRecord]:
        """The replay ledger: the latest record of each letter key."""
        topic = dlq_replays_topic(self.settings.topic_prefix)
        partitions = await kafka.topic_partitions(self.settings, topic, timeout_s=self.timeout_s)
        out: dict[str, ReplayRecord] = {}
        async for record in read_to_end(self.consumer, partitions, stall_s=self.timeout_s):
            entry = decode_replay_record(record.value, record.timestamp)
            if entry is not None:
                out[entry.key] = entry
            elif record.value is None and record.key is not None:
                out.pop(record.key.decode(errors="replace"), None)  # a tombstone
        return out

    async def all_letters(self) -> list[StoredLetter]:
        """Every letter of the topic, one per ``(event_id, replays)``, in topic order."""
        topic = dlq_topic(self.settings.topic_prefix)
        ledger = await self.ledger()
        partitions = await kafka.topic_partitions(self.settings, topic, timeout_s=self.timeout_s)
        decoded: list[tuple[DeadLetter, int, int]] = []
        undecodable = 0
        async for record in read_to_end(self.consumer, partitions, stall_s=self.timeout_s):
            try:
                decoded.append((decode_deadletter(record.value), record.partition, record.offset))
            except MalformedEvent:
                undecodable += 1
        self.undecodable = undecodable
        return collapse(decoded, ledger)

    async def letters(
        self, where: LetterFilter | None = None, limit: int | None = None
    ) -> list[StoredLetter]:
        """The letters matching ``where`` (all by default), oldest first, at most ``limit``."""
        return (where or LetterFilter()).apply(await self.all_letters(), limit)

    async def stats(self, where: LetterFilter | None = None) -> dict[str, Any]:
        """Counts by code, cause, processor and replay status; oldest and newest letter."""
        return stats_of(await self.letters(where), undecodable=self.undecodable)

    async def show(self, event_id: str) -> list[StoredLetter]:
        """Every letter of ``event_id`` (one per generation); ``DeadLetterNotFound`` if none."""
        found = await self.letters(LetterFilter(event_ids=(event_id,)))
        if not found:
            raise DeadLetterNotFound(f"no dead letter with event id {event_id}")
        return found

    async def find_replayed(
        self, topic: str, since_ms: int, wanted: set[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """Which of ``wanted`` (event id, replays) were already published to ``topic`` at or
        after ``since_ms``: ``{(event_id, replays): (partition, offset)}``. Reads headers only.
        """
        if not wanted:
            return {}
        partitions = await kafka.topic_partitions(self.settings, topic, timeout_s=self.timeout_s)
        found: dict[tuple[str, int], tuple[int, int]] = {}
        async for record in read_to_end(self.consumer, partitions, start_ms=since_ms,
                                        stall_s=self.timeout_s):
            headers = h.header_map(record.headers)
            try:
                ident = (headers.get(h.EVENT_ID, ""), int(headers.get(REPLAYS_HEADER, "-1")))
            except ValueError:
                continue
            if ident in wanted and ident not in found:
                found[ident] = (record.partition, record.offset)
        return found
