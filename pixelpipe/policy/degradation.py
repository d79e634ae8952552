"""The degradation ladder: five service levels chosen from health, with hysteresis (issue 10).

Levels (contract names, best first): ``full``, ``reduced_quality`` (health < 0.8), ``basic``
(< 0.6), ``cached_only`` (< 0.4), ``emergency`` (< 0.2).

- **Escalate fast**: after ``escalate_after`` consecutive evaluations whose health points to a
  worse level, go straight to that level (a step drop to 0.1 reaches ``emergency`` at once).
  Overload hurts now; waiting makes it worse.
- **Recover slowly**: one level at a time, only once health has stayed at least
  ``recover_margin`` above the current level's entry for ``recover_after_s``, and the level
  has lasted ``min_dwell_s``. Like Kubernetes' scale-down stabilisation window, this keeps a
  health that hovers around a threshold from flapping the level.
- **Operator override** (``pixelpipe degrade set``) wins until it expires; the kill switch
  (``enabled=False``, ``PIXELPIPE_DEGRADE=off``) pins ``full``.
- **Criticality** (Google SRE, "Handling Overload"): ``high`` priority is served one level
  better (never worse than ``basic`` unless ``emergency`` is forced by an operator); ``low``
  priority is deferred from ``basic`` on.

Pure and clock-free: callers pass ``now`` (seconds), so the rules are unit-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal

from pixelpipe.config import DegradeConfig
from pixelpipe.policy.gate import MakeOperation, Op, encoder_of
from pixelpipe.schemas import RenditionRequest

Level = Literal["full", "reduced_quality", "basic", "cached_only", "emergency"]
LEVELS: tuple[Level, ...] = ("full", "reduced_quality", "basic", "cached_only", "emergency")
#: health below this enters the level
ENTRY: dict[Level, float] = {
    "full": 1.01, "reduced_quality": 0.8, "basic": 0.6, "cached_only": 0.4, "emergency": 0.2,
}
DEFER = "defer"


def rank(level: Level) -> int:
    return LEVELS.index(level)


def level_for(health: float) -> Level:
    """The level health points to, with no hysteresis."""
    chosen: Level = "full"
    for level in LEVELS[1:]:
        if health < ENTRY[level]:
            chosen = level
    return chosen


#: the ladder's settings are ``config.DegradeConfig`` (escalate_after, recover_margin,
#: recover_after_s, min_dwell_s): one place for their defaults
LadderConfig = DegradeConfig


@dataclass(frozen=True, slots=True)
class Override:
    level: Level
    until: float | None  # None: until cleared
    reason: str = ""

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class Change:
    """A level change, to log once with what caused it."""

    old: Level
    new: Level
    health: float
    why: str


@dataclass(slots=True)
class Ladder:
    config: LadderConfig = field(default_factory=LadderConfig)
    enabled: bool = True
    level: Level = "full"
    since: float = 0.0
    override: Override | None = None
    _worse_count: int = 0
    _stable_since: float | None = None

    def evaluate(self, health: float, now: float) -> Change | None:
        """One evaluation (the worker runs one a second); the change it made, if any."""
        if not self.enabled:
            return None
        target = level_for(health)
        if rank(target) > rank(self.level):
            self._worse_count += 1
            self._stable_since = None
            if self._worse_count >= self.config.escalate_after:
                return self._move(target, health, now,
                                  f"health {health:.2f} below {ENTRY[target]:.1f}, "
                                  f"{self._worse_count} evaluations in a row")
            return None
        self._worse_count = 0
        if self.level == "full":
            return None
        if health < ENTRY[self.level] + self.config.recover_margin:
            self._stable_since = None
            return None
        if self._stable_since is None:
            self._stable_since = now
        stable_for = now - self._stable_since
        if stable_for >= self.config.recover_after_s and now - self.since >= self.config.min_dwell_s:
            better = LEVELS[rank(self.level) - 1]
            return self._move(better, health, now,
                              f"health {health:.2f} stayed at least "
                              f"{ENTRY[self.level] + self.config.recover_margin:.1f} for "
                              f"{stable_for:.0f} s")
        return None

    def effective(self, now: float) -> Level:
        """The level workers apply now: an active override, else the ladder's (``full`` when
        the kill switch is on and no override is set)."""
        if self.override is not None:
            if self.override.active(now):
                return self.override.level
            self.override = None
        return self.level if self.enabled else "full"

    def set_override(self, level: Level, now: float, for_s: float | None,
                     reason: str = "") -> None:
        self.override = Override(level, None if for_s is None else now + for_s, reason)

    def clear_override(self) -> None:
        self.override = None

    def _move(self, level: Level, health: float, now: float, why: str) -> Change:
        change = Change(self.level, level, health, why)
        self.level, self.since = level, now
        self._worse_count, self._stable_since = 0, None
        return change


def worse_of(a: str | None, b: str | None) -> str | None:
    """The worse of two ``degraded`` marks (None: full quality)."""
    def order(mark: str | None) -> int:
        return LEVELS.index(mark) if mark in LEVELS else 0
    return a if order(a) >= order(b) and a is not None else b


def for_priority(level: Level, priority: str, *, forced: bool = False) -> Level | str:
    """The level one upload of ``priority`` is served at, or ``DEFER`` (retry tiers, no
    attempt spent). ``forced``: the level comes from an operator override."""
    if priority == "high":
        if level == "emergency" and forced:
            return level
        better = LEVELS[max(0, rank(level) - 1)]
        return better if rank(better) <= rank("basic") else "basic"
    if priority == "low" and rank(level) >= rank("basic"):
        return DEFER
    return level


# --------------------------------------------------------------------------- what a level does

#: ``reduced_quality`` caps: JPEG/WebP/AVIF quality, AVIF speed (faster), PNG and WebP effort
#: (lower). WebP effort 2 encodes an 800 px photo in 15 ms instead of 34 ms (libwebp method 4)
#: for about 3 % more bytes and 0.3 dB PSNR (benchmarks/engine/RESULTS.md)
QUALITY_CAP = DegradeConfig().quality_cap
AVIF_SPEED = 10
PNG_COMPRESSION_CAP = 3
WEBP_EFFORT_CAP = 2

Action = Literal["render", "cached_or_defer", "original"]


@dataclass(frozen=True, slots=True)
class LevelPlan(Generic[Op]):
    """How one rendition is served at a level: render ``operations`` (marked ``degraded``),
    serve a cached output or defer (``cached_only``), or publish the original (``emergency``)."""

    action: Action
    operations: tuple[Op, ...]
    degraded: Level | None = None
    skipped: tuple[str, ...] = ()


def plan_for_level(
    level: Level, rendition: RenditionRequest, operations: Sequence[Op],
    make_operation: MakeOperation[Op], *, quality_cap: int = QUALITY_CAP,
) -> LevelPlan[Op]:
    """The rendition's plan at ``level`` (``full``: unchanged). Pure; the caller renders."""
    ops = tuple(operations)
    if level == "full":
        return LevelPlan("render", ops)
    if level == "cached_only":
        return LevelPlan("cached_or_defer", ops, degraded=level)
    if level == "emergency":
        return LevelPlan("original", (), degraded=level)
    ops = tuple(_reduce_quality(op, make_operation, quality_cap) if op.name == "format" else op
                for op in ops)
    skipped: tuple[str, ...] = ()
    if level == "basic":
        skipped = tuple(op.name for op in ops if op.name in rendition.optional)
        ops = tuple(op for op in ops if op.name not in rendition.optional)
        fallback = rendition.fallback_format
        if encoder_of(ops) == "avif" and fallback and fallback != "avif":
            ops = tuple(_reduce_quality(make_operation({"op": "format", "type": fallback}),
                                        make_operation, quality_cap)
                        if op.name == "format" else op for op in ops)
            skipped += ("avif",)
    return LevelPlan("render", ops, degraded=level, skipped=skipped)


def _reduce_quality(operation: Op, make_operation: MakeOperation[Op], cap: int) -> Op:
    spec: dict[str, object] = {"op": "format", **dict(operation.arguments)}
    kind = spec.get("type")
    quality, compression = spec.get("quality"), spec.get("compression")
    if isinstance(quality, int):
        spec["quality"] = min(quality, cap)
    if kind == "avif":
        spec["speed"] = AVIF_SPEED
    if kind == "png" and isinstance(compression, int):
        spec["compression"] = min(compression, PNG_COMPRESSION_CAP)
    if kind == "webp":
        effort = spec.get("effort")
        # an absent effort is libwebp's default, 4
        spec["effort"] = min(effort if isinstance(effort, int) else 4, WEBP_EFFORT_CAP)
    return make_operation(spec)
