"""The cluster's alert evaluator: one owner, rules from ``policy.alerts``, events on
``pixelpipe.alerts``, and the webhook.

Every worker subscribes (faust agent) to the one-partition ``pixelpipe.workers`` topic; the
worker faust assigns it to is the owner, exactly as the outcomes partition makes one breaker
agent. Only the owner evaluates, every ``PIXELPIPE_ALERT_INTERVAL``, from the topics alone
(``streams.cluster_status.ClusterReader``: heartbeats, committed and end offsets, dead
letters) and its own view of the breakers. A new owner first reads which alerts are firing on
``pixelpipe.alerts``, so a takeover neither repeats them nor leaves them unresolved.

Each transition's delivery is awaited; a failed evaluation is tried again at the next
interval (alerts are telemetry about the pipeline, never on its data path). Reading the
sample is bounded (``SAMPLE_TIMEOUT_S``; each admin read retries on another node within
``ClusterReader``'s own bounds, so one dead broker does not fail the evaluation), and a failed
evaluation is visible: a warning line with the reason (the traceback at the first of a run of
failures), ``pixelpipe_alert_evaluations_total{result="failed"}`` and the age of
``pixelpipe_alert_last_evaluation_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson

from pixelpipe.agents import metrics
from pixelpipe.agents.app import PipelineTopics
from pixelpipe.agents.notify import WebhookNotifier
from pixelpipe.config import Settings
from pixelpipe.policy.alerts import (
    SEVERITY,
    AlertEvent,
    AlertRules,
    ClusterSample,
    WorkerSample,
)
from pixelpipe.schemas.names import ALERT_SCHEMA
from pixelpipe.schemas.times import epoch_iso, parse_time
from pixelpipe.streams.breaker_view import BreakerView
from pixelpipe.streams.cluster_status import ClusterReader
from pixelpipe.streams.topics import workers_topic

log = logging.getLogger(__name__)

#: bound on reading one evaluation's sample (its admin reads retry within their own bounds)
SAMPLE_TIMEOUT_S = 30.0


def alert_record(event: AlertEvent, now: float, evaluator: str) -> dict[str, Any]:
    return {
        "schema": ALERT_SCHEMA, "id": event.id, "rule": event.rule, "severity": event.severity,
        "state": event.state, "subject": event.subject,
        "value": None if event.value is None else round(event.value, 6),
        "threshold": event.threshold, "since": epoch_iso(event.since, "milliseconds"),
        "at": epoch_iso(now, "milliseconds"), "summary": event.summary, "evaluator": evaluator,
    }


def worker_samples(rows: list[dict[str, Any]]) -> tuple[WorkerSample, ...]:
    out = []
    for row in rows:
        try:
            out.append(WorkerSample(
                id=str(row["id"]), seen_at=parse_time(str(row["at"])).timestamp(),
                interval_s=float(row.get("interval_s") or 5.0),
                health=float(row.get("health", 1.0)),
                attempts={k: int(v) for k, v in dict(row.get("attempts") or {}).items()},
            ))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


class AlertEvaluator:
    def __init__(self, app: faust.App, settings: Settings, topics: PipelineTopics,
                 breakers: BreakerView | None, evaluator_id: str) -> None:
        self.app, self.settings, self.topics = app, settings, topics
        self.breakers = breakers
        self.evaluator_id = evaluator_id
        self.rules = AlertRules(settings.monitor)
        self.notifier = (WebhookNotifier(settings.monitor.webhook)
                         if settings.monitor.webhook else None)
        self.reader = ClusterReader(settings)
        self.owner = False
        self.evaluations = 0
        #: failed evaluations in a row (0 after a success), and the last one's reason
        self.failures = 0
        self.last_failure: str | None = None
        self.sample_timeout_s = SAMPLE_TIMEOUT_S

    def owns(self) -> bool:
        consumer = self.app.consumer if self.app.started else None
        topic = workers_topic(self.settings.topic_prefix)
        return consumer is not None and any(
            tp.topic == topic for tp in (consumer.assignment() or ()))

    async def sample(self, now: float) -> ClusterSample:
        await self.reader.start()
        lag = await self.reader.lag(now, ages=False)
        refusing: dict[str, float] = {}
        if self.breakers is not None:
            for processor, record in self.breakers.records.items():
                if self.breakers.is_refusing(processor):
                    refusing[processor] = float(record.get("since") or now)
        return ClusterSample(
            now=now,
            workers=worker_samples(await self.reader.workers(now)),
            partitions={row["partition"]: (row["committed"], row["end"])
                        for row in lag["partitions"]},
            refusing_since=refusing,
            dead_letters=await self.reader.dead_letters_written(),
        )

    async def evaluate(self, now: float | None = None) -> list[dict[str, Any]]:
        """One evaluation as the owner: the transitions it published."""
        now = time.time() if now is None else now
        if not self.owner:  # just became the owner: carry on from what is firing
            self.rules = AlertRules(self.settings.monitor)
            await self.reader.start()
            self.rules.restore({
                str(a["id"]): parse_time(str(a["since"])).timestamp()
                for a in await self.reader.alerts() if a.get("id") and a.get("since")})
            self.owner = True
            log.info("alert evaluator: this worker evaluates the cluster's alerts (%d firing)",
                     len(self.rules.firing()))
        try:
            sample = await asyncio.wait_for(self.sample(now), self.sample_timeout_s)
        except TimeoutError:
            raise TimeoutError(f"reading the cluster took over {self.sample_timeout_s:g} s"
                               ) from None
        events = self.rules.evaluate(sample)
        self.evaluations += 1
        published = []
        for event in events:
            record = alert_record(event, now, self.evaluator_id)
            future = await self.topics.alerts.send(key=event.id.encode(),
                                                   value=orjson.dumps(record))
            await future
            level = logging.WARNING if event.state == "firing" else logging.INFO
            log.log(level, "alert %s %s (%s): %s", event.id, event.state, event.severity,
                    event.summary)
            if self.notifier is not None:
                self.notifier.notify(record)
            published.append(record)
        metrics.ALERTS_FIRING.clear()
        for alert_id in self.rules.firing():
            rule = alert_id.partition(":")[0]
            metrics.ALERTS_FIRING.labels(alert_id, SEVERITY.get(rule, "warning")).set(1)
        return published

    async def tick(self) -> bool:
        """One evaluation as the owner, its failure counted and logged (never raised); True
        when it succeeded."""
        interval = self.settings.monitor.alert_interval_s
        try:
            await self.evaluate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
            metrics.ALERT_EVALUATIONS.labels("failed").inc()
            log.warning("alert evaluation failed (%d in a row; next in %g s): %s",
                        self.failures, interval, self.last_failure,
                        exc_info=self.failures == 1)
            return False
        if self.failures:
            log.info("alert evaluation works again after %d failed", self.failures)
        self.failures, self.last_failure = 0, None
        metrics.ALERT_EVALUATIONS.labels("ok").inc()
        metrics.ALERT_LAST_EVALUATION.set(time.time())
        return True

    async def run(self) -> None:
        interval = self.settings.monitor.alert_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self.owns():
                if self.owner:
                    log.info("alert evaluator: no longer the owner")
                    metrics.ALERTS_FIRING.clear()
                self.owner = False
                continue
            await self.tick()


def register_alert_evaluator(app: faust.App, settings: Settings, topics: PipelineTopics,
                             breakers: BreakerView | None, evaluator_id: str) -> AlertEvaluator:
    evaluator = AlertEvaluator(app, settings, topics, breakers, evaluator_id)

    async def heartbeats(stream: Any) -> None:
        # Subscribing is what makes one worker the owner; the heartbeats themselves are
        # read from the compacted topic at each evaluation (a new owner sees them all).
        async for _value in stream:
            pass

    app.agent(topics.workers, name="pixelpipe.alerts", concurrency=1)(heartbeats)
    app.task(evaluator.run)
    return evaluator
