"""Worker heartbeats: every few seconds, this worker's state on the compacted
``pixelpipe.workers`` topic (key = worker id), so ``pixelpipe status``, the dashboard and the
alert evaluator see the cluster without contacting any worker.

A heartbeat is telemetry: one lost in a crash is replaced by the next; a worker that stops
sending is shown missing after ``missing_after`` intervals (``streams.cluster_status``). Its
send is awaited with a timeout so a slow broker delays the next beat, never processing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import orjson

from pixelpipe import __version__
from pixelpipe.agents import metrics
from pixelpipe.agents.recent import ACTIVITY
from pixelpipe.config import Settings
from pixelpipe.schemas.names import WORKER_SCHEMA
from pixelpipe.schemas.times import epoch_iso

log = logging.getLogger(__name__)

_RESULTS = ("ok", "failed", "input_error", "deferred")


def worker_id() -> str:
    """``host-pid``: unique among running workers, readable in ``pixelpipe status``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def attempt_counts() -> dict[str, int]:
    """Cumulative attempts of this worker by result, from ``pixelpipe_attempts_total``."""
    counts = dict.fromkeys(_RESULTS, 0)
    for family in metrics.ATTEMPTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                result = sample.labels.get("result", "")
                if result in counts:
                    counts[result] = int(sample.value)
    return counts


class Heartbeat:
    """Builds and sends this worker's heartbeat. Parts are attached after construction."""

    def __init__(self, settings: Settings, topic: Any, *, feed: Any = None, service: Any = None,
                 pool: Any = None, scheduler: Any = None, breakers: Any = None) -> None:
        self.settings = settings
        self.topic = topic
        self.feed, self.service, self.pool = feed, service, pool
        self.scheduler, self.breakers = scheduler, breakers
        self.id = worker_id()
        self.started = time.time()
        self.sent = 0

    def record(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        service = self.service.status() if self.service is not None else {}
        lag_records, lag_seconds = self.feed.lag(now) if self.feed is not None else (0, 0.0)
        refusing = sorted(p for p in (self.breakers.records if self.breakers else ())
                          if self.breakers.is_refusing(p))
        return {
            "schema": WORKER_SCHEMA,
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "app_id": self.settings.app_id,
            "started_at": epoch_iso(self.started, "milliseconds"),
            "at": epoch_iso(now, "milliseconds"),
            "interval_s": self.settings.monitor.heartbeat_s,
            "partitions": self.feed.status()["assigned"] if self.feed is not None else [],
            "level": service.get("level", "full"),
            "forced": bool(service.get("forced", False)),
            "health": float(service.get("health", 1.0)),
            "pressures": dict(service.get("pressures", {})),
            "in_flight": self.feed.ledger.in_flight() if self.feed is not None else 0,
            "lag": {"records": lag_records, "seconds": round(lag_seconds, 3)},
            "pool": {"size": getattr(self.pool, "workers", 0),
                     "restarts": getattr(self.pool, "restarts", 0)},
            "retry_backlog": self.scheduler.waiting if self.scheduler is not None else 0,
            "refusing": refusing,
            "attempts": attempt_counts(),
            "recent": ACTIVITY.summary(60, now),
        }

    def export(self, now: float) -> None:
        """The per-partition lag and per-tier backlog gauges of ``/metrics``."""
        if self.feed is not None:
            metrics.UPLOADS_LAG_RECORDS.clear()
            metrics.UPLOADS_LAG_SECONDS.clear()
            for partition, (records, seconds) in self.feed.lag_by_partition(now).items():
                metrics.UPLOADS_LAG_RECORDS.labels(str(partition)).set(records)
                metrics.UPLOADS_LAG_SECONDS.labels(str(partition)).set(seconds)
        if self.scheduler is not None:
            for tier, waiting in self.scheduler.waiting_by_tier().items():
                metrics.RETRY_BACKLOG.labels(tier).set(waiting)

    async def beat(self) -> None:
        body = self.record()
        self.export(time.time())
        future = await self.topic.send(key=self.id.encode(), value=orjson.dumps(body))
        await asyncio.wait_for(future, timeout=max(5.0, self.settings.monitor.heartbeat_s * 2))
        self.sent += 1
        metrics.HEARTBEATS.inc()

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a missed beat is not fatal; a run of them shows missing
                log.warning("heartbeat not sent: %r", exc, exc_info=True)
            await asyncio.sleep(self.settings.monitor.heartbeat_s)
