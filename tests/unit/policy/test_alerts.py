"""Alert rules: prediction, burn rate, stalled partitions, firing/resolved transitions."""

from __future__ import annotations

import pytest

from pixelpipe.policy.alerts import (
    AlertState,
    burn_rate,
    multiwindow_burning,
    partition_stalled,
    predict_linear,
)


def test_predict_linear_extends_the_trend() -> None:
    declining = [(t, 1.0 - 0.001 * t) for t in range(0, 600, 10)]  # -0.06 per minute
    assert predict_linear(declining, at=600 + 3600) == pytest.approx(1.0 - 0.001 * 4200)
    assert predict_linear([(0, 5.0)], at=10) is None
    assert predict_linear([(3, 1.0), (3, 2.0)], at=10) is None


def test_a_declining_health_is_predicted_below_the_threshold_before_it_crosses_it() -> None:
    samples = [(float(t), 0.95 - 0.0001 * t) for t in range(0, 900, 15)]  # now 0.86
    assert samples[-1][1] > 0.7  # the health threshold itself is not crossed yet
    predicted = predict_linear(samples, at=samples[-1][0] + 3600)
    assert predicted is not None and predicted < 0.7


def test_burn_rate_is_the_error_ratio_over_the_budget() -> None:
    assert burn_rate(10, 100, 0.05) == pytest.approx(2.0)
    assert burn_rate(0, 0, 0.05) == 0.0


def test_both_windows_must_burn() -> None:
    spike_only = multiwindow_burning((30, 100), (30, 10_000), budget_ratio=0.05)
    assert not spike_only  # a short spike, long window clean
    old_incident = multiwindow_burning((0, 100), (900, 10_000), budget_ratio=0.05)
    assert not old_incident  # the long window still remembers, the short one is clean
    assert multiwindow_burning((15, 100), (1_500, 10_000), budget_ratio=0.05)


def test_a_partition_is_stalled_only_when_its_commit_never_moves_while_it_lags() -> None:
    stuck = [(float(t), 40, 90) for t in range(0, 301, 30)]
    assert partition_stalled(stuck, window_s=300)
    moving = [(float(t), 40 + t // 30, 90) for t in range(0, 301, 30)]
    assert not partition_stalled(moving, window_s=300)
    caught_up = [(float(t), 90, 90) for t in range(0, 301, 30)]
    assert not partition_stalled(caught_up, window_s=300)  # idle is not stalled
    assert not partition_stalled(stuck[:3], window_s=300)  # not watched long enough


def test_alert_fires_after_its_hold_once_and_resolves_once() -> None:
    state = AlertState(for_s=60)
    assert state.update(True, 0) is None
    assert state.update(True, 59) is None
    assert state.update(True, 60) == "firing"
    assert state.update(True, 61) is None
    assert state.update(False, 90) == "resolved"
    assert state.update(False, 91) is None
    assert state.update(True, 100) is None  # a new hold starts
