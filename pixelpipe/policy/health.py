"""Signals -> pressures -> health (ARCHITECTURE.md section 8; issue 10). Pure, clock-free.

Each signal a worker samples (CPU, memory, uploads lag in records and in seconds, retry
backlog, processor error ratio, pool queue wait) becomes a *pressure* in [0, 1] by a scaled
trigger, as Envoy's overload manager does: 0 below ``start``, 1 at or above ``saturate``,
linear between. Pressures are smoothed (EWMA), and **health = 1 - max(pressures)**: the worst
resource decides, so one saturated resource is never averaged away by idle ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Trigger:
    """``(value - start) / (saturate - start)``, clipped to [0, 1]."""

    start: float
    saturate: float

    def __post_init__(self) -> None:
        if not self.saturate > self.start:
            raise ValueError(f"saturate ({self.saturate}) must be above start ({self.start})")

    def pressure(self, value: float) -> float:
        return min(1.0, max(0.0, (value - self.start) / (self.saturate - self.start)))


#: signal name -> its trigger. Units: ``cpu`` and ``memory`` are fractions of what the worker
#: has (cores, memory budget); ``lag_records`` records and ``lag_seconds`` the age of the
#: oldest unread upload, over the partitions this worker owns; ``retry_backlog`` records
#: waiting in the scheduler; ``error_ratio`` processor failures over calls in the breaker
#: window (input errors excluded); ``pool_wait_s`` a render's wait for a free image process.
DEFAULT_TRIGGERS: Mapping[str, Trigger] = {
    "cpu": Trigger(0.90, 1.00),
    "memory": Trigger(0.75, 0.95),
    "lag_records": Trigger(500, 10_000),
    "lag_seconds": Trigger(30, 600),
    "retry_backlog": Trigger(1_000, 10_000),
    "error_ratio": Trigger(0.10, 0.50),
    "pool_wait_s": Trigger(2.0, 30.0),
}


@dataclass(frozen=True, slots=True)
class HealthReading:
    health: float
    #: smoothed pressure per signal
    pressures: Mapping[str, float]

    @property
    def worst(self) -> str | None:
        """The signal with the highest pressure (None when nothing presses)."""
        name, value = max(self.pressures.items(), key=lambda kv: kv[1], default=(None, 0.0))
        return name if value > 0 else None


@dataclass(slots=True)
class HealthScore:
    """Turns samples into a smoothed health. ``alpha``: weight of the newest sample (EWMA)."""

    triggers: Mapping[str, Trigger] = field(default_factory=lambda: dict(DEFAULT_TRIGGERS))
    alpha: float = 0.3
    _smoothed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")

    def update(self, signals: Mapping[str, float]) -> HealthReading:
        """Fold one sample in. Signals without a trigger are ignored; a signal missing from
        this sample keeps its last smoothed pressure (a sampler that failed once is no news)."""
        for name, value in signals.items():
            trigger = self.triggers.get(name)
            if trigger is None:
                continue
            raw = trigger.pressure(value)
            previous = self._smoothed.get(name)
            self._smoothed[name] = raw if previous is None else (
                self.alpha * raw + (1 - self.alpha) * previous)
        pressures = dict(self._smoothed)
        return HealthReading(health=1.0 - max(pressures.values(), default=0.0),
                             pressures=pressures)
