"""Publish uploads (sources into the blob store, upload events delivered with acks=all) and
wait for their final outcomes (processed or dead-lettered)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from pixelpipe.config import Settings
from pixelpipe.errors import DeliveryFailed, MalformedEvent, OutcomeTimeout
from pixelpipe.schemas import (
    DeadLetter,
    ProcessedEvent,
    RenditionRequest,
    SourceRef,
    UploadEvent,
    decode_deadletter,
    decode_processed,
    encode,
    utc_now_iso,
)
from pixelpipe.schemas import headers as h
from pixelpipe.schemas.events import Priority
from pixelpipe.storage import StoredInfo, open_store
from pixelpipe.streams import kafka
from pixelpipe.streams.admin import declare_pipeline_topics
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic


@dataclass(frozen=True, slots=True)
class PublishedUpload:
    """What ``publish`` returns: the event as sent, and where it landed."""

    event: UploadEvent
    partition: int
    offset: int

    @property
    def event_id(self) -> str:
        return self.event.event_id


@dataclass(frozen=True, slots=True)
class FinalOutcome:
    """The end of an upload: ``processed`` with its event, or ``dead_letter`` with the letter."""

    status: Literal["processed", "dead_letter"]
    event: ProcessedEvent | DeadLetter

    @property
    def event_id(self) -> str:
        return self.event.event_id


def _renditions(items: Iterable[RenditionRequest | Mapping[str, Any]]) -> tuple[RenditionRequest, ...]:
    out = []
    for item in items:
        if isinstance(item, RenditionRequest):
            out.append(item)
            continue
        operations = item.get("operations")
        out.append(
            RenditionRequest(
                name=str(item["name"]),
                preset=item.get("preset"),
                operations=None if operations is None else tuple(operations),
                optional=tuple(item.get("optional", ())),
                fallback_format=item.get("fallback_format"),
            )
        )
    if not out:
        raise ValueError("at least one rendition is needed")
    return tuple(out)


class Publisher:
    """Stores sources in the blob store and publishes upload events, delivered (acks=all)."""

    def __init__(self, settings: Settings | None = None, *, declare_topics: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        #: the blob store of the settings (a directory or ``s3://bucket/prefix``)
        self.store = open_store(self.settings)
        self._declare = declare_topics
        self._producer: AIOKafkaProducer | None = None
        self._waiter: OutcomeWaiter | None = None

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._declare:
            await declare_pipeline_topics(self.settings)
        self._producer = kafka.producer(self.settings, "publisher")
        await kafka.start(self._producer, self.settings)

    async def stop(self) -> None:
        if self._waiter is not None:
            await self._waiter.stop()
            self._waiter = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def watch_outcomes(self) -> OutcomeWaiter:
        """Start following outcomes *now*, so ``wait_for`` sees events published after this."""
        if self._waiter is None:
            self._waiter = OutcomeWaiter(self.settings)
            await self._waiter.start()
        return self._waiter

    async def publish(
        self,
        source: str | Path | bytes,
        renditions: Iterable[RenditionRequest | Mapping[str, Any]],
        priority: Priority = "normal",
        **options: Any,
    ) -> str:
        """Store a file (a path) or bytes and publish its upload; return the ``event_id``.

        ``options`` go to ``publish_file``/``publish_bytes`` (``image_id``, ``deadline``, ...).
        """
        if isinstance(source, bytes):
            upload = await self.publish_bytes(source, renditions, priority=priority, **options)
        else:
            upload = await self.publish_file(source, renditions, priority=priority, **options)
        return upload.event_id

    async def publish_file(
        self,
        path: str | Path,
        renditions: Iterable[RenditionRequest | Mapping[str, Any]],
        *,
        priority: Priority = "normal",
        image_id: str | None = None,
        deadline: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> PublishedUpload:
        """Store the file's bytes and publish an upload event for them."""
        path = Path(path)
        data = await asyncio.to_thread(path.read_bytes)
        # here, not at the top: the engine (and OpenCV) loads only when a file is published
        from pixelpipe.imaging.formats import content_type_of

        content_type = content_type_of(path.suffix)
        return await self.publish_bytes(
            data, renditions, priority=priority, image_id=image_id or path.stem,
            content_type=content_type, deadline=deadline, attributes=attributes,
        )

    async def publish_bytes(
        self,
        data: bytes,
        renditions: Iterable[RenditionRequest | Mapping[str, Any]],
        *,
        priority: Priority = "normal",
        image_id: str | None = None,
        content_type: str = "application/octet-stream",
        deadline: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> PublishedUpload:
        """Store ``data`` (content-addressed) and publish an upload event for it."""
        blob = await asyncio.to_thread(self.store.put_source, data)
        return await self.publish_stored(
            blob, renditions, priority=priority, image_id=image_id, content_type=content_type,
            deadline=deadline, attributes=attributes)

    async def publish_stored(
        self,
        blob: StoredInfo,
        renditions: Iterable[RenditionRequest | Mapping[str, Any]],
        *,
        priority: Priority = "normal",
        image_id: str | None = None,
        content_type: str = "application/octet-stream",
        deadline: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> PublishedUpload:
        """Publish an upload event for a source already in the store (``blob``: what
        ``store.put_source`` returned, here or in the service that stored it earlier)."""
        event = UploadEvent(
            event_id=str(uuid.uuid4()),
            image_id=image_id or blob.sha256[:16],
            source=SourceRef(
                uri=blob.uri, sha256=blob.sha256, size=blob.size, content_type=content_type
            ),
            renditions=_renditions(renditions),
            submitted_at=utc_now_iso(),
            priority=priority,
            deadline=deadline,
            attributes=dict(attributes or {}),
        )
        return await self.publish_event(event)

    async def publish_event(self, event: UploadEvent) -> PublishedUpload:
        """Publish a ready-made upload event; returns once Kafka acknowledged it."""
        metadata = await self.send_raw(
            uploads_topic(self.settings.topic_prefix), event.image_id.encode(), encode(event),
            h.make_headers(event_id=event.event_id, schema=event.schema),
        )
        return PublishedUpload(event=event, partition=metadata[0], offset=metadata[1])

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[int, int]:
        """Send any bytes to any topic, delivered; returns (partition, offset)."""
        if self._producer is None:
            raise RuntimeError("Publisher is not started")
        try:
            metadata = await self._producer.send_and_wait(
                topic, value=value, key=key, headers=list(headers)
            )
        except KafkaError as exc:
            raise DeliveryFailed(f"Kafka did not acknowledge the event: {exc}") from exc
        return metadata.partition, metadata.offset

    async def wait_for(self, event_id: str, timeout: float | None = None) -> FinalOutcome:
        """The outcome of ``event_id``; call ``watch_outcomes()`` before publishing it."""
        waiter = await self.watch_outcomes()
        return await waiter.wait_for(event_id, timeout)


class OutcomeWaiter:
    """Follows the processed and dead-letter topics from 'now' and resolves waits by event_id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._outcomes: dict[str, FinalOutcome] = {}
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        prefix = self.settings.topic_prefix
        topics = [processed_topic(prefix), dlq_topic(prefix)]
        consumer = kafka.consumer(self.settings, group=None, role="outcome-waiter")
        await kafka.start(consumer, self.settings)
        partitions = []
        for topic in topics:
            partitions += await kafka.existing_partitions(self.settings, topic)
        consumer.assign(partitions)
        # 'now' is the current end: outcomes of events published after this call are after it.
        ends = await consumer.end_offsets(partitions)
        for tp, end in ends.items():
            consumer.seek(tp, end)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        assert self._consumer is not None
        dlq = dlq_topic(self.settings.topic_prefix)
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            for tp, records in batches.items():
                for record in records:
                    try:
                        outcome = (
                            FinalOutcome("dead_letter", decode_deadletter(record.value))
                            if tp.topic == dlq
                            else FinalOutcome("processed", decode_processed(record.value))
                        )
                    except MalformedEvent:
                        continue
                    self._outcomes.setdefault(outcome.event_id, outcome)
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, event_id: str, timeout: float | None = None) -> FinalOutcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._changed:
            while event_id not in self._outcomes:
                if self._task is not None and self._task.done():
                    self._task.result()  # re-raise what stopped the follower
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise OutcomeTimeout(f"no outcome for {event_id} within {timeout} s")
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                    # that lands right after a notify (cpython issue 86296)
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    continue
        return self._outcomes[event_id]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


