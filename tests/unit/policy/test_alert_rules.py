"""AlertRules: each rule fires once when its condition holds and resolves once when it stops,
on simulated clusters (no broker, no clock: samples carry their times)."""

from __future__ import annotations

from pixelpipe.policy.alerts import AlertRules, ClusterSample, RuleConfig, WorkerSample

FAST = RuleConfig(short_window_s=10, long_window_s=60, predict_window_s=40,
                  predict_horizon_s=60, stall_s=20, breaker_open_s=15, dlq_per_min=10,
                  min_attempts=5)


def worker(now: float, *, ok: int = 0, failed: int = 0, health: float = 1.0, id: str = "w1",
           seen: float | None = None) -> WorkerSample:
    return WorkerSample(id=id, seen_at=now if seen is None else seen, interval_s=1.0,
                        health=health, attempts={"ok": ok, "failed": failed})


def transitions(events: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e.id, e.state) for e in events]


def test_a_15_percent_failure_burst_fires_the_error_ratio_alert_and_it_resolves() -> None:
    rules = AlertRules(FAST)
    ok = failed = 0
    seen: list[tuple[float, str, str]] = []
    for t in range(0, 200):
        burst = 40 <= t < 100
        ok += 17 if burst else 20
        failed += 3 if burst else 0  # 15 % during the burst
        for event in rules.evaluate(ClusterSample(now=t, workers=(worker(t, ok=ok, failed=failed),))):
            if event.rule == "error_ratio":
                seen.append((t, event.state, event.summary))
    assert [s[1] for s in seen] == ["firing", "resolved"], seen
    fired, resolved = seen[0][0], seen[1][0]
    # fires once the long (60 s) window is above 5 % too: a third of it into a 15 % burst
    assert 55 <= fired <= 62
    assert 100 <= resolved <= 112  # the short window clears first, and resolves it
    assert "15.0%" in seen[0][2]


def test_a_short_spike_alone_does_not_fire_the_burn_rate_alert() -> None:
    rules = AlertRules(FAST)
    ok = failed = 0
    states = []
    for t in range(0, 120):
        ok += 20
        failed += 4 if 60 <= t < 62 else 0  # 2 s of failures: the long window stays low
        states += transitions([e for e in rules.evaluate(
            ClusterSample(now=t, workers=(worker(t, ok=ok + 2000, failed=failed),)))
            if e.rule == "error_ratio"])
    assert states == []


def test_a_restarted_worker_counters_are_not_negative_work() -> None:
    rules = AlertRules(FAST)
    events = []
    for t, (ok, failed) in enumerate([(1000, 0), (1020, 0), (10, 0), (30, 0), (50, 0)]):
        events += rules.evaluate(ClusterSample(now=t, workers=(worker(t, ok=ok, failed=failed),)))
    assert not [e for e in events if e.rule == "error_ratio"]


def test_a_declining_health_fires_the_prediction_before_the_threshold_is_crossed() -> None:
    rules = AlertRules(FAST)
    first: dict[str, float] = {}
    for t in range(0, 200):
        health = max(0.0, 1.0 - t * 0.004)  # 1.0 -> 0.2 over 200 s
        for event in rules.evaluate(ClusterSample(now=t, workers=(worker(t, health=health),))):
            first.setdefault(f"{event.rule}:{event.state}", t)
    assert "health_predicted_low:firing" in first and "health_low:firing" in first
    assert first["health_predicted_low:firing"] < first["health_low:firing"]
    # health crosses 0.7 at t=75 and 0.5 at t=125: the prediction came before either
    assert first["health_predicted_low:firing"] < 75
    assert 125 <= first["health_low:firing"] <= 127


def test_queue_depth_and_its_prediction() -> None:
    rules = AlertRules(FAST)
    first: dict[str, float] = {}
    for t in range(0, 120):
        lag = t * 12  # crosses 1000 at t=84
        sample = ClusterSample(now=t, partitions={0: (100, 100 + lag)})
        for event in rules.evaluate(sample):
            first.setdefault(f"{event.rule}:{event.state}", t)
    assert first["lag_predicted_high:firing"] < first["queue_depth:firing"]
    assert first["queue_depth:firing"] == 84
    assert "lag_predicted_high:resolved" in first  # over the threshold now: no longer a forecast


def test_a_stalled_partition_fires_and_moving_again_resolves_it() -> None:
    rules = AlertRules(FAST)
    events = []
    for t in range(0, 60):
        committed = 50 if t < 40 else 50 + (t - 40) * 5
        sample = ClusterSample(now=t, partitions={3: (committed, 200), 4: (200, 200)})
        events += [(t, e.id, e.state) for e in rules.evaluate(sample) if e.rule == "partition_stalled"]
    assert [(i, s) for _t, i, s in events] == [("partition_stalled:3", "firing"),
                                                ("partition_stalled:3", "resolved")]
    assert events[0][0] == 20 and events[1][0] == 41


def test_a_breaker_open_too_long_and_a_missing_worker() -> None:
    rules = AlertRules(FAST)
    events = []
    for t in range(0, 40):
        refusing = {"resize": 0.0} if t < 30 else {}
        workers = (worker(t, id="a"), worker(t, id="b", seen=min(t, 10)))
        events += [(t, e.id, e.state, e.severity) for e in rules.evaluate(
            ClusterSample(now=t, workers=workers, refusing_since=refusing))]
    assert (16, "breaker_open:resize", "firing", "warning") in events
    assert (30, "breaker_open:resize", "resolved", "warning") in events
    assert (14, "worker_missing:b", "firing", "critical") in events
    assert not [e for e in events if e[1] == "worker_missing:a"]


def test_dead_letters_per_minute() -> None:
    rules = AlertRules(FAST)
    events = []
    dead = 0
    for t in range(0, 200):
        dead += 1 if 60 <= t < 120 else 0  # 60 a minute for a minute
        events += [(t, e.state) for e in rules.evaluate(ClusterSample(now=t, dead_letters=dead))
                   if e.rule == "dead_letters"]
    assert [s for _t, s in events] == ["firing", "resolved"]
    # the 1-minute rate passes 10 a minute about 10 s in, and falls under it ~50 s after
    assert 65 < events[0][0] < 75 and 160 < events[1][0] < 185


def test_restored_firing_alerts_resolve_when_clear() -> None:
    rules = AlertRules(FAST)
    rules.restore({"queue_depth": 5.0})
    events = rules.evaluate(ClusterSample(now=10, partitions={0: (10, 10)}))
    assert [(e.id, e.state) for e in events] == [("queue_depth", "resolved")]
