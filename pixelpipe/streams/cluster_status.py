"""The whole cluster from the topics alone (``pixelpipe status``, the dashboard, the alert
evaluator): no worker is contacted.

- workers: the latest heartbeat per worker on ``<prefix>.workers``; missing once its last beat
  is older than ``missing_after`` intervals; forgotten after ``FORGET_S``;
- lag per uploads partition: the uploads group's committed offset against the end offset,
  and the age of the record at the committed offset (the oldest one not settled);
- retry backlog per tier: the retry group's committed offsets against the tiers' ends;
- dead letters: total on the topic, and the last hour by code;
- breakers not closed, the degradation override and the level of each worker, active alerts
  (latest record per alert id on ``<prefix>.alerts`` is ``firing``).

``ClusterReader`` keeps one admin client and one group-less consumer open, so a caller that
asks every few seconds (dashboard, evaluator) does not reconnect each time.

Its admin requests survive a dead node. aiokafka's admin client sends each request to a
random broker of its cached metadata (``AIOKafkaAdminClient._send_request`` ->
``AIOKafkaClient.get_random_node``), which still lists a killed node until the controller
fences it and the client refreshes; a request to it fails at once (``NodeNotReadyError``) and
is not retried, and the group's coordinator is the dead node itself until its partitions of
``__consumer_offsets`` move. So every admin read here is retried (a failed connection makes
aiokafka refresh its metadata, and the next pick is another node) with a bound on each
request (``request_timeout_s``, connecting included) and on the whole read
(``read_deadline_s``), then raises ``BrokerUnavailable`` naming what failed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable
from pixelpipe.schemas.names import ALERT_SCHEMA, WORKER_SCHEMA
from pixelpipe.schemas.times import epoch_iso, parse_time
from pixelpipe.streams import kafka
from pixelpipe.streams.breaker_client import breaker_status
from pixelpipe.streams.control import degrade_status
from pixelpipe.streams.topics import (
    alerts_topic,
    dlq_topic,
    retry_topic,
    uploads_topic,
    workers_topic,
)

#: a worker missing for longer than this is left out of the status (it was stopped for good)
FORGET_S = 3600.0
#: dead letters read for the "last hour by code" figure, at most
DLQ_SCAN_LIMIT = 50_000
#: one admin request, connecting to its node included
REQUEST_TIMEOUT_S = 5.0
#: one admin read, its retries on other nodes included (a killed coordinator's groups move
#: once it is fenced: ~3-10 s on the three local nodes)
READ_DEADLINE_S = 20.0

T = TypeVar("T")


def retriable(exc: BaseException) -> bool:
    """A failure another attempt (on another node, or once the coordinator moved) may not
    have: a connection, a timeout, an answer without what was asked, or a Kafka error that
    says it is retriable."""
    return isinstance(exc, (OSError, TimeoutError, IncompleteAnswer)) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False)))


class IncompleteAnswer(Exception):
    """An OffsetFetch answer without the partitions asked for: aiokafka's
    ``list_consumer_group_offsets`` ignores the answer's top-level error code (v2+), so a
    coordinator still loading the group's offsets (``COORDINATOR_LOAD_IN_PROGRESS``, right
    after a failover) or no longer the coordinator answers "no offsets" instead of failing.
    Retriable (``retriable``)."""


class ClusterReader:
    def __init__(self, settings: Settings, *, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 read_deadline_s: float = READ_DEADLINE_S) -> None:
        self.settings = settings
        self.request_timeout_s = request_timeout_s
        self.read_deadline_s = read_deadline_s
        #: admin requests that failed and were tried again (on another node)
        self.retries = 0
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> ClusterReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._consumer is not None:
            return
        # every request bounded, connecting included (aiokafka's default is 40 s)
        admin = kafka.admin(self.settings,
                            request_timeout_ms=int(self.request_timeout_s * 1000))
        await kafka.start(admin, self.settings)
        consumer = kafka.consumer(self.settings, group=None, role="status",
                                  fetch_max_wait_ms=100)
        try:
            await kafka.start(consumer, self.settings)
        except BaseException:
            await admin.close()
            raise
        self._admin, self._consumer = admin, consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await kafka.close(self._consumer)
        if self._admin is not None:
            await self._admin.close()
        self._admin = self._consumer = None

    # ------------------------------------------------------------------ reads

    async def _admin_call(self, what: str,
                          call: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
        """``call(admin)``, each attempt bounded by ``request_timeout_s``, tried again after a
        retriable failure until ``read_deadline_s``; then ``BrokerUnavailable``."""
        assert self._admin is not None
        admin = self._admin
        deadline = time.monotonic() + self.read_deadline_s
        pause, attempts = 0.1, 0
        while True:
            attempts += 1
            try:
                return await asyncio.wait_for(call(admin), self.request_timeout_s)
            except Exception as exc:
                if not retriable(exc):
                    raise
                if time.monotonic() + pause >= deadline:
                    raise BrokerUnavailable(
                        f"cannot read {what}: {attempts} attempt(s) in "
                        f"{self.read_deadline_s:g} s failed, the last with {exc!r}") from exc
            # aiokafka refreshes its metadata after a failed connection: the next attempt
            # picks among the nodes it then lists (a dead node leaves once fenced)
            self.retries += 1
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """Partitions of ``topic`` ([] when missing); cached once found."""
        if topic not in self._partitions:
            described = await self._admin_call(
                f"the metadata of {topic}", lambda admin: admin.describe_topics([topic]))
            found = sorted(
                p["partition"] for t in described
                if t.get("topic") == topic and not t.get("error_code")
                for p in t.get("partitions", ()))
            if not found:
                return []
            self._partitions[topic] = [TopicPartition(topic, p) for p in found]
        return self._partitions[topic]

    async def committed(self, group: str,
                        partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The committed offsets of ``group`` on ``partitions`` (those it has committed):
        FindCoordinator on some node, OffsetFetch on the coordinator, both retried while a
        node is down (see the module docstring). The partitions are named, so the answer
        must list each (offset -1: none committed) and an error answer is told from "none"."""
        if not partitions:
            return {}
        wanted = list(partitions)

        async def fetch(admin: AIOKafkaAdminClient) -> dict[TopicPartition, Any]:
            offsets = dict(await admin.list_consumer_group_offsets(group, partitions=wanted))
            if missing := [tp for tp in wanted if tp not in offsets]:
                raise IncompleteAnswer(f"{len(missing)} of {len(wanted)} partitions missing")
            return offsets

        offsets = await self._admin_call(f"the committed offsets of {group}", fetch)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        return dict(await self._consumer.end_offsets(partitions)) if partitions else {}

    async def beginnings(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        return dict(await self._consumer.beginning_offsets(partitions)) if partitions else {}

    async def read(self, starts: dict[TopicPartition, int], *, limit: int = 100_000,
                   first_only: bool = False, timeout_s: float = 10.0) -> list[Any]:
        """Records from ``starts`` up to the end offsets seen now (``first_only``: one per
        partition, the one at its start offset)."""
        assert self._consumer is not None
        ends = await self.ends(list(starts))
        todo = {tp: start for tp, start in starts.items() if ends.get(tp, 0) > start}
        if not todo:
            return []
        async with self._lock:  # one consumer: one read at a time
            consumer = self._consumer
            consumer.assign(list(todo))
            for tp, start in todo.items():
                consumer.seek(tp, start)
            out: list[Any] = []
            deadline = time.monotonic() + timeout_s
            remaining = set(todo)
            while remaining and len(out) < limit and time.monotonic() < deadline:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        if tp not in remaining:
                            break
                        out.append(record)
                        if first_only or record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            # paused, not unassigned: an empty assignment makes aiokafka fetch the metadata
            # of every topic in the cluster (25 ms of a 30 ms evaluation on a busy broker:
            # benchmarks/monitoring), and a paused partition is not fetched in the background
            consumer.pause(*todo)
            return out

    async def latest_by_key(self, topic: str) -> dict[bytes, dict[str, Any]]:
        """The latest JSON record per key of a (compacted) topic; tombstones remove."""
        partitions = await self.partitions(topic)
        out: dict[bytes, dict[str, Any]] = {}
        for record in await self.read(await self.beginnings(partitions)):
            if record.key is None:
                continue
            if record.value is None:
                out.pop(record.key, None)
                continue
            try:
                body = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict):
                out[record.key] = body
        return out

    # ------------------------------------------------------------------ sections

    async def workers(self, now: float) -> list[dict[str, Any]]:
        beats = await self.latest_by_key(workers_topic(self.settings.topic_prefix))
        return workers_section(beats.values(), now, self.settings.monitor.missing_after)

    async def lag(self, now: float, *, ages: bool = True) -> dict[str, Any]:
        group = self.settings.uploads_group
        partitions = await self.partitions(uploads_topic(self.settings.topic_prefix))
        committed = await self.committed(group, partitions)
        ends = await self.ends(partitions)
        starts = await self.beginnings(partitions)
        rows, heads = [], {}
        for tp in partitions:
            done = committed.get(tp)
            position = done if done is not None else starts.get(tp, 0)
            behind = max(0, ends.get(tp, 0) - position)
            rows.append({"partition": tp.partition, "committed": done, "end": ends.get(tp, 0),
                         "records": behind, "seconds": 0.0})
            if behind:
                heads[tp] = position
        if ages and heads:
            for record in await self.read(heads, first_only=True, timeout_s=5.0):
                for row in rows:
                    if row["partition"] == record.partition:
                        row["seconds"] = round(max(0.0, now - record.timestamp / 1000), 3)
        return {"group": group, "total_records": sum(r["records"] for r in rows),
                "max_seconds": max((r["seconds"] for r in rows), default=0.0),
                "partitions": rows}

    async def retry(self) -> dict[str, Any]:
        by_tier = {name: await self.partitions(retry_topic(name, self.settings.topic_prefix))
                   for name, _delay in self.settings.retry_tiers}
        committed = await self.committed(
            self.settings.retry_group, [tp for tps in by_tier.values() for tp in tps])
        tiers = []
        for name, partitions in by_tier.items():
            ends, starts = await self.ends(partitions), await self.beginnings(partitions)
            waiting = sum(max(0, ends.get(tp, 0) - committed.get(tp, starts.get(tp, 0)))
                          for tp in partitions)
            tiers.append({"tier": name, "records": waiting})
        return {"total": sum(t["records"] for t in tiers), "tiers": tiers}

    async def dead_letters_total(self) -> int:
        partitions = await self.partitions(dlq_topic(self.settings.topic_prefix))
        ends, starts = await self.ends(partitions), await self.beginnings(partitions)
        return sum(ends.get(tp, 0) - starts.get(tp, 0) for tp in partitions)

    async def dead_letters_written(self) -> int:
        """Dead letters ever written (end offsets): a counter for rates."""
        partitions = await self.partitions(dlq_topic(self.settings.topic_prefix))
        return sum((await self.ends(partitions)).values())

    async def dlq(self, now: float) -> dict[str, Any]:
        assert self._consumer is not None
        partitions = await self.partitions(dlq_topic(self.settings.topic_prefix))
        total = await self.dead_letters_total()
        found = await self._consumer.offsets_for_times(
            {tp: int((now - 3600) * 1000) for tp in partitions}) if partitions else {}
        starts = {tp: meta.offset for tp, meta in found.items() if meta is not None}
        codes: Counter[str] = Counter()
        for record in await self.read(starts, limit=DLQ_SCAN_LIMIT):
            try:
                body = orjson.loads(record.value)
                codes[str(body.get("error", {}).get("code", "unknown"))] += 1
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                codes["undecodable"] += 1
        return {"total": total, "last_hour": sum(codes.values()), "by_code": dict(codes)}

    async def alerts(self) -> list[dict[str, Any]]:
        latest = await self.latest_by_key(alerts_topic(self.settings.topic_prefix))
        return active_alerts(latest.values())

    async def status(self, now: float | None = None) -> dict[str, Any]:
        """The object ``pixelpipe status --json`` prints."""
        now = time.time() if now is None else now
        workers = await self.workers(now)
        degrade = await degrade_status(self.settings)
        breakers = [row for row in await breaker_status(self.settings)
                    if row["state"] != "closed"]
        levels = Counter(w["level"] for w in workers if not w["missing"])
        return {
            "at": epoch_iso(now, "milliseconds"),
            "workers": workers,
            "lag": await self.lag(now),
            "retry": await self.retry(),
            "dlq": await self.dlq(now),
            "breakers": breakers,
            "level": {
                "override": None if degrade["level"] == "auto" else {
                    "level": degrade["level"], "until": degrade["until"],
                    "reason": degrade["reason"], "by": degrade["by"]},
                "workers": dict(levels),
            },
            "alerts": await self.alerts(),
        }


