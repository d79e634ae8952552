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
- faust's own producer (every processed event, retry record and dead letter) is made
  **idempotent**: faust turns idempotence on only under ``exactly_once``, so a retried send
  could write an outcome twice. ``IdempotentTransport`` (faust's aiokafka transport, its
  producer made idempotent) is registered as the ``pixelpipe-kafka`` scheme of faust's
  transport registry, and the app's broker URLs use that scheme.
- ``topic_replication_factor``: the topics faust creates itself (the breaker table's
  changelog, the assignor's) get ``PIXELPIPE_REPLICATION_FACTOR`` replicas, not faust's 1.
- ``broker_session_timeout=10.0``, ``broker_heartbeat_interval=3.0`` (faust's defaults: 60 s
  and 3 s; this was 30 s): a member killed with -9 holds its faust partitions (the breaker
  agent's outcomes and table, the alert evaluator's heartbeats) until the broker expires its
  session, and a replacement's first rebalance waits for that (the JoinGroup completes once
  every known member has rejoined or expired). faust's consumer heartbeats from a thread of
  its own (``faust/transport/drivers/aiokafka.py``: ``AIOKafkaConsumerThread``, a
  ``ConsumerThread`` running its own event loop), rebalance callbacks included, so 10 s is
  no tighter for it than for the uploads feed and the retry scheduler, whose 10 s sessions
  beat on the main loop.
- ``broker_credentials``: a ``kafka+ssl://`` broker and/or a SASL user become faust's
  ``SASLCredentials`` (user, password, mechanism, and the TLS context ``streams.kafka`` builds
  for our own clients) or ``SSLCredentials``; faust hands them to every client it makes
  (producer, consumer, admin). The broker URLs keep the ``pixelpipe-kafka`` scheme: the
  protocol comes from the credentials, not the URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
import mode
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from pixelpipe.config import Settings
from pixelpipe.streams import kafka
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


class IdempotentProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer with ``enable_idempotence`` (and so ``acks=all``) always."""

    def _settings_extra(self) -> Any:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class IdempotentTransport(faust_aiokafka.Transport):
    Producer = IdempotentProducer


PRODUCER_SCHEME = "pixelpipe-kafka"
drivers.TRANSPORTS.aliases[PRODUCER_SCHEME] = f"{__name__}:IdempotentTransport"


def producer_urls(settings: Settings) -> list[str]:
    """The broker list for the faust app, on the idempotent transport's scheme."""
    return [f"{PRODUCER_SCHEME}://{server}" for server in settings.bootstrap_servers.split(",")]


def broker_credentials(settings: Settings) -> Any:
    """faust's credentials for ``settings``: ``SASLCredentials`` with a SASL user (over TLS for
    ``kafka+ssl://``), ``SSLCredentials`` for TLS alone, None for plaintext. Refuses plaintext
    to a broker beyond loopback unless allowed (``Settings.check_kafka_transport``)."""
    settings.check_kafka_transport()
    context = kafka.ssl_context(settings)
    if settings.kafka_user:
        # SASL_SSL when there is a context, SASL_PLAINTEXT otherwise (faust.auth)
        return faust.SASLCredentials(username=settings.kafka_user,
                                     password=settings.kafka_password, ssl_context=context,
                                     mechanism=settings.kafka_sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class _StartWithApp(mode.Service):
    """Adds ``fun()`` to the app's futures when the app starts its services (see below)."""

    def __init__(self, app: faust.App, fun: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self._app, self._fun = app, fun

    async def on_start(self) -> None:
        self._app.add_future(self._fun())


def start_with_app(app: faust.App, fun: Callable[[], Awaitable[None]]) -> None:
    """Run ``fun()`` as one of ``app``'s futures from the moment the app starts, instead of
    after faust's first rebalance as ``@app.task`` does.

    faust starts app tasks in ``App.on_started`` only once ``tables.
    wait_until_recovery_completed()`` returns (``faust/app/base.py``,
    ``on_started_init_extra_tasks``), i.e. after the app's consumer group has rebalanced and
    the tables recovered, which after a kill -9 waits out the dead member's faust session.
    Work that does not depend on faust's group (the uploads feed: its own consumer group; the
    process agent it feeds reads a channel, not a topic) need not wait. The future is the
    app's, as an app task's is, so it is stopped as one: cancelled with the app's futures
    after the app's services (agents, producer) have stopped. ``fun`` must wait itself for
    what it needs (the feed waits for the process agent's actor).
    """
    # a child added before start comes before the ones faust adds at start (mode's
    # ``Service._actually_start``): it starts first and stops last
    app.add_dependency(_StartWithApp(app, fun))


def create_app(settings: Settings) -> faust.App:
    """A faust App configured from ``settings``. Agents are attached by ``pixelpipe.agents``."""
    credentials = broker_credentials(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        # faust's aiokafka transport with an idempotent producer (see the module docstring)
        broker=producer_urls(settings),
        broker_credentials=credentials,
        topic_replication_factor=settings.replication_factor,
        datadir=str(settings.state_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.upload_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_request_timeout=30.0,
        broker_request_timeout=90.0,
        broker_session_timeout=10.0,
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
