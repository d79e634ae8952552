"""The worker's service level: sample health every second, run the ladder, obey overrides.

Signals (``policy.health`` turns them into pressures and health):

- ``cpu``: CPU of the worker and its image processes, as a fraction of the machine's cores;
- ``memory``: their RSS against ``PIXELPIPE_MEMORY_BUDGET_MB`` (else the cgroup limit, else RAM);
- ``lag_records`` / ``lag_seconds``: the uploads this worker owns and has not settled or not
  yet fetched, and the age of the oldest one in flight (``UploadFeed.lag``);
- ``retry_backlog``: records waiting in the retry scheduler;
- ``error_ratio``: processor failures over calls in the last breaker window (input errors
  and deferrals are never reported as calls, so never counted);
- ``pool_queue``: renders waiting for an image process, per process.

The level applied is the operator's override from ``pixelpipe.control`` when one is in force,
else the ladder's (``full`` with the kill switch ``PIXELPIPE_DEGRADE=off``). Every change is
logged once, at warning, with the pressures that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from pixelpipe.agents import metrics
from pixelpipe.agents.recent import ACTIVITY
from pixelpipe.config import Settings
from pixelpipe.policy.degradation import LEVELS, Ladder, Level
from pixelpipe.policy.health import DEFAULT_TRIGGERS, HealthReading, HealthScore, Trigger

log = logging.getLogger(__name__)

#: a renders-waiting-per-process signal needs its own trigger (not in the policy defaults,
#: which name it ``pool_wait_s``): 2 waiting per process starts to press, 8 saturates
POOL_QUEUE = Trigger(2.0, 8.0)
#: fewer calls than this in the window say nothing about an error ratio
MIN_CALLS = 20


def child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s descendants, from Linux's ``/proc/PID/task/TID/children``: a few
    small files. ``psutil.Process.children`` reads ``/proc/*/stat`` of every process on the
    machine instead, on the event loop every second: 1.4 ms typical and 9 ms at worst with
    ~100 processes on a loaded 2-core machine, 20-30 ms in a profiled worker (issue 15), a
    stall every upload in flight waited through. Falls back to psutil where those files are
    missing (not Linux, or a kernel without ``CONFIG_PROC_CHILDREN``)."""
    if not Path(f"/proc/{pid}/task/{pid}/children").exists():
        return _psutil_children(pid)
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:  # it exited meanwhile
            continue
        for tid in tids:
            try:
                kids = [int(p) for p in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()]
            except (OSError, ValueError):  # a thread that ended meanwhile
                continue
            found += kids
            todo += kids
    return found


