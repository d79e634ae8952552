"""The Faust app: one place that turns ``Settings`` into faust configuration and topics.

Settings chosen against faust's defaults, and why (FAUST-NOTES.md):

- ``producer_acks=-1`` and a 30 s ``producer_request_timeout`` (default 1200 s): a send that
  cannot be delivered must surface quickly, so the worker stops instead of hanging.
- ``stream_buffer_maxsize`` small: an upload costs ~100 ms of CPU, a 4,096-event buffer would
  only lengthen redelivery after a crash and risk the max-poll-interval leave.
- ``web_bind`` loopback and ``web_tables_enabled=False`` unless configured: faust binds
  0.0.0.0 and serves table contents by default.
- ``consumer_auto_offset_reset="earliest"``: a new consumer group must not skip uploads that
  were published before its first worker started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from pixelpipe.config import Settings
from pixelpipe.streams.topics import (
    alerts_topic,
    breaker_topic,
    dlq_topic,
    outcomes_topic,
    pipeline_topic_specs,
    processed_topic,
    retry_topic,
    uploads_topic,
    workers_topic,
)


@dataclass(frozen=True, slots=True)
class PipelineTopics:
    """The faust topic objects of the upload path (raw bytes in and out: our codec decodes)."""

    uploads: Any
    processed: Any
    dlq: Any
    #: tier name -> topic, in tier order
    retries: dict[str, Any]
    outcomes: Any
    breaker: Any
    #: compacted heartbeats; its one partition's owner evaluates the cluster's alerts
    workers: Any
    alerts: Any


def create_app(settings: Settings) -> faust.App:
    """A faust App configured from ``settings``. Agents are attached by ``pixelpipe.agents``."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=settings.broker,
        datadir=str(settings.state_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.upload_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_request_timeout=30.0,
        broker_request_timeout=90.0,
        broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        # Pool tasks are bounded by the task timeout; a rebalance waits at most that long.
        broker_rebalance_timeout=max(60.0, settings.task_timeout_s * 2),
        broker_max_poll_interval=max(300.0, settings.task_timeout_s * 4),
        stream_buffer_maxsize=max(32, settings.max_inflight * 4),
        stream_processing_timeout=settings.task_timeout_s * 2,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_tables_enabled=False,
        web_graph_enabled=False,
        worker_redirect_stdouts=False,
    )


def faust_topics(app: faust.App, settings: Settings) -> PipelineTopics:
    """The topic objects, named by the pure functions in ``topics`` and shaped (partitions)
    by ``topics.pipeline_topic_specs``, the one place topic shapes are written."""
    prefix = settings.topic_prefix
    tiers = tuple(name for name, _delay in settings.retry_tiers)
    partitions = {spec.name: spec.partitions
                  for spec in pipeline_topic_specs(prefix, settings.upload_partitions, tiers)}

    def topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions[name],
        )

    return PipelineTopics(
        uploads=topic(uploads_topic(prefix)),
        processed=topic(processed_topic(prefix)),
        dlq=topic(dlq_topic(prefix)),
        retries={name: topic(retry_topic(name, prefix)) for name in tiers},
        outcomes=topic(outcomes_topic(prefix)),
        breaker=topic(breaker_topic(prefix)),
        workers=topic(workers_topic(prefix)),
        alerts=topic(alerts_topic(prefix)),
    )
