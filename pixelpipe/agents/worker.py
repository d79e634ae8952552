"""Assemble a worker: the faust app, its topics, the image pool, the agents, the web views."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from pixelpipe.agents import metrics
from pixelpipe.agents.alerts import AlertEvaluator, register_alert_evaluator
from pixelpipe.agents.app import PipelineTopics, create_app, faust_topics
from pixelpipe.agents.breaker import register_breaker_agent
from pixelpipe.agents.dashboard import register_dashboard
from pixelpipe.agents.delivery import AttemptRouter
from pixelpipe.agents.faults import FaultInjector
from pixelpipe.agents.heartbeat import Heartbeat
from pixelpipe.agents.process import register_process_agent
from pixelpipe.agents.recent import ACTIVITY
from pixelpipe.agents.retry import register_retry_scheduler
from pixelpipe.agents.service_level import ServiceLevel
from pixelpipe.agents.telemetry import TelemetryReporter
from pixelpipe.agents.upload_processor import UploadProcessor
from pixelpipe.agents.uploads_feed import register_upload_feed
from pixelpipe.agents.web import bearer_guard, register_web_views
from pixelpipe.config import Settings
from pixelpipe.imaging import DEFAULT_LIMITS, ImagePool, Limits
from pixelpipe.imaging.codecs import codec_versions
from pixelpipe.policy.routing import RetryPolicy
from pixelpipe.storage import open_store
from pixelpipe.streams.admin import declare_worker_topics
from pixelpipe.streams.breaker_view import BreakerView
from pixelpipe.streams.cluster_status import ClusterReader
from pixelpipe.streams.control import ControlView
from pixelpipe.streams.profile import enforce_profile

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerParts:
    app: faust.App
    topics: PipelineTopics
    pool: ImagePool
    processor: UploadProcessor
    service: ServiceLevel
    heartbeat: Heartbeat
    alerts: AlertEvaluator


def limits_of(settings: Settings) -> Limits:
    """The configured decode limits; unset ones are the engine's defaults."""
    return dataclasses.replace(
        DEFAULT_LIMITS,
        **{name: value for name, value in (("max_pixels", settings.max_pixels),
                                           ("max_side", settings.max_side),
                                           ("max_bytes", settings.max_bytes))
           if value is not None},
    )


def policy_of(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        tiers=settings.retry_tiers,
        low_priority_retries=settings.low_priority_retries,
        max_age_s=settings.max_age_s,
    )


def build_worker(settings: Settings) -> WorkerParts:
    """The app with every agent and view attached; nothing is started yet."""
    app = create_app(settings)
    topics = faust_topics(app, settings)
    pool = ImagePool(
        workers=settings.workers,
        task_timeout_s=settings.task_timeout_s,
        max_tasks_per_child=settings.worker_max_tasks,
        memory_limit_mb=settings.worker_memory_mb or None,
        limits=limits_of(settings),
    )
    faults = FaultInjector.parse(settings.faults)
    breakers = BreakerView(settings, on_failure=app.crash,
                           on_undecodable=metrics.RECORDS_UNDECODABLE.labels("breaker").inc)
    control = ControlView(settings, on_failure=app.crash)
    service = ServiceLevel(settings, pool=pool, control=control)
    processor = UploadProcessor(
        open_store(settings), pool, limits_of(settings), faults,
        breakers=breakers,
        reporter=TelemetryReporter(topics.outcomes, settings.breaker.slow_call_s,
                                   on_call=service.record_call),
        levels=service.current, quality_cap=settings.degrade.quality_cap, control=control,
        max_deferrals=settings.degrade.max_deferrals,
    )
    register_breaker_agent(app, settings, topics)
    router = AttemptRouter(topics, policy_of(settings))
    # Longest an upload may legitimately take once started: every rendition up to the pool's
    # timeout, plus the delivery timeout. Past it the feed treats the head as a hole.
    finish_within_s = settings.task_timeout_s * 4 + 60
    feed, channel = register_upload_feed(app, settings, finish_within_s=finish_within_s)
    register_process_agent(app, channel, feed, processor, router)
    scheduler = register_retry_scheduler(app, settings, processor, router)
    service.feed, service.scheduler = feed, scheduler
    register_web_views(app, settings, scheduler, breakers, feed, service)
    heartbeat = Heartbeat(settings, topics.workers, feed=feed, service=service, pool=pool,
                          scheduler=scheduler, breakers=breakers)
    app.task(heartbeat.run)
    alerts = register_alert_evaluator(app, settings, topics, breakers, heartbeat.id)
    dashboard = DashboardData(settings, heartbeat)
    register_dashboard(app, dashboard, allowed=bearer_guard(settings))

    # faust types the handler with a positional-only sender
    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_readers(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # their Kafka clients would otherwise be reported "Unclosed" at exit
        for reader in (dashboard.reader, alerts.reader):
            await reader.close()
        for view in (breakers, control):
            await view.stop()

    @app.task  # type: ignore[untyped-decorator]
    async def service_level() -> None:
        await processor.start()  # the control view is caught up before the first evaluation
        await service.run()

    async def announce() -> None:  # runs once the worker has set up logging
        log.info(
            "pixelpipe worker: broker=%s data=%s workers=%d inflight=%d web=%s:%d tiers=%s%s",
            settings.broker, settings.data_location, settings.workers, settings.max_inflight,
            settings.web_host, settings.web_port, ",".join(n for n, _ in settings.retry_tiers),
            f" FAULTS={settings.faults}" if settings.faults else "",
        )
        if faults.active:
            log.warning("FAULT INJECTION IS ON: %s", settings.faults)
        # what decodes untrusted input, for the record (not in any lock file)
        log.info("codecs: %s", "; ".join(f"{k} {v}" for k, v in codec_versions().items()))

    app.task(announce)

    return WorkerParts(app=app, topics=topics, pool=pool, processor=processor, service=service,
                       heartbeat=heartbeat, alerts=alerts)


class DashboardData:
    """``/dashboard/data``: the cluster status (from the topics, at most every 3 s however many
    pages poll) and this worker's recent series."""

    def __init__(self, settings: Settings, heartbeat: Heartbeat, max_age_s: float = 3.0) -> None:
        self.heartbeat = heartbeat
        self.reader = ClusterReader(settings)
        self.max_age_s = max_age_s
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.max_age_s:
                await self.reader.start()
                self._cached = (now, await self.reader.status())
            status = self._cached[1]
        return {"status": status,
                "local": {"worker_id": self.heartbeat.id, "series": ACTIVITY.series()}}


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Declare the topics, then run a faust worker until SIGTERM/SIGINT. Blocks.

    The topics (the pipeline's and the breaker table's changelog) are in every node's
    metadata before faust starts: faust's table checks read partition counts from its
    consumer's metadata, where a topic a lagging node does not list yet has 0 partitions
    (``admin.declare_worker_topics``)."""
    settings.check_web_exposure()
    enforce_profile(settings, lambda: create_app(settings))  # before any topic is made
    asyncio.run(declare_worker_topics(settings))
    parts = build_worker(settings)
    worker = faust.Worker(parts.app, loglevel=loglevel, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        parts.pool.close()
        parts.processor.store.close()  # the S3 store's download cache
