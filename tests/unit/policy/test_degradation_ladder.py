"""The health score and the degradation ladder (issue 10), on a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest

from pixelpipe.imaging import Operation, parse_operation, parse_operations
from pixelpipe.policy.degradation import (
    DEFER,
    LEVELS,
    Ladder,
    LadderConfig,
    LevelPlan,
    for_priority,
    level_for,
    plan_for_level,
)
from pixelpipe.policy.health import HealthScore, Trigger
from pixelpipe.schemas import RenditionRequest


def run(ladder: Ladder, healths: list[float], start: float = 0.0, step: float = 1.0) -> list[str]:
    """Evaluate once per ``step`` seconds; the level after each evaluation."""
    levels = []
    for i, health in enumerate(healths):
        ladder.evaluate(health, start + i * step)
        levels.append(ladder.level)
    return levels


def test_trigger_scales_linearly_and_clips() -> None:
    trigger = Trigger(start=100, saturate=300)
    assert [trigger.pressure(v) for v in (0, 100, 200, 300, 10_000)] == [0, 0, 0.5, 1, 1]
    with pytest.raises(ValueError):
        Trigger(start=5, saturate=5)


def test_health_is_one_minus_the_worst_smoothed_pressure() -> None:
    score = HealthScore(triggers={"cpu": Trigger(0.5, 1.0), "lag_records": Trigger(0, 1000)},
                        alpha=1.0)
    reading = score.update({"cpu": 0.75, "lag_records": 100, "unknown": 9})
    assert reading.health == pytest.approx(0.5)  # cpu's 0.5 beats lag's 0.1
    assert reading.worst == "cpu"
    assert set(reading.pressures) == {"cpu", "lag_records"}


def test_smoothing_damps_a_single_spike() -> None:
    score = HealthScore(triggers={"cpu": Trigger(0.0, 1.0)}, alpha=0.3)
    score.update({"cpu": 0.0})
    spike = score.update({"cpu": 1.0})
    assert spike.health == pytest.approx(0.7)
    assert score.update({"cpu": 0.0}).health == pytest.approx(1 - 0.21)


def test_a_missing_signal_keeps_its_last_pressure() -> None:
    score = HealthScore(triggers={"cpu": Trigger(0.0, 1.0)}, alpha=1.0)
    score.update({"cpu": 0.6})
    assert score.update({}).health == pytest.approx(0.4)


def test_level_for_uses_the_contract_thresholds() -> None:
    assert [level_for(h) for h in (1.0, 0.8, 0.79, 0.6, 0.59, 0.39, 0.19, 0.0)] == [
        "full", "full", "reduced_quality", "reduced_quality", "basic", "cached_only",
        "emergency", "emergency"]


def test_a_step_drop_escalates_within_two_evaluations_straight_to_its_level() -> None:
    ladder = Ladder()
    levels = run(ladder, [1.0] * 10 + [0.1, 0.1, 0.1])
    assert levels[10] == "full" and levels[11] == "emergency"


def test_one_bad_evaluation_is_not_enough() -> None:
    ladder = Ladder()
    assert run(ladder, [1.0, 0.5, 1.0, 0.5, 1.0]) == ["full"] * 5


def test_recovery_climbs_one_level_per_minute_of_stable_health() -> None:
    ladder = Ladder()
    run(ladder, [0.1, 0.1])  # emergency at t=1
    assert ladder.level == "emergency"
    levels = run(ladder, [1.0] * 400, start=2.0)
    changes = [(i + 2, lvl) for i, lvl in enumerate(levels) if i == 0 or levels[i - 1] != lvl]
    climbed = [lvl for _t, lvl in changes]
    assert climbed == ["emergency", "cached_only", "basic", "reduced_quality", "full"]
    times = [t for t, _lvl in changes][1:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 60 for gap in gaps), gaps  # one level per 60 s of stability, not faster
    assert times[0] >= 62  # the first climb waited 60 s of stability too


def test_health_just_above_the_entry_is_not_enough_to_recover() -> None:
    ladder = Ladder()
    run(ladder, [0.5, 0.5])  # basic (entry 0.6)
    run(ladder, [0.65] * 600, start=2.0)  # above 0.6 but not 0.1 above it
    assert ladder.level == "basic"


def test_a_health_oscillating_around_a_threshold_changes_level_at_most_6_times_an_hour() -> None:
    ladder = Ladder()
    healths = [0.8 + 0.15 * math.sin(2 * math.pi * t / 120) for t in range(3600)]
    levels = run(ladder, healths)
    changes = sum(1 for a, b in itertools.pairwise(levels) if a != b)
    assert 1 <= changes <= 6, changes  # it did degrade, and did not flap


def test_min_dwell_holds_a_level_before_recovering() -> None:
    ladder = Ladder(config=LadderConfig(recover_after_s=1, min_dwell_s=30))
    run(ladder, [0.5, 0.5])
    levels = run(ladder, [1.0] * 40, start=2.0)
    first_climb = next(i for i, lvl in enumerate(levels) if lvl != "basic") + 2
    assert first_climb >= 31  # entered at t=1, so not before t=31


def test_the_override_wins_and_expires() -> None:
    ladder = Ladder()
    ladder.set_override("cached_only", now=10, for_s=30, reason="drill")
    assert ladder.effective(10) == "cached_only"
    ladder.evaluate(1.0, 20)
    assert ladder.effective(39.9) == "cached_only"
    assert ladder.effective(40) == "full"  # expired: back to the ladder's own level
    assert ladder.override is None


def test_the_kill_switch_pins_full_but_an_override_still_applies() -> None:
    ladder = Ladder(enabled=False)
    run(ladder, [0.0] * 10)
    assert ladder.effective(10) == "full"
    ladder.set_override("basic", now=10, for_s=None)
    assert ladder.effective(1e9) == "basic"


@pytest.mark.parametrize(("level", "high", "normal", "low"), [
    ("full", "full", "full", "full"),
    ("reduced_quality", "full", "reduced_quality", "reduced_quality"),
    ("basic", "reduced_quality", "basic", DEFER),
    ("cached_only", "basic", "cached_only", DEFER),
    ("emergency", "basic", "emergency", DEFER),
])
def test_priorities_are_served_by_criticality(level: str, high: str, normal: str,
                                              low: str) -> None:
    assert level in LEVELS
    assert for_priority(level, "high") == high  # type: ignore[arg-type]
    assert for_priority(level, "normal") == normal  # type: ignore[arg-type]
    assert for_priority(level, "low") == low  # type: ignore[arg-type]


def test_a_forced_emergency_applies_to_high_priority_too() -> None:
    assert for_priority("emergency", "high", forced=True) == "emergency"


# ----------------------------------------------------------------- what each level does

def plan(level: str, operations: list[str], **rendition: object) -> LevelPlan[Operation]:
    request = RenditionRequest(name="r", operations=tuple(operations), **rendition)  # type: ignore[arg-type]
    return plan_for_level(level, request, parse_operations(operations),  # type: ignore[arg-type]
                          parse_operation)


def format_args(result: LevelPlan[Operation]) -> dict[str, object]:
    return next(op.arguments for op in result.operations if op.name == "format")


def test_full_changes_nothing() -> None:
    result = plan("full", ["resize:width=100", "format:type=jpeg,quality=90"])
    assert result.action == "render" and result.degraded is None
    assert format_args(result)["quality"] == 90


def test_reduced_quality_caps_quality_speeds_avif_and_eases_png() -> None:
    jpeg = plan("reduced_quality", ["resize:width=100", "format:type=jpeg,quality=90"])
    assert format_args(jpeg)["quality"] == 70 and jpeg.degraded == "reduced_quality"
    low = plan("reduced_quality", ["format:type=webp,quality=50"])
    assert format_args(low)["quality"] == 50  # a cap, never a raise
    avif = plan("reduced_quality", ["format:type=avif"])
    assert format_args(avif)["speed"] == 10
    png = plan("reduced_quality", ["format:type=png,compression=9"])
    assert format_args(png)["compression"] == 3
    assert [op.name for op in jpeg.operations] == ["resize", "format"]


def test_reduced_quality_lowers_webp_effort_but_never_raises_it() -> None:
    default = plan("reduced_quality", ["format:type=webp,quality=90"])
    assert format_args(default)["effort"] == 2 and format_args(default)["quality"] == 70
    already_low = plan("reduced_quality", ["format:type=webp,effort=1"])
    assert format_args(already_low)["effort"] == 1
    lossless = plan("reduced_quality", ["format:type=webp,lossless=true"])
    assert format_args(lossless)["effort"] == 2 and format_args(lossless)["lossless"] is True
    assert "effort" not in format_args(plan("full", ["format:type=webp"]))


def test_basic_also_skips_optional_operations_and_swaps_avif_for_its_fallback() -> None:
    result = plan("basic", ["resize:width=100", "sharpen", "format:type=avif,quality=80"],
                  optional=("sharpen",), fallback_format="webp")
    assert [op.name for op in result.operations] == ["resize", "format"]
    assert format_args(result)["type"] == "webp" and format_args(result)["quality"] == 70
    assert format_args(result)["effort"] == 2
    assert set(result.skipped) == {"sharpen", "avif"}
    assert result.degraded == "basic"


def test_cached_only_and_emergency_do_not_render() -> None:
    assert plan("cached_only", ["resize:width=100"]).action == "cached_or_defer"
    emergency = plan("emergency", ["resize:width=100"])
    assert emergency.action == "original" and emergency.degraded == "emergency"
