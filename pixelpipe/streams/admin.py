"""Declare our topics at start-up: faust creates only its internal ones.

Creation is idempotent: an existing topic is left exactly as it is (never altered), a missing
one is created with the configured partitions and config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import TopicSpec, min_insync_replicas, pipeline_topic_specs

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def _config(spec: TopicSpec, replication_factor: int = 1) -> dict[str, str]:
    config: dict[str, str] = {
        "min.insync.replicas": str(spec.min_insync_replicas
                                   or min_insync_replicas(replication_factor)),
    }
    if spec.compacted:
        config["cleanup.policy"] = "compact"
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    if spec.segment_ms is not None:
        config["segment.ms"] = str(spec.segment_ms)
    return config


async def ensure_topics(
    settings: Settings,
    specs: Iterable[TopicSpec],
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing topics among ``specs``; return the names created.

    Replicas: ``settings.replication_factor`` (1 for the single local broker; 3 on a
    production cluster, ``PIXELPIPE_REPLICATION_FACTOR``); ``min.insync.replicas`` follows it
    (``topics.min_insync_replicas``: 2 from RF 3 on, else 1).
    """
    specs = list(specs)
    replication_factor = settings.replication_factor
    admin = kafka.admin(settings, request_timeout_ms=int(timeout_s * 1000))
    await kafka.start(admin, settings, timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=replication_factor,
                    topic_configs=_config(s, replication_factor),
                )
                for s in missing
            ]
        )
        created = []
        for name, code, *_rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:  # another worker won the race: fine
                raise BrokerUnavailable(f"cannot create topic {name}: error code {code}")
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot declare topics: {exc}") from exc
    finally:
        await admin.close()


async def declare_pipeline_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the topics of the upload path that are missing, shaped by ``settings``."""
    return await ensure_topics(
        settings,
        pipeline_topic_specs(
            settings.topic_prefix,
            settings.upload_partitions,
            tuple(name for name, _ in settings.retry_tiers),
        ),
        timeout_s=timeout_s,
    )


async def declare_replay_ledger(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the compacted dead-letter replay ledger when missing (``dlq_replays_topic``).

    One partition (the ledger is small: one record per replayed letter), compacted (the latest
    state of each letter is what counts), never deleted by time.
    """
    from pixelpipe.streams.topics import dlq_replays_topic

    return await ensure_topics(
        settings,
        [TopicSpec(dlq_replays_topic(settings.topic_prefix), 1, compacted=True)],
        timeout_s=timeout_s,
    )


async def declare_control_topic(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the compacted control topic when missing (``control_topic``), shaped as the
    workers declare it: ``pixelpipe degrade`` may run before any worker has started, and a
    topic auto-created by the broker would be neither compacted nor single-partition."""
    from pixelpipe.streams.topics import control_topic

    spec, = (s for s in pipeline_topic_specs(settings.topic_prefix, settings.upload_partitions)
             if s.name == control_topic(settings.topic_prefix))
    return await ensure_topics(settings, [spec], timeout_s=timeout_s)
