"""The retry tiers: wait until an event is due, never earlier, without blocking anything else.

Why not a faust agent per tier (the first design on the map): faust feeds every stream from
one fetcher, and a stream whose buffer is full stops that fetcher for *all* topics, so 1,000
not-yet-due retries would starve the uploads topic and end in a max-poll-interval leave; its
``pause_partitions`` is reset on every rebalance; and a sleeping agent holds up shutdown and
rebalances for as long as it sleeps (FAUST-NOTES.md). So each worker runs one
``RetryScheduler`` task: a plain aiokafka consumer (group ``<app id>.retry``) over every tier
topic, inside the faust worker's lifecycle.

- Records of a partition are kept in arrival order; the head is dispatched when its
  ``due_at`` has come. A tier has one delay, so a partition is (nearly) in due order; jitter can
  put a later-due head in front, which makes the next one late, never early.
- The fetch timeout is the time to the next due head (at most 200 ms), so an idle scheduler
  wakes on time: lateness is the wake-up jitter plus the processing hand-off.
- A partition holding more than ``HIGH_WATER`` waiting records is paused at the consumer (it
  keeps heartbeating and polling the others), and resumed below ``LOW_WATER``.
- Offsets are committed in order per partition, after the attempt's outcome (processed, next
  tier or dead letter) is acknowledged by Kafka. On shutdown or revoke the waiting records are
  simply not committed: the next owner reads them again, with their due times intact, so no
  shutdown waits out a 10-minute delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from pixelpipe.agents import metrics
from pixelpipe.agents.app import start_with_app
from pixelpipe.agents.delivery import AttemptRouter
from pixelpipe.agents.upload_processor import Failed, UploadProcessor
from pixelpipe.config import Settings
from pixelpipe.errors import MalformedEvent
from pixelpipe.policy.ordering import InOrderAcks
from pixelpipe.schemas import Origin, RetryEnvelope, decode_retry, original_of, parse_time
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import retry_topic

log = logging.getLogger(__name__)

HIGH_WATER = 2000
LOW_WATER = 500
MAX_WAIT_S = 0.2


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scheduler: RetryScheduler) -> None:
        self.scheduler = scheduler

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.scheduler.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("retry scheduler assigned %d tier partitions", len(assigned))


class RetryScheduler:
    """Consumes the retry tiers and re-runs each event when it is due."""

    def __init__(
        self, app: faust.App, settings: Settings, processor: UploadProcessor,
        router: AttemptRouter,
    ) -> None:
        self.app = app
        self.settings = settings
        self.processor = processor
        self.router = router
        self.topics = [retry_topic(name, settings.topic_prefix) for name, _ in settings.retry_tiers]
        self._waiting: dict[TopicPartition, deque[tuple[Any, RetryEnvelope | None, float]]] = {}
        self._acks: InOrderAcks[Any] = InOrderAcks()
        self._paused: set[TopicPartition] = set()
        self._inflight = 0
        self._running: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        #: lateness of each dispatch (seconds after due), kept for /status and benchmarks
        self.lateness: deque[float] = deque(maxlen=10_000)

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._waiting.pop(tp, None)
            self._paused.discard(tp)
        self._acks.forget(set(partitions))

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def waiting_by_tier(self) -> dict[str, int]:
        """Records held and not yet due, per tier name (every tier listed)."""
        by_topic = {retry_topic(name, self.settings.topic_prefix): name
                    for name, _ in self.settings.retry_tiers}
        out = dict.fromkeys(by_topic.values(), 0)
        for tp, queue in self._waiting.items():
            if tp.topic in by_topic:
                out[by_topic[tp.topic]] += len(queue)
        return out

    async def run(self) -> None:
        if not self.topics:
            return
        await self.processor.start()
        consumer = kafka.consumer(
            self.settings, group=self.settings.retry_group, role="retry",
            max_poll_records=500,
            # heartbeats run on this loop, which the pool keeps free (p99 < 20 ms measured);
            # a short session lets a restarted worker take over a killed one's tiers quickly
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe(self.topics, listener=_Listener(self))
        try:
            while True:
                await self._step(consumer)
        finally:
            if self._running:
                await asyncio.wait(self._running, timeout=30)
            await consumer.stop()

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        wait_s = self._dispatch_due()
        metrics.RETRY_WAITING.set(self.waiting)
        batches = await consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=1000)
        for tp, records in batches.items():
            queue = self._waiting.setdefault(tp, deque())
            for record in records:
                envelope, due = _due_of(record)
                queue.append((record, envelope, due))
                self._acks.track(tp, record)
            if len(queue) >= HIGH_WATER and tp not in self._paused:
                consumer.pause(tp)
                self._paused.add(tp)
        self._dispatch_due()

    def _dispatch_due(self) -> float:
        """Start every due head; return how long until the next head is due (capped)."""
        now = time.time()
        next_in = MAX_WAIT_S
        for tp, queue in list(self._waiting.items()):
            while queue:
                record, envelope, due = queue[0]
                if due > now:
                    next_in = min(next_in, due - now)
                    break
                if self._inflight >= self.settings.max_inflight:
                    return 0.01  # busy: look again soon
                queue.popleft()
                self._inflight += 1
                self.lateness.append(now - due)
                metrics.RETRY_LATENESS_SECONDS.observe(max(0.0, now - due))
                log.info(
                    "retry due: %s from %s[%d]@%d started %.1f ms after its due time",
                    envelope.event_id if envelope else "?", record.topic, record.partition,
                    record.offset, (now - due) * 1000,
                )
                task = asyncio.create_task(self._attempt(tp, record, envelope))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if tp in self._paused and len(queue) <= LOW_WATER and self._consumer is not None:
                self._consumer.resume(tp)
                self._paused.discard(tp)
        return max(0.0, next_in)

    async def _attempt(self, tp: TopicPartition, record: Any, envelope: RetryEnvelope | None) -> None:
        origin = Origin(topic=record.topic, partition=record.partition, offset=record.offset)
        try:
            if envelope is None:
                # Not ours or corrupt: a dead letter keeps it for an operator.
                error = MalformedEvent("undecodable retry record", processor="retry")
                outcome: Any = Failed(error, None, original_of(record.value),
                                      origin.malformed_event_id)
                await self.router.deliver(outcome, origin, tier="retry", history=None)
            else:
                outcome = await self.processor.process(
                    orjson.dumps(envelope.original), origin,
                    attempts=len(envelope.attempts) + 1, deferrals=envelope.deferrals,
                )
                await self.router.deliver(outcome, origin, tier=envelope.tier, history=envelope)
        except Exception as exc:
            log.critical("cannot deliver the outcome of retry %s[%d]@%d; stopping: %r",
                         record.topic, record.partition, record.offset, exc, exc_info=True)
            self._inflight -= 1
            await self.app.crash(exc)
            return
        self._inflight -= 1
        await self._commit_ready(tp, record)

    async def _commit_ready(self, tp: TopicPartition, record: Any) -> None:
        ready = self._acks.complete(tp, record)
        if ready is None:
            return  # the partition was revoked meanwhile: the new owner redoes it (idempotent)
        if not ready or self._consumer is None:
            return
        try:
            await self._consumer.commit({tp: ready[-1].offset + 1})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition: its new owner redoes these (idempotent outputs).
            log.warning("retry commit of %s failed (%r); records will be redelivered", tp, exc)


def _due_of(record: Any) -> tuple[RetryEnvelope | None, float]:
    try:
        envelope = decode_retry(record.value)
        return envelope, parse_time(envelope.due_at).timestamp()
    except (MalformedEvent, ValueError):
        return None, 0.0


def register_retry_scheduler(
    app: faust.App, settings: Settings, processor: UploadProcessor, router: AttemptRouter
) -> RetryScheduler:
    scheduler = RetryScheduler(app, settings, processor, router)

    # Not an @app.task, for the uploads feed's reason (``app.start_with_app``): the tiers have
    # their own group and need nothing faust recovers, so a replacement worker resumes them as
    # soon as that group lets it, not after faust's own group has rebalanced.
    async def retry_tiers() -> None:
        await scheduler.run()

    start_with_app(app, retry_tiers)
    return scheduler