def workers_section(beats: Any, now: float, missing_after: int) -> list[dict[str, Any]]:
    """Heartbeats -> the ``workers`` rows: ``age_s``, ``missing``; long-gone ones left out."""
    rows = []
    for beat in beats:
        if beat.get("schema") != WORKER_SCHEMA:
            continue
        try:
            seen = parse_time(str(beat["at"])).timestamp()
        except (KeyError, ValueError):
            continue
        age = max(0.0, now - seen)
        interval = float(beat.get("interval_s") or 5.0)
        if age > FORGET_S:
            continue
        rows.append({**beat, "seen_at": beat["at"], "age_s": round(age, 1),
                     "missing": age > missing_after * interval})
    return sorted(rows, key=lambda r: (r["missing"], str(r.get("id"))))


def active_alerts(latest: Any) -> list[dict[str, Any]]:
    """The alerts whose latest record is ``firing``, critical first."""
    firing = [a for a in latest if a.get("schema") == ALERT_SCHEMA and a.get("state") == "firing"]
    return sorted(firing, key=lambda a: (a.get("severity") != "critical", str(a.get("id"))))


async def cluster_status(settings: Settings) -> dict[str, Any]:
    """One ``status`` with a reader of its own (the CLI's one-shot)."""
    async with ClusterReader(settings) as reader:
        return await reader.status()
