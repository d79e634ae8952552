"""The circuit breaker of one processor: a pure state machine over a sliding window.

States (resilience4j's, shared across workers through Kafka):

    CLOSED ──(window has >= min_calls and failure or slow rate >= threshold)──► OPEN
    OPEN ──(wait elapsed: wait doubles per consecutive trip, +-10 % jitter)──► HALF_OPEN
    HALF_OPEN ──(half_open_calls trial outcomes, failure rate below threshold)──► CLOSED
    HALF_OPEN ──(trial failure rate at or above threshold)──► OPEN (longer wait)
    FORCED_OPEN, DISABLED: operator overrides; ``close``/``reset`` return to CLOSED.

The window is a map of 1-second buckets ``{epoch second: [calls, failures, slow]}`` summed
over the last ``window_s`` seconds of wall-clock time. It lives in the breaker agent's faust
table (changelog-backed), and expiry is computed here on every evaluation, by wall clock:
buckets restored after a restart expire like any others (faust's own windowed tables do not
expire restored windows, faust-streaming issue 385, and expire relative to event time).

OPEN -> HALF_OPEN needs no event: ``derived_state`` derives it from ``next_trial_at``, so a
worker that reads an OPEN record knows by itself when trials may start.

Input errors (``corrupt_image``, ...) are never recorded: they are not the processor's fault.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from pixelpipe.config import BreakerConfig
from pixelpipe.errors import INPUT_ERROR_CODES
from pixelpipe.schemas.names import BREAKER_SCHEMA

__all__ = [
    "COMMANDS",
    "Breaker",
    "BreakerConfig",
    "Command",
    "State",
    "Transition",
    "command",
    "derived_state",
    "effective_state",
    "open_wait",
    "record",
    "status_record",
]

State = Literal["closed", "open", "half_open", "forced_open", "disabled"]
Command = Literal["open", "close", "disable", "reset"]
COMMANDS: tuple[Command, ...] = ("open", "close", "disable", "reset")

S = TypeVar("S", bound=str)


@dataclass(slots=True)
class Breaker:
    """The whole state of one processor's breaker (the value of its table row)."""

    processor: str
    state: State = "closed"
    since: float = 0.0
    buckets: dict[int, list[int]] = field(default_factory=dict)
    trips: int = 0
    next_trial_at: float | None = None
    trial_calls: int = 0
    trial_failures: int = 0
    reason: str = ""

    # ------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breaker:
        data = dict(data)
        data["buckets"] = {int(k): list(v) for k, v in data.get("buckets", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    # ------------------------------------------------------------ window

    def expire(self, now: float, config: BreakerConfig) -> None:
        oldest = math.floor(now - config.window_s)
        for start in [s for s in self.buckets if s <= oldest]:
            del self.buckets[start]

    def totals(self, now: float, config: BreakerConfig) -> tuple[int, int, int]:
        self.expire(now, config)
        calls = sum(b[0] for b in self.buckets.values())
        failures = sum(b[1] for b in self.buckets.values())
        slow = sum(b[2] for b in self.buckets.values())
        return calls, failures, slow


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, with the numbers that caused it (logged once, published once)."""

    processor: str
    old: State
    new: State
    reason: str


def derived_state(state: S, next_trial_at: object, now: float) -> S | Literal["half_open"]:
    """The OPEN -> HALF_OPEN rule, the one place it is written: an ``open`` breaker whose
    ``next_trial_at`` (epoch seconds) has come is ``half_open``, with no event needed. Used on
    the ``Breaker`` itself (``effective_state``) and on the records every worker reads
    (``streams.breaker_view``)."""
    if state == "open" and isinstance(next_trial_at, int | float) and now >= next_trial_at:
        return "half_open"
    return state


def effective_state(breaker: Breaker, now: float) -> State:
    return derived_state(breaker.state, breaker.next_trial_at, now)


def open_wait(trips: int, config: BreakerConfig, rng: random.Random | None = None) -> float:
    """The wait before trials after the ``trips``-th consecutive trip: doubles, capped, +-10 %."""
    base = min(config.wait_s * (2 ** max(0, trips - 1)), config.max_wait_s)
    return float(base * (rng or random).uniform(0.9, 1.1))


def _trip(breaker: Breaker, now: float, config: BreakerConfig, reason: str,
          rng: random.Random | None) -> None:
    breaker.trips += 1
    breaker.state = "open"
    breaker.since = now
    breaker.next_trial_at = now + open_wait(breaker.trips, config, rng)
    breaker.trial_calls = breaker.trial_failures = 0
    breaker.reason = reason


def record(
    breaker: Breaker, *, ok: bool, code: str | None, duration_s: float, now: float,
    config: BreakerConfig, rng: random.Random | None = None,
) -> Transition | None:
    """Count one outcome; return the transition it caused, if any."""
    if not ok and code in INPUT_ERROR_CODES:
        return None  # the input's fault, not the processor's
    failed = not ok
    slow = duration_s >= config.slow_call_s
    bucket = breaker.buckets.setdefault(math.floor(now), [0, 0, 0])
    bucket[0] += 1
    bucket[1] += int(failed)
    bucket[2] += int(slow)
    old = effective_state(breaker, now)
    if old in ("forced_open", "disabled", "open"):
        # While OPEN, outcomes of calls that started before it opened still arrive: they are
        # counted, but only a trial (HALF_OPEN) decides what happens next. Re-tripping here
        # would double the wait on every straggler.
        return None
    if old == "half_open":
        if breaker.state == "open":  # first trial outcome of this episode
            breaker.state = "half_open"
            breaker.since = breaker.next_trial_at or now
            breaker.trial_calls = breaker.trial_failures = 0
        breaker.trial_calls += 1
        breaker.trial_failures += int(failed or slow)
        rate = breaker.trial_failures / breaker.trial_calls
        limit = config.half_open_calls
        # Open again as soon as closing is out of reach; close after enough good trials.
        if breaker.trial_failures / limit >= config.failure_rate:
            _trip(breaker, now, config,
                  f"{breaker.trial_failures} of {breaker.trial_calls} trial calls failed", rng)
            return Transition(breaker.processor, "half_open", "open", breaker.reason)
        if breaker.trial_calls >= limit:
            breaker.state, breaker.since, breaker.trips = "closed", now, 0
            breaker.next_trial_at = None
            breaker.buckets.clear()
            breaker.reason = f"{breaker.trial_calls} trial calls, failure rate {rate:.0%}"
            return Transition(breaker.processor, "half_open", "closed", breaker.reason)
        return None
    calls, failures, slow_calls = breaker.totals(now, config)
    if calls < config.min_calls:
        return None
    failure_rate, slow_rate = failures / calls, slow_calls / calls
    if failure_rate >= config.failure_rate or slow_rate >= config.slow_rate:
        reason = (f"failure rate {failure_rate:.0%} ({failures}/{calls}), slow rate "
                  f"{slow_rate:.0%} in the last {config.window_s:g} s; last code {code}")
        _trip(breaker, now, config, reason, rng)
        return Transition(breaker.processor, "closed", "open", reason)
    return None


def command(breaker: Breaker, cmd: Command, now: float) -> Transition | None:
    """Apply an operator override."""
    old = effective_state(breaker, now)
    if cmd == "open":
        breaker.state, breaker.next_trial_at = "forced_open", None
    elif cmd == "disable":
        breaker.state, breaker.next_trial_at = "disabled", None
    elif cmd == "close":
        breaker.state, breaker.next_trial_at = "closed", None
    else:  # reset: closed, with a clean window and trip count
        breaker.state, breaker.next_trial_at, breaker.trips = "closed", None, 0
        breaker.buckets.clear()
    breaker.since = now
    breaker.trial_calls = breaker.trial_failures = 0
    breaker.reason = f"operator: {cmd}"
    if breaker.state == old and cmd != "reset":
        return None
    return Transition(breaker.processor, old, breaker.state, breaker.reason)


def status_record(breaker: Breaker, now: float, config: BreakerConfig) -> dict[str, Any]:
    """The ``pixelpipe.breaker/1`` record published to the compacted breaker topic."""
    calls, failures, slow = breaker.totals(now, config)
    return {
        "schema": BREAKER_SCHEMA,
        "processor": breaker.processor,
        "state": breaker.state,
        "since": breaker.since,
        "next_trial_at": breaker.next_trial_at,
        "trips": breaker.trips,
        "calls": calls,
        "failure_rate": round(failures / calls, 4) if calls else 0.0,
        "slow_rate": round(slow / calls, 4) if calls else 0.0,
        "reason": breaker.reason,
        "published_at": now,
    }
