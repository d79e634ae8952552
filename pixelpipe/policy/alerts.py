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
from dataclasses import dataclass, field
from typing import Literal

from pixelpipe.config import MonitorConfig


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


# --------------------------------------------------------------------------- the rule set

#: rule -> severity (contract names on ``pixelpipe.alerts`` and in infra/prometheus)
SEVERITY: dict[str, str] = {
    "error_ratio": "warning",
    "health_low": "critical",
    "queue_depth": "warning",
    "health_predicted_low": "warning",
    "lag_predicted_high": "warning",
    "partition_stalled": "warning",
    "breaker_open": "warning",
    "worker_missing": "critical",
    "dead_letters": "warning",
}


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """What the evaluator knows of one worker from its last heartbeat."""

    id: str
    seen_at: float  # epoch seconds of the heartbeat
    interval_s: float
    health: float
    attempts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClusterSample:
    """One evaluation's inputs, read from the topics (``agents.alerts`` gathers them)."""

    now: float
    workers: tuple[WorkerSample, ...] = ()
    #: uploads partition -> (committed offset or None, end offset)
    partitions: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    #: processor -> epoch seconds since its breaker has refused calls (open / forced_open)
    refusing_since: dict[str, float] = field(default_factory=dict)
    #: dead letters ever written (sum of the dead-letter topic's end offsets)
    dead_letters: int = 0


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A transition to publish: ``state`` firing or resolved."""

    id: str
    rule: str
    severity: str
    state: Transition
    value: float | None
    threshold: float
    since: float
    summary: str
    subject: str | None = None


#: the rules' thresholds and windows are ``config.MonitorConfig`` (``PIXELPIPE_ALERT_*``):
#: one place for their names and defaults
RuleConfig = MonitorConfig


class AlertRules:
    """Evaluates every rule on a stream of ``ClusterSample`` and reports transitions once.

    Keeps the little history the rules need: cluster attempt totals (for the burn-rate
    windows; a worker's counters restarting at 0 is read as a restart, not negative work),
    min health and total lag (for the predictions), committed offsets per partition (for
    Burrow's stall rule) and the dead-letter total (for the rate).
    """

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.states: dict[str, AlertState] = {}
        self._last_attempts: dict[str, dict[str, int]] = {}
        self._totals = {"ok": 0, "failed": 0}
        self._attempts: list[tuple[float, int, int]] = []  # (t, ok, failed) cumulative
        self._health: list[tuple[float, float]] = []
        self._lag: list[tuple[float, float]] = []
        self._offsets: dict[int, list[tuple[float, int, int]]] = {}
        self._dead: list[tuple[float, int]] = []

    def restore(self, firing: dict[str, float]) -> None:
        """Alerts an earlier evaluator left firing (id -> since): resolved when clear."""
        for alert_id, since in firing.items():
            self.states[alert_id] = AlertState(firing=True, since=since)

    def firing(self) -> list[str]:
        return sorted(k for k, s in self.states.items() if s.firing)

    def evaluate(self, sample: ClusterSample) -> list[AlertEvent]:
        cfg, now = self.config, sample.now
        self._record(sample)
        checks: list[tuple[str, str | None, bool, float | None, float, str]] = []

        short = self._window(now, cfg.short_window_s)
        long = self._window(now, cfg.long_window_s)
        ratio = short[0] / short[1] if short[1] else None
        burning = short[1] >= cfg.min_attempts and multiwindow_burning(
            short, long, budget_ratio=cfg.error_ratio)
        checks.append(("error_ratio", None, burning, ratio, cfg.error_ratio,
                       f"error ratio {_pct(ratio)} over {cfg.short_window_s:g} s "
                       f"and {_pct(long[0] / long[1] if long[1] else None)} over "
                       f"{cfg.long_window_s:g} s (threshold {_pct(cfg.error_ratio)})"))

        live = [w for w in sample.workers if not self._missing(w, now)]
        health = min((w.health for w in live), default=None)
        checks.append(("health_low", None, health is not None and health < cfg.health, health,
                       cfg.health, f"lowest worker health {_num(health)} < {cfg.health:g}"))
        predicted = self._predict(self._health, now)
        checks.append(("health_predicted_low", None,
                       predicted is not None and predicted < cfg.predict_health, predicted,
                       cfg.predict_health,
                       f"health predicted {_num(predicted)} in {cfg.predict_horizon_s:g} s "
                       f"(< {cfg.predict_health:g}), now {_num(health)}"))

        lag = float(sum(max(0, end - (c or 0)) for c, end in sample.partitions.values()))
        checks.append(("queue_depth", None, lag > cfg.lag_records, lag, cfg.lag_records,
                       f"uploads lag {lag:.0f} records > {cfg.lag_records}"))
        lag_ahead = self._predict(self._lag, now)
        checks.append(("lag_predicted_high", None,
                       lag_ahead is not None and lag_ahead > cfg.lag_records
                       and lag <= cfg.lag_records, lag_ahead, cfg.lag_records,
                       f"uploads lag predicted {_num(lag_ahead, 0)} records in "
                       f"{cfg.predict_horizon_s:g} s (> {cfg.lag_records}), now {lag:.0f}"))

        for partition, history in sorted(self._offsets.items()):
            stalled = partition_stalled(history, window_s=cfg.stall_s)
            committed, end = history[-1][1], history[-1][2]
            checks.append(("partition_stalled", str(partition), stalled, float(end - committed),
                           cfg.stall_s, f"uploads partition {partition}: committed offset "
                           f"{committed} unchanged for {cfg.stall_s:g} s with lag "
                           f"{end - committed}"))

        for processor in sorted(set(sample.refusing_since) | self._subjects("breaker_open")):
            since = sample.refusing_since.get(processor)
            open_for = None if since is None else now - since
            checks.append(("breaker_open", processor,
                           open_for is not None and open_for > cfg.breaker_open_s, open_for,
                           cfg.breaker_open_s, f"breaker of {processor} refusing for "
                           f"{_num(open_for, 0)} s (> {cfg.breaker_open_s:g} s)"))

        for worker in sample.workers:
            age = now - worker.seen_at
            checks.append(("worker_missing", worker.id, self._missing(worker, now), age,
                           cfg.missing_after * worker.interval_s,
                           f"worker {worker.id}: no heartbeat for {age:.0f} s"))

        per_min = self._dead_per_minute(now)
        checks.append(("dead_letters", None, per_min is not None and per_min > cfg.dlq_per_min,
                       per_min, cfg.dlq_per_min,
                       f"{_num(per_min, 1)} dead letters per minute (> {cfg.dlq_per_min:g})"))

        events = []
        for rule, subject, condition, value, threshold, summary in checks:
            alert_id = rule if subject is None else f"{rule}:{subject}"
            state = self.states.setdefault(alert_id, AlertState())
            change = state.update(condition, now)
            if change is not None:
                events.append(AlertEvent(alert_id, rule, SEVERITY[rule], change, value,
                                         float(threshold), state.since or now, summary, subject))
        return events

    # ------------------------------------------------------------ history

    def _missing(self, worker: WorkerSample, now: float) -> bool:
        return now - worker.seen_at > self.config.missing_after * worker.interval_s

    def _subjects(self, rule: str) -> set[str]:
        return {k.partition(":")[2] for k, s in self.states.items()
                if s.firing and k.startswith(rule + ":")}

    def _record(self, sample: ClusterSample) -> None:
        now, keep = sample.now, max(self.config.long_window_s, self.config.predict_window_s,
                                    self.config.stall_s) + 60
        for worker in sample.workers:
            last = self._last_attempts.get(worker.id, {})
            for result in ("ok", "failed"):
                current, before = worker.attempts.get(result, 0), last.get(result, 0)
                self._totals[result] += current if current < before else current - before
            self._last_attempts[worker.id] = dict(worker.attempts)
        self._attempts.append((now, self._totals["ok"], self._totals["failed"]))
        live = [w.health for w in sample.workers if not self._missing(w, now)]
        if live:
            self._health.append((now, min(live)))
        self._lag.append((now, float(sum(max(0, e - (c or 0))
                                         for c, e in sample.partitions.values()))))
        for partition, (committed, end) in sample.partitions.items():
            self._offsets.setdefault(partition, []).append((now, committed or 0, end))
        self._dead.append((now, sample.dead_letters))
        horizon = now - keep
        self._attempts = [s for s in self._attempts if s[0] >= horizon]
        self._health = [s for s in self._health if s[0] >= horizon]
        self._lag = [s for s in self._lag if s[0] >= horizon]
        self._dead = [s for s in self._dead if s[0] >= horizon]
        for partition, history in self._offsets.items():
            self._offsets[partition] = [s for s in history if s[0] >= horizon]

    def _window(self, now: float, window_s: float) -> tuple[float, float]:
        """(failed, ok + failed) over the last ``window_s`` (or all history, if shorter)."""
        if not self._attempts:
            return 0.0, 0.0
        start = next((s for s in self._attempts if s[0] >= now - window_s), self._attempts[0])
        end = self._attempts[-1]
        failed = end[2] - start[2]
        return float(failed), float(failed + end[1] - start[1])

    def _predict(self, series: list[tuple[float, float]], now: float) -> float | None:
        window = [s for s in series if s[0] >= now - self.config.predict_window_s]
        # a line through a quarter of a window or less is noise, not a trend
        if len(window) < 3 or window[-1][0] - window[0][0] < self.config.predict_window_s / 4:
            return None
        return predict_linear(window, now + self.config.predict_horizon_s)

    def _dead_per_minute(self, now: float) -> float | None:
        recent = [s for s in self._dead if s[0] >= now - 60]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] <= 0:
            return None
        return (recent[-1][1] - recent[0][1]) * 60 / (recent[-1][0] - recent[0][0])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
