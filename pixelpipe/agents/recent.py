"""What this worker did in the last minutes, per second: the dashboard's charts and the
heartbeat's throughput and latency (Prometheus keeps the long history; this is the live view).

One module-level ``ACTIVITY`` like ``metrics.REGISTRY``: the delivery path records each
processed upload's processing time, readers take ``series()`` (one point per second, oldest
first) or ``summary()``. Bounded: ``window_s`` seconds of buckets.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Bucket:
    second: int
    completed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    health: float | None = None
    level: str | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class RecentActivity:
    def __init__(self, window_s: int = 600) -> None:
        self.window_s = window_s
        self._buckets: deque[_Bucket] = deque()

    def _bucket(self, now: float | None) -> _Bucket:
        second = int(time.time() if now is None else now)
        if not self._buckets or self._buckets[-1].second != second:
            self._buckets.append(_Bucket(second))
            while self._buckets and self._buckets[0].second <= second - self.window_s:
                self._buckets.popleft()
        return self._buckets[-1]

    def note_health(self, health: float, level: str, now: float | None = None) -> None:
        """The worker's health and level at this second (the service-level loop calls it)."""
        bucket = self._bucket(now)
        bucket.health, bucket.level = health, level

    def record(self, latency_ms: float, now: float | None = None) -> None:
        bucket = self._bucket(now)
        bucket.completed += 1
        if len(bucket.latencies_ms) < 1000:  # a bound per second, plenty for percentiles
            bucket.latencies_ms.append(latency_ms)

    def series(self, now: float | None = None, *, step_s: int = 5,
               extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One point per ``step_s`` over the window, oldest first: ``t`` (epoch seconds at the
        step's end), ``completed_per_s``, ``p50_ms``, ``p99_ms`` (None with nothing done)."""
        end = int(time.time() if now is None else now)
        start = end - self.window_s
        steps: dict[int, list[_Bucket]] = {}
        for bucket in self._buckets:
            if bucket.second > start:
                steps.setdefault((bucket.second - start - 1) // step_s, []).append(bucket)
        points = []
        for index in range(self.window_s // step_s):
            buckets = steps.get(index, [])
            latencies = [ms for b in buckets for ms in b.latencies_ms]
            noted = [b for b in buckets if b.health is not None]
            points.append({
                "health": noted[-1].health if noted else None,
                "level": noted[-1].level if noted else None,
                "t": start + (index + 1) * step_s,
                "completed_per_s": sum(b.completed for b in buckets) / step_s,
                "p50_ms": _percentile(latencies, 0.5),
                "p99_ms": _percentile(latencies, 0.99),
                **(extra or {}),
            })
        return points

    def summary(self, seconds: int = 60, now: float | None = None) -> dict[str, Any]:
        """Completed per second and p50/p99 over the last ``seconds``."""
        end = int(time.time() if now is None else now)
        buckets = [b for b in self._buckets if b.second > end - seconds]
        latencies = [ms for b in buckets for ms in b.latencies_ms]
        return {
            "completed_per_s": round(sum(b.completed for b in buckets) / seconds, 3),
            "p50_ms": _percentile(latencies, 0.5),
            "p99_ms": _percentile(latencies, 0.99),
        }


ACTIVITY = RecentActivity()
