"""Upgrade degraded outputs once the cluster is healthy: the async API behind
``pixelpipe backfill``.

    async with Backfiller(settings) as backfiller:
        plan = await backfiller.plan(since=datetime.now(UTC) - timedelta(hours=24))
        report = await backfiller.run(plan, rate=20)   # BackfillRefused unless healthy

A backfill reads the processed topic from ``since`` and chooses, per ``event_id``, the latest
outcome when it is degraded (``policy.backfill.select``). The processed event does not carry
what was asked, so the original upload is looked up on the uploads topic, read from an hour
before ``since`` (the latest record of the event id wins; one gone from the topic by retention
is reported ``not_found``, not an error for the others). Each is published again on the uploads
topic (``policy.backfill.backfill_message``: same ``event_id`` and ``image_id``, ``priority:
low``, ``supersedes: "<partition>@<offset>"`` of the degraded outcome), delivered with
``acks=all``, at most ``rate`` per second. The worker copies ``supersedes`` into the new
processed event, and ``ProcessedConsumer`` passes it through as a new event.

**Health gate.** ``run`` first reads the cluster's status from the topics
(``ClusterReader.status()``) and refuses (``BackfillRefused``, nothing published) unless every
live worker is at ``full`` and no degradation override is in force: a backfill into a degraded
cluster would only be served degraded again, on top of the load that degraded it. ``force=True``
skips it.

Nothing is recorded besides the uploads: a second run finds the upgraded outcomes (latest per
event id, not degraded) and selects nothing; a run interrupted part-way re-selects only what it
had not published yet, or whose new outcome has not landed yet (a duplicate upload then, which
is harmless: same output keys; a consumer drops the repeated ``(event_id, supersedes)``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable, MalformedEvent, OperationalError
from pixelpipe.policy.backfill import (
    Candidate,
    SeenProcessed,
    Selection,
    backfill_message,
    refusal,
    select,
)
from pixelpipe.policy.degradation import Level
from pixelpipe.schemas import decode_processed, decode_upload, utc_now_iso
from pixelpipe.schemas import headers as h
from pixelpipe.streams import cluster_status, kafka
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.deadletter_reader import DEFAULT_TIMEOUT_S, read_to_end
from pixelpipe.streams.topics import processed_topic, uploads_topic

#: the default window: outcomes of the last day
DEFAULT_SINCE = timedelta(hours=24)
#: the uploads topic is read from this long before ``since``: an upload precedes its outcome
UPLOAD_MARGIN = timedelta(hours=1)
DEFAULT_RATE = 20.0
MAX_BATCH = 100


class BackfillRefused(OperationalError):
    """A backfill the cluster is not healthy enough for (one line: what is not healthy)."""

    code = "backfill_refused"


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One selected outcome and its original upload (None: no longer on the uploads topic)."""

    candidate: Candidate
    original: dict[str, Any] | None

    @property
    def found(self) -> bool:
        return self.original is not None

    def summary(self) -> dict[str, Any]:
        return {**self.candidate.summary(), "upload": "found" if self.found else "not_found"}


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """What a run would publish: ``items`` oldest first (those not found are reported)."""

    since: datetime
    level: Level | None
    items: tuple[PlanItem, ...]
    selection: Selection
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def found(self) -> list[PlanItem]:
        return [item for item in self.items if item.found]

    @property
    def not_found(self) -> list[PlanItem]:
        return [item for item in self.items if not item.found]


@dataclass
class BackfillReport:
    """What a run did. ``rate`` is uploads published per second over the run."""

    planned: int
    topic: str
    run_id: str
    published: int = 0
    #: event ids whose original upload is no longer on the uploads topic
    not_found: list[str] = field(default_factory=list)
    #: event id -> (partition, offset) of the upload published for it
    landed: dict[str, tuple[int, int]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    forced: bool = False

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"planned": self.planned, "published": self.published,
                "not_found": len(self.not_found), "topic": self.topic, "run_id": self.run_id,
                "forced": self.forced, "elapsed_s": round(self.elapsed_s, 3),
                "rate": round(self.rate, 2)}


async def cluster_refusal(settings: Settings, count: int) -> str | None:
    """The refusal of a backfill of ``count`` uploads on the cluster as it is now (read from
    the topics by ``ClusterReader``), or None when every live worker is at ``full`` and no
    override is in force."""
    async with cluster_status.ClusterReader(settings) as reader:
        status = await reader.status()
    return refusal(status, count)


