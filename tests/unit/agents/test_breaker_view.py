"""The half-open trial budget of BreakerView.decide, fed records directly (no broker).

What must hold: in a half-open episode each worker (each view) lets exactly
``breaker_half_open_calls`` calls through, then refuses; a new episode (a new
``next_trial_at``) brings a fresh budget, re-reading the same record does not; an open
breaker before its trial time, and a forced-open one, refuse; a disabled one allows;
``is_refusing`` answers without spending a trial.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from pixelpipe.config import Settings
from pixelpipe.streams import breaker_view
from pixelpipe.streams.breaker_view import BreakerView

CALLS = 2
SETTINGS = Settings(breaker=replace(Settings().breaker, half_open_calls=CALLS))


def breaker(processor: str = "resize", state: str = "open", since: float = 100.0,
            next_trial_at: float | None = 110.0, **extra: Any) -> bytes:
    body = {"schema": breaker_view.BREAKER_SCHEMA, "processor": processor, "state": state,
            "since": since, "next_trial_at": next_trial_at, **extra}
    return orjson.dumps(body)


def view(*records: bytes) -> BreakerView:
    v = BreakerView(SETTINGS)
    for value in records:
        v.apply(value, b"resize")
    return v


def decisions(v: BreakerView, count: int, now: float, processor: str = "resize") -> list[str]:
    return [v.decide(processor, now=now) for _ in range(count)]


def test_an_unknown_or_closed_breaker_allows() -> None:
    v = view(breaker(state="closed", next_trial_at=None))
    assert decisions(v, 5, now=1000.0) == ["allow"] * 5
    assert decisions(v, 5, now=1000.0, processor="sharpen") == ["allow"] * 5


def test_open_before_the_trial_time_refuses_and_spends_no_trial() -> None:
    v = view(breaker())
    assert decisions(v, 5, now=109.9) == ["refuse"] * 5
    # the refusals before the trial time did not eat into the half-open budget
    assert decisions(v, CALLS + 1, now=110.0) == ["allow"] * CALLS + ["refuse"]


def test_exactly_the_budget_of_trials_per_half_open_episode() -> None:
    v = view(breaker())
    assert decisions(v, CALLS + 3, now=111.0) == ["allow"] * CALLS + ["refuse"] * 3
    assert decisions(v, 3, now=200.0) == ["refuse"] * 3  # later, same episode: still spent


def test_re_reading_the_same_record_does_not_refill_the_budget() -> None:
    v = view(breaker())
    assert decisions(v, CALLS, now=111.0) == ["allow"] * CALLS
    v.apply(breaker(), b"resize")  # e.g. the record read again after a reconnect
    assert v.decide("resize", now=111.0) == "refuse"


def test_a_new_episode_gets_a_fresh_budget() -> None:
    v = view(breaker())
    assert decisions(v, CALLS + 1, now=111.0) == ["allow"] * CALLS + ["refuse"]
    # the trials failed: the breaker re-opened with a later trial time
    v.apply(breaker(since=111.5, next_trial_at=130.0), b"resize")
    assert v.decide("resize", now=120.0) == "refuse"
    assert decisions(v, CALLS + 1, now=130.0) == ["allow"] * CALLS + ["refuse"]


def test_a_half_open_record_uses_the_same_budget() -> None:
    v = view(breaker(state="half_open", since=150.0, next_trial_at=None))
    assert decisions(v, CALLS + 1, now=151.0) == ["allow"] * CALLS + ["refuse"]


def test_the_budget_is_per_worker_and_per_processor() -> None:
    one, other = view(breaker()), view(breaker())
    assert decisions(one, CALLS + 1, now=111.0) == ["allow"] * CALLS + ["refuse"]
    assert decisions(other, CALLS, now=111.0) == ["allow"] * CALLS  # its own budget
    one.apply(breaker(processor="blur"), b"blur")
    assert decisions(one, CALLS, now=111.0, processor="blur") == ["allow"] * CALLS


def test_forced_open_refuses_and_disabled_allows() -> None:
    forced = view(breaker(state="forced_open", next_trial_at=None))
    assert decisions(forced, 3, now=10_000.0) == ["refuse"] * 3
    assert forced.is_refusing("resize", now=10_000.0)
    disabled = view(breaker(state="disabled", next_trial_at=None))
    assert decisions(disabled, 10, now=10_000.0) == ["allow"] * 10
    assert not disabled.is_refusing("resize", now=10_000.0)


def test_is_refusing_uses_no_trial() -> None:
    v = view(breaker())
    assert v.is_refusing("resize", now=105.0)
    for _ in range(10):
        assert not v.is_refusing("resize", now=111.0)  # half-open: trials may go through
    assert decisions(v, CALLS + 1, now=111.0) == ["allow"] * CALLS + ["refuse"]
    assert not v.is_refusing("unknown", now=111.0)


def test_a_tombstone_forgets_the_breaker() -> None:
    v = view(breaker(state="forced_open", next_trial_at=None))
    v.apply(None, b"resize")
    assert v.decide("resize", now=1.0) == "allow"


def test_a_record_that_is_not_a_breaker_record_is_counted_and_ignored() -> None:
    seen: list[int] = []
    v = BreakerView(SETTINGS, on_undecodable=lambda: seen.append(1))
    v.apply(b"not json", b"resize")
    v.apply(orjson.dumps({"schema": "other/1", "processor": "resize", "state": "forced_open"}))
    assert v.undecodable == 2 and seen == [1, 1]
    assert v.decide("resize", now=1.0) == "allow"
