"""Follow a small compacted one-partition topic: read it to its end, then keep up.

The breaker map (``BreakerView``) and the operator's control records (``ControlView``) are
both "the latest record per key, as every worker knows it": a group-less consumer reads the
partition from the beginning (compaction keeps the latest record per key), ``start`` returns
once it has read to the end as of start-up, and a change reaches every worker within
milliseconds: the broker answers a waiting fetch as soon as a record arrives
(``fetch_min_bytes`` 1), so the fetch wait only sets how often an idle follower asks again.
A follower that dies calls ``on_failure`` (the worker passes ``app.crash``: obeying a frozen
map silently would be worse than stopping).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from pixelpipe.config import Settings
from pixelpipe.streams import kafka

log = logging.getLogger(__name__)

#: how long the broker may hold an idle follower's fetch (a new record answers it at once)
FOLLOW_FETCH_WAIT_MS = 1_000


class CompactedFollower:
    """Base of the views: subclasses name the topic and fold each record in ``apply``."""

    #: the consumer's role in its client id, and the view's name in logs
    role = "follower"

    #: the record schema this view accepts (others are counted and skipped)
    schema = ""

    def __init__(
        self, settings: Settings,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        on_undecodable: Callable[[], None] | None = None,
    ) -> None:
        """``on_undecodable``: called for each record skipped as unreadable (a metric)."""
        self.settings = settings
        self.on_failure = on_failure
        self.on_undecodable = on_undecodable
        #: the latest record per key
        self.records: dict[str, dict[str, Any]] = {}
        #: records on the topic that were not ours or not decodable
        self.undecodable = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def topic(self) -> str:
        raise NotImplementedError

    def accepts(self, record: dict[str, Any]) -> bool:
        """Whether a decoded record (of ``schema``) is valid for this view."""
        return True

    def fold(self, record: dict[str, Any]) -> None:
        """Take in one valid record (it usually replaces ``records[its key]``)."""
        raise NotImplementedError

    def apply(self, value: bytes | None, key: bytes | None = None) -> None:
        """Fold one record in. A tombstone (no value) removes its key's row, as compaction
        eventually will; anything else that is not a valid ``schema`` record is counted and
        skipped, so the last good record stays in force."""
        if value is None:
            if key is not None:
                self.records.pop(key.decode(errors="replace"), None)
            return
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            record = None
        if (not isinstance(record, dict) or record.get("schema") != self.schema
                or not self.accepts(record)):
            self.undecodable += 1
            if self.on_undecodable is not None:
                self.on_undecodable()
            log.warning("%s: ignoring a record that is not a valid %s", self.role, self.schema)
            return
        self.fold(record)

    async def start(self) -> None:
        """Read the topic to its end, then follow it in a task. ``TopicMissing`` when no
        worker has declared it yet."""
        tp = (await kafka.existing_partitions(self.settings, self.topic()))[0]  # one partition
        # The wait bounds only an idle fetch (a record ends it at once): at 50 ms the two views
        # made 40 of an idle worker's 50 fetches a second; at 1 s a change still arrives in
        # about a millisecond (measured on the local broker, 30 records: median 1.3 ms)
        consumer = kafka.consumer(self.settings, group=None, role=self.role,
                                  fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS)
        await kafka.start(consumer, self.settings)
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                self._apply_batch(await consumer.getmany(timeout_ms=200))
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer))

    def _apply_batch(self, batches: dict[object, list[object]]) -> None:
        for records in batches.values():
            for record in records:
                self.apply(record.value, record.key)  # type: ignore[attr-defined]

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                self._apply_batch(await consumer.getmany(timeout_ms=500))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.critical("%s: following %s failed; this worker would act on a frozen view: "
                         "%r", self.role, self.topic(), exc, exc_info=True)
            if self.on_failure is None:
                raise
            await self.on_failure(exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
