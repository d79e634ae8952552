"""Prometheus metrics of a worker, served at ``/metrics`` by the faust web server.

prometheus-client does the bookkeeping and the exposition format; these are the numbers an
operator alerts on: outcomes by route and code, processing time, retry lateness and backlog,
breaker states as this worker obeys them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

OUTCOMES = Counter(
    "pixelpipe_outcomes_total",
    "Attempts by where their outcome went (processed, a retry tier, dlq) and error code.",
    ["route", "code"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "pixelpipe_processing_seconds",
    "Wall time of a successful attempt (all renditions of one upload).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
RETRY_LATENESS_SECONDS = Histogram(
    "pixelpipe_retry_lateness_seconds",
    "Dispatch time of a retry minus its due time (never negative).",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120),
    registry=REGISTRY,
)
RETRY_WAITING = Gauge(
    "pixelpipe_retry_waiting",
    "Retry records read by this worker and not yet due.",
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "pixelpipe_breaker_refusing",
    "1 when this worker's view of a processor's breaker refuses calls (open or forced_open).",
    ["processor"],
    registry=REGISTRY,
)

UPLOADS_IN_FLIGHT = Gauge(
    "pixelpipe_uploads_in_flight",
    "Upload records read by this worker's feed and not yet settled (outcome acknowledged).",
    registry=REGISTRY,
)
UPLOADS_DROPPED = Counter(
    "pixelpipe_uploads_unsettled_total",
    "Upload records this worker read but let go without an outcome, by reason: revoked (the "
    "new owner reads them again) or hole_* (the partition was re-read from the stuck head).",
    ["reason"],
    registry=REGISTRY,
)
COMMIT_FAILURES = Counter(
    "pixelpipe_commit_failures_total",
    "Offset commits that failed (a rebalance or the broker); the offsets are committed later "
    "or the records read again by their next owner.",
    ["consumer"],
    registry=REGISTRY,
)

RECORDS_UNDECODABLE = Counter(
    "pixelpipe_records_undecodable_total",
    "Records on our internal topics (outcomes, breaker) that were not ours or not decodable, "
    "skipped after a warning.",
    ["topic"],
    registry=REGISTRY,
)

HEALTH = Gauge(
    "pixelpipe_health",
    "This worker's health: 1 - the worst smoothed pressure (1 healthy, 0 saturated).",
    registry=REGISTRY,
)
PRESSURE = Gauge(
    "pixelpipe_pressure",
    "Smoothed pressure of each health signal, in [0, 1].",
    ["signal"],
    registry=REGISTRY,
)
LEVEL = Gauge(
    "pixelpipe_service_level",
    "1 for the service level this worker serves at now (full ... emergency), 0 for the others.",
    ["level"],
    registry=REGISTRY,
)


ATTEMPTS = Counter(
    "pixelpipe_attempts_total",
    "Finished attempts by result: ok (processed), failed (the system's fault: retried or "
    "dead-lettered), input_error (the input's fault), deferred (overload or an open breaker, "
    "no attempt spent). The error ratio is failed / (ok + failed).",
    ["result"],
    registry=REGISTRY,
)
UPLOADS_LAG_RECORDS = Gauge(
    "pixelpipe_uploads_lag_records",
    "Uploads records behind on each partition this worker owns (not settled or not fetched).",
    ["partition"],
    registry=REGISTRY,
)
UPLOADS_LAG_SECONDS = Gauge(
    "pixelpipe_uploads_lag_seconds",
    "Age of the oldest upload handed out and not settled, per partition this worker owns.",
    ["partition"],
    registry=REGISTRY,
)
RETRY_BACKLOG = Gauge(
    "pixelpipe_retry_backlog",
    "Retry records this worker holds, not yet due, per tier.",
    ["tier"],
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge(
    "pixelpipe_alerts_firing",
    "1 for each alert rule firing now, as the cluster's alert evaluator sees it (exported by "
    "the worker that evaluates alerts).",
    ["rule", "severity"],
    registry=REGISTRY,
)
ALERT_EVALUATIONS = Counter(
    "pixelpipe_alert_evaluations_total",
    "Alert evaluations by this worker as the owner, by result (ok, failed).",
    ["result"],
    registry=REGISTRY,
)
ALERT_LAST_EVALUATION = Gauge(
    "pixelpipe_alert_last_evaluation_timestamp_seconds",
    "When this worker last evaluated the cluster's alerts successfully (epoch seconds).",
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "pixelpipe_heartbeats_total",
    "Heartbeats this worker published to the workers topic.",
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "pixelpipe_alert_webhook_total",
    "Alert notifications POSTed to PIXELPIPE_ALERT_WEBHOOK, by result (ok, failed, dropped).",
    ["result"],
    registry=REGISTRY,
)


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",)}


def metric_names() -> set[str]:
    """Every series name ``/metrics`` exports, whether or not it has a sample yet
    (``pixelpipe_attempts_total``, ``pixelpipe_processing_seconds_bucket``, ...)."""
    return {family.name + suffix for family in REGISTRY.collect()
            for suffix in _SUFFIXES.get(family.type, ("",))}


def exposition() -> bytes:
    return generate_latest(REGISTRY)
