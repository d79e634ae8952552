"""The breaker state machine, pure: thresholds, waits, trials, overrides, expiry."""

from __future__ import annotations

import random

from pixelpipe.policy.breaker import (
    Breaker,
    BreakerConfig,
    command,
    effective_state,
    open_wait,
    record,
    status_record,
)

CONFIG = BreakerConfig(window_s=10, min_calls=4, failure_rate=0.5, slow_rate=0.8,
                       slow_call_s=1.0, wait_s=5, max_wait_s=60, half_open_calls=2)
RNG = random.Random(0)


def fail(b: Breaker, now: float, code: str = "storage_unavailable") -> object:
    return record(b, ok=False, code=code, duration_s=0.1, now=now, config=CONFIG, rng=RNG)


def ok(b: Breaker, now: float, duration: float = 0.1) -> object:
    return record(b, ok=True, code=None, duration_s=duration, now=now, config=CONFIG, rng=RNG)


def test_it_opens_only_with_min_calls_and_the_rate_over_threshold() -> None:
    b = Breaker("resize")
    assert fail(b, 100.0) is None and fail(b, 100.1) is None and fail(b, 100.2) is None
    transition = fail(b, 100.3)
    assert transition is not None and b.state == "open"
    assert 100.3 + 4.5 <= (b.next_trial_at or 0) <= 100.3 + 5.5


def test_mostly_good_calls_keep_it_closed() -> None:
    b = Breaker("resize")
    for i in range(10):
        ok(b, 100 + i * 0.1)
    fail(b, 101.5)
    fail(b, 101.6)
    assert b.state == "closed"


def test_slow_calls_open_it() -> None:
    b = Breaker("avif")
    for i in range(4):
        ok(b, 100 + i * 0.1, duration=2.0)
    assert b.state == "open"


def test_input_errors_are_not_counted() -> None:
    b = Breaker("decode")
    for i in range(20):
        fail(b, 100 + i * 0.01, code="corrupt_image")
    assert b.state == "closed" and b.totals(100.5, CONFIG) == (0, 0, 0)


def test_after_the_wait_it_is_half_open_and_good_trials_close_it() -> None:
    b = Breaker("resize")
    for i in range(4):
        fail(b, 100 + i * 0.1)
    trial_at = b.next_trial_at or 0
    assert effective_state(b, trial_at - 0.01) == "open"
    assert effective_state(b, trial_at) == "half_open"
    assert ok(b, trial_at + 0.1) is None and b.state == "half_open"
    transition = ok(b, trial_at + 0.2)
    assert transition is not None and b.state == "closed" and b.trips == 0


def test_a_failed_trial_reopens_with_a_longer_wait() -> None:
    b = Breaker("resize")
    for i in range(4):
        fail(b, 100 + i * 0.1)
    first_wait = (b.next_trial_at or 0) - 100.3
    trial_at = b.next_trial_at or 0
    fail(b, trial_at + 0.1)
    assert b.state == "open" and b.trips == 2
    second_wait = (b.next_trial_at or 0) - (trial_at + 0.1)
    assert second_wait > first_wait * 1.5


def test_waits_double_and_are_capped() -> None:
    rng = random.Random(1)
    waits = [open_wait(trips, CONFIG, rng) for trips in range(1, 10)]
    assert 4.5 <= waits[0] <= 5.5 and 9 <= waits[1] <= 11
    assert max(waits) <= 66


def test_old_buckets_expire_by_wall_clock_even_after_a_restore() -> None:
    b = Breaker("resize")
    fail(b, 100.0)
    fail(b, 100.5)
    restored = Breaker.from_dict(b.to_dict())  # as read back from the table's changelog
    assert restored.totals(105, CONFIG) == (2, 2, 0)
    assert restored.totals(111, CONFIG) == (0, 0, 0)
    assert status_record(restored, 111, CONFIG)["calls"] == 0


def test_overrides() -> None:
    b = Breaker("resize")
    assert command(b, "open", 1.0) is not None and b.state == "forced_open"
    for i in range(10):
        ok(b, 2 + i * 0.1)
    assert b.state == "forced_open"
    command(b, "disable", 3.0)
    for i in range(10):
        fail(b, 4 + i * 0.1)
    assert b.state == "disabled"
    command(b, "reset", 5.0)
    assert b.state == "closed" and b.buckets == {} and b.trips == 0


def test_outcomes_arriving_while_open_do_not_trip_it_again() -> None:
    b = Breaker("resize")
    for i in range(4):
        fail(b, 100 + i * 0.1)
    trial_at, trips = b.next_trial_at, b.trips
    for i in range(20):  # stragglers: calls that started before it opened
        assert fail(b, 100.5 + i * 0.01) is None
    assert (b.state, b.trips, b.next_trial_at) == ("open", trips, trial_at)