class Backfiller:
    """Plans and runs backfills of degraded outcomes.

    ``settings``: default ``Settings.from_env()``. ``dry_run``: read only, nothing is created
    or written (``run`` refuses). ``timeout_s``: broker wait before ``BrokerUnavailable``.
    """

    def __init__(
        self, settings: Settings | None = None, *, dry_run: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.dry_run = dry_run
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: Publisher | None = None

    async def __aenter__(self) -> Backfiller:
        consumer = kafka.consumer(self.settings, group=None, role="backfill")
        await kafka.start(consumer, self.settings, self.timeout_s)
        self._consumer = consumer
        try:
            if not self.dry_run:
                publisher = Publisher(self.settings, declare_topics=False)
                try:
                    await asyncio.wait_for(publisher.start(), self.timeout_s)
                except TimeoutError as exc:
                    await publisher.stop()
                    raise BrokerUnavailable(
                        f"cannot reach Kafka at {self.settings.bootstrap_servers} (timeout)"
                    ) from exc
                self._publisher = publisher
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("use 'async with Backfiller(...)'")
        return self._consumer

    # ------------------------------------------------------------------ reads

    async def _records(self, topic: str, since: datetime) -> list[Any]:
        partitions = await kafka.topic_partitions(self.settings, topic, timeout_s=self.timeout_s)
        start_ms = max(0, int(since.timestamp() * 1000))
        return [record async for record in read_to_end(
            self.consumer, partitions, start_ms=start_ms, stall_s=self.timeout_s)]

    async def processed_since(self, since: datetime) -> list[SeenProcessed]:
        """Every processed event on the topic from ``since`` (Kafka timestamps), with where it
        was read; records that do not decode are left out."""
        out = []
        for record in await self._records(processed_topic(self.settings.topic_prefix), since):
            try:
                event = decode_processed(record.value)
            except MalformedEvent:
                continue
            out.append(SeenProcessed(event=event, partition=record.partition,
                                     offset=record.offset))
        return out

    async def uploads_of(self, event_ids: Iterable[str], since: datetime) -> dict[str, dict[str, Any]]:
        """The original upload (its JSON object, as on the topic) of each of ``event_ids``
        found on the uploads topic from ``since``; the latest record of an id wins."""
        wanted = set(event_ids)
        found: dict[str, dict[str, Any]] = {}
        if not wanted:
            return found
        for record in await self._records(uploads_topic(self.settings.topic_prefix), since):
            # the header our publishers set spares decoding the uploads of other events
            header = h.header_map(record.headers).get(h.EVENT_ID)
            whole = header is not None and len(header.encode()) < h.MAX_VALUE_BYTES  # not cut
            if whole and header not in wanted:
                continue
            try:
                upload = decode_upload(record.value)  # only a valid upload is asked again
            except MalformedEvent:
                continue
            if upload.event_id in wanted:
                found[upload.event_id] = orjson.loads(record.value)
        return found

    async def plan(
        self, *, since: datetime | None = None, level: Level | None = None,
        limit: int | None = None,
    ) -> BackfillPlan:
        """The degraded outcomes completed since ``since`` (default: the last 24 h) whose worst
        rendition mark is ``level`` or worse (None: any), at most ``limit``, with their
        original uploads."""
        since = since if since is not None else datetime.now(UTC) - DEFAULT_SINCE
        selection = select(await self.processed_since(since), level=level, limit=limit)
        originals = await self.uploads_of((c.event_id for c in selection.candidates),
                                          since - UPLOAD_MARGIN)
        items = tuple(PlanItem(candidate=c, original=originals.get(c.event_id))
                      for c in selection.candidates)
        return BackfillPlan(since=since, level=level, items=items, selection=selection)

    async def refusal(self, plan: BackfillPlan) -> str | None:
        """Why the cluster is not healthy enough for ``plan`` now (None: it is)."""
        return await cluster_refusal(self.settings, len(plan.found))

    # ------------------------------------------------------------------ run

    async def run(
        self, plan: BackfillPlan, *, rate: float | None = DEFAULT_RATE, force: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> BackfillReport:
        """Publish the upload of every found item of ``plan``, at most ``rate`` per second
        (None: as fast as Kafka acknowledges). Refuses (``BackfillRefused``, nothing
        published) when the cluster is not healthy, unless ``force``; a plan with nothing to
        publish is not checked."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        if self._publisher is None:
            raise RuntimeError("use 'async with Backfiller(...)' (and not dry_run) to publish")
        publisher = self._publisher
        topic = uploads_topic(self.settings.topic_prefix)
        report = BackfillReport(planned=len(plan.items), topic=topic, run_id=plan.run_id,
                                not_found=[i.candidate.event_id for i in plan.not_found],
                                forced=force)
        todo = plan.found
        if todo and not force:
            refused = await self.refusal(plan)
            if refused is not None:
                raise BackfillRefused(refused)
        batch_size = MAX_BATCH if rate is None else max(1, min(MAX_BATCH, int(rate / 10)))
        started = time.monotonic()
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            now = utc_now_iso()
            messages = [backfill_message(item.original or {}, item.candidate.supersedes, now)
                        for item in batch]
            landed = await asyncio.gather(*(
                publisher.send_raw(topic, m.key, m.value, m.headers) for m in messages
            ))
            for message, where in zip(messages, landed, strict=True):
                report.landed[message.event_id] = where
            report.published += len(batch)
            if on_progress is not None:
                on_progress(report.published)
            if rate is not None:
                # after the batch: n uploads never take less than n / rate seconds
                pause = started + report.published / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
        report.elapsed_s = time.monotonic() - started
        return report