def _psutil_children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def memory_budget_bytes(configured_mb: int) -> int:
    """The configured budget, else the cgroup (v2, then v1) limit, else physical RAM."""
    if configured_mb > 0:
        return configured_mb * 1024 * 1024
    for path in (Path("/sys/fs/cgroup/memory.max"),
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < psutil.virtual_memory().total:
            return int(text)
    return int(psutil.virtual_memory().total)


class ServiceLevel:
    """Owns the health score and the ladder of one worker; ``current()`` is what it serves."""

    def __init__(self, settings: Settings, *, feed: Any = None, scheduler: Any = None,
                 pool: Any = None, control: Any = None) -> None:
        cfg = settings.degrade
        triggers = {**DEFAULT_TRIGGERS, "pool_queue": POOL_QUEUE}
        triggers.update({name: Trigger(*bounds)
                         for name, bounds in cfg.trigger_overrides().items()})
        self.settings = settings
        self.score = HealthScore(triggers)
        self.ladder = Ladder(cfg, enabled=cfg.enabled, since=time.monotonic())
        self.feed, self.scheduler, self.pool, self.control = feed, scheduler, pool, control
        self.reading = HealthReading(1.0, {})
        self.memory_budget = memory_budget_bytes(cfg.memory_budget_mb)
        self._calls: deque[tuple[float, bool]] = deque()
        self._processes: dict[int, psutil.Process] = {}
        self._applied: Level = "full"

    # ------------------------------------------------------------ what to serve

    def current(self) -> tuple[Level, bool]:
        """The level to serve at now, and whether an operator forced it."""
        override = self.control.override(time.time()) if self.control is not None else None
        if override is not None:
            return override.level, True
        return self.ladder.effective(time.monotonic()), False

    def record_call(self, ok: bool) -> None:
        """A processor call finished (``TelemetryReporter.on_call``)."""
        self._calls.append((time.monotonic(), ok))

    # ------------------------------------------------------------ sampling

    def sample(self) -> dict[str, float]:
        signals: dict[str, float] = {}
        cpu, rss = self._cpu_and_rss()
        signals["cpu"] = cpu
        signals["memory"] = rss / self.memory_budget
        if self.feed is not None:
            records, seconds = self.feed.lag(time.time())
            signals["lag_records"], signals["lag_seconds"] = float(records), seconds
        if self.scheduler is not None:
            signals["retry_backlog"] = float(self.scheduler.waiting)
        signals["error_ratio"] = self._error_ratio()
        if self.pool is not None and self.pool.workers:
            signals["pool_queue"] = max(0, self.pool.pending - self.pool.workers) / self.pool.workers
        return signals

    def _cpu_and_rss(self) -> tuple[float, int]:
        pid = os.getpid()
        seen: dict[int, psutil.Process] = {}
        cpu, rss = 0.0, 0
        for member in [pid, *child_pids(pid)]:
            # keep the Process objects: cpu_percent() measures since the previous call on it
            try:
                known = self._processes.get(member) or psutil.Process(member)
            except psutil.Error:
                continue
            seen[member] = known
            try:
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
            except psutil.Error:
                continue
        self._processes = seen
        return cpu / (100.0 * (psutil.cpu_count() or 1)), rss

    def _error_ratio(self) -> float:
        horizon = time.monotonic() - self.settings.breaker.window_s
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()
        calls = len(self._calls)
        if calls < MIN_CALLS:
            return 0.0
        return sum(1 for _t, ok in self._calls if not ok) / calls

    # ------------------------------------------------------------ the loop

    def evaluate(self) -> HealthReading:
        """One sample and one ladder evaluation; logs and exports what changed."""
        self.reading = self.score.update(self.sample())
        change = self.ladder.evaluate(self.reading.health, time.monotonic())
        level, forced = self.current()
        if change is not None or level != self._applied:
            pressures = ", ".join(f"{k}={v:.2f}" for k, v in sorted(self.reading.pressures.items())
                                  if v > 0.005) or "none"
            why = change.why if change is not None else "operator override" if forced else "auto"
            log.warning("service level %s -> %s (%s); health %.2f, pressures: %s",
                        self._applied, level, why, self.reading.health, pressures)
            self._applied = level
        metrics.HEALTH.set(self.reading.health)
        ACTIVITY.note_health(self.reading.health, level)
        for name, value in self.reading.pressures.items():
            metrics.PRESSURE.labels(name).set(value)
        for name in LEVELS:
            metrics.LEVEL.labels(name).set(1 if name == level else 0)
        return self.reading

    async def run(self) -> None:
        while True:
            try:
                self.evaluate()
            except Exception:  # a sampler bug must not stop the worker; it is loud though
                log.exception("service level evaluation failed")
            await asyncio.sleep(self.settings.degrade.interval_s)

    def status(self) -> dict[str, Any]:
        level, forced = self.current()
        return {
            "level": level,
            "forced": forced,
            "ladder_level": self.ladder.level,
            "enabled": self.ladder.enabled,
            "health": round(self.reading.health, 4),
            "pressures": {k: round(v, 4) for k, v in sorted(self.reading.pressures.items())},
            "worst": self.reading.worst,
        }
