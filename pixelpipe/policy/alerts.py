"""Alert rules as pure functions (issue 11's core; DEGRADATION.md, monitoring half).

- ``predict_linear``: least-squares line through recent samples, read at a future time, as
  Prometheus' ``predict_linear`` does: "health will be below 0.7 within the hour".
- ``burn_rate`` / ``multiwindow_burning``: the SRE workbook's multi-window burn-rate rule: the
  error ratio over both a short and a long window exceeds ``factor`` times the budget, so a
  short spike alone does not page, and a long-past incident stops paging once the short window
  is clean.
- ``partition_stalled``: Burrow's rule: over the window the committed offset never moved while
  there was lag every time: the consumer is stuck, not just slow.
- ``AlertState``: firing after the condition held ``for_s``, resolved when it stops: each
  transition reported once (the evaluator publishes it to ``pixelpipe.alerts``).

Pure and clock-free: samples carry their own times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


def predict_linear(samples: Sequence[tuple[float, float]], at: float) -> float | None:
    """The value at time ``at`` of the least-squares line through ``(time, value)`` samples;
    None with fewer than two distinct times."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in samples)
    if var_t == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in samples) / var_t
    return mean_v + slope * (at - mean_t)


def burn_rate(errors: float, calls: float, budget_ratio: float) -> float:
    """How fast the error budget burns: the error ratio over the allowed ratio (1.0 = exactly
    on budget). No calls: 0."""
    if calls <= 0:
        return 0.0
    return (errors / calls) / budget_ratio


def multiwindow_burning(short: tuple[float, float], long: tuple[float, float], *,
                        budget_ratio: float, factor: float = 1.0) -> bool:
    """Both windows' ``(errors, calls)`` burn faster than ``factor`` x budget."""
    return (burn_rate(*short, budget_ratio) > factor
            and burn_rate(*long, budget_ratio) > factor)


def partition_stalled(history: Sequence[tuple[float, int, int]], *, window_s: float) -> bool:
    """``(time, committed offset, end offset)`` samples of one partition, oldest first.

    Stalled when the samples span at least ``window_s``, every one of them (within the window)
    has lag, and the committed offset did not move across them."""
    if not history:
        return False
    newest = history[-1][0]
    if history[0][0] > newest - window_s:
        return False  # not watched for a whole window yet
    recent = [s for s in history if s[0] >= newest - window_s]
    committed = {c for _t, c, _e in recent}
    return len(committed) == 1 and all(end > c for _t, c, end in recent)


Transition = Literal["firing", "resolved"]


@dataclass(slots=True)
class AlertState:
    """One rule's state: pending -> firing after ``for_s``; firing -> resolved when clear."""

    for_s: float = 0.0
    firing: bool = False
    pending_since: float | None = None
    since: float | None = None

    def update(self, condition: bool, now: float) -> Transition | None:
        if condition:
            if self.firing:
                return None
            if self.pending_since is None:
                self.pending_since = now
            if now - self.pending_since >= self.for_s:
                self.firing, self.since = True, now
                return "firing"
            return None
        self.pending_since = None
        if self.firing:
            self.firing, self.since = False, now
            return "resolved"
        return None
