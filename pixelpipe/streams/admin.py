"""Declare our topics at start-up (and the breaker table's changelog, which faust would
otherwise create itself).

Creation is idempotent: an existing topic is left exactly as it is (never altered), a missing
one is created with the configured partitions and config.

A created topic is not at once in every node's metadata: CreateTopics returns when the
controller has it, and each broker lists it once it has applied that metadata record (on three
KRaft nodes, two of the three still answered "unknown topic" right after the call returned).
A client that asks such a node sees no topic, or, in faust's consumer, a topic of 0
partitions. So ``ensure_topics`` returns only once every reachable node lists every topic it
was given with its partitions (``wait_for_metadata``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

from aiokafka.admin import NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable, ConfigError
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import (
    TopicSpec,
    co_partitioned_topics,
    min_insync_replicas,
    pipeline_topic_specs,
    worker_topic_specs,
)

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
    """Create the missing topics among ``specs``; return the names created, once every
    reachable node lists every topic of ``specs`` (``wait_for_metadata``; ``timeout_s``
    bounds both steps together).

    Replicas: ``settings.replication_factor`` (1 for the single local broker; 3 on a
    production cluster, ``PIXELPIPE_REPLICATION_FACTOR``); ``min.insync.replicas`` follows it
    (``topics.min_insync_replicas``: 2 from RF 3 on, else 1).
    """
    created, _partitions = await _ensure_topics(settings, specs, timeout_s=timeout_s)
    return created


async def _ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], *, timeout_s: float,
) -> tuple[list[str], dict[str, int]]:
    """``ensure_topics``, and the partitions every node lists for each topic."""
    specs = list(specs)
    began = time.monotonic()
    created = await _create_missing(settings, specs, timeout_s=timeout_s)
    # a topic we created must show the partitions we asked for; one that existed (or that
    # another worker created a moment ago) whatever it has, as long as every node agrees
    expected = {s.name: (s.partitions if s.name in created else None) for s in specs}
    partitions = await wait_for_metadata(
        settings, expected, timeout_s=max(1.0, timeout_s - (time.monotonic() - began)))
    return created, partitions


async def _create_missing(
    settings: Settings, specs: list[TopicSpec], *, timeout_s: float,
) -> list[str]:
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


def _listed(response: object, topics: list[str]) -> dict[str, int]:
    """A Metadata answer -> topic -> partitions (0: not listed, or listed with an error)."""
    body = response.to_object()  # type: ignore[attr-defined]
    counts = dict.fromkeys(topics, 0)
    for topic in body.get("topics", ()):
        if topic.get("topic") in counts and not topic.get("error_code"):
            counts[topic["topic"]] = len(topic.get("partitions") or ())
    return counts


async def _ask(client: AIOKafkaClient, node: int, topics: list[str],
               timeout_s: float) -> dict[str, int] | None:
    """What ``node`` itself lists for ``topics``; None when it cannot be reached in time."""
    try:
        # never auto-create: on a broker with auto.create.topics.enable a Metadata request
        # for a missing topic would create it with the broker's default partitions
        request = MetadataRequest(topics, allow_auto_topic_creation=False)
        response = await asyncio.wait_for(client.send(node, request), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.debug("node %s did not answer a Metadata request: %r", node, exc)
        return None
    return _listed(response, topics)


async def wait_for_metadata(
    settings: Settings,
    expected: Mapping[str, int | None],
    *,
    timeout_s: float = 30.0,
    request_timeout_s: float = 5.0,
    interval_s: float = 0.1,
) -> dict[str, int]:
    """Return once every node of the cluster that answers lists each topic of ``expected``
    with its partitions (``None``: any number, the same on every node); topic -> partitions.

    Each node is asked directly (a Metadata request sent to that node, not to a random one);
    a node that cannot be reached within ``request_timeout_s`` is not waited for (no client
    can read metadata from it either), but at least one node must answer. The node list is
    refreshed every round (a killed node leaves it once fenced, a restarted one comes back).
    ``BrokerUnavailable`` after ``timeout_s``, naming what each node was missing.
    """
    topics = sorted(expected)
    if not topics:
        return {}
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(request_timeout_s * 1000), **kafka.security_options(settings))
    deadline = time.monotonic() + timeout_s
    try:
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
        except kafka.CONNECT_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__})"
            ) from exc
        rounds = 0
        while True:
            rounds += 1
            nodes = sorted(b.nodeId for b in client.cluster.brokers())
            answers = await asyncio.gather(
                *(_ask(client, node, topics, request_timeout_s) for node in nodes))
            lagging: dict[int, list[str]] = {}
            seen: dict[str, set[int]] = {t: set() for t in topics}
            answered = [(node, a) for node, a in zip(nodes, answers, strict=True)
                        if a is not None]
            for node, listed in answered:
                for topic in topics:
                    want, got = expected[topic], listed[topic]
                    if got == 0 or (want is not None and got != want):
                        lagging.setdefault(node, []).append(f"{topic} ({got} of {want or '>0'}"
                                                            " partitions)")
                    seen[topic].add(got)
            disagree = sorted(t for t, counts in seen.items() if len(counts) > 1)
            if answered and not lagging and not disagree:
                if rounds > 1:
                    log.info("every node lists the %d topics (after %d rounds)", len(topics),
                             rounds)
                return {t: next(iter(seen[t])) for t in topics}
            if time.monotonic() >= deadline:
                unreachable = [n for n, a in zip(nodes, answers, strict=True) if a is None]
                what = "; ".join(f"node {n}: {', '.join(ts[:5])}" for n, ts in lagging.items())
                raise BrokerUnavailable(
                    f"the topics are not in every node's metadata after {timeout_s:g} s: "
                    f"{what or 'partitions differ between nodes: ' + ', '.join(disagree)}"
                    + (f" (nodes {unreachable} unreachable)" if unreachable else ""))
            await asyncio.sleep(interval_s)
            # the next round's node list (bounded: a dead node must not hold us up)
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(client.force_metadata_update(), request_timeout_s)
    finally:
        await client.close()


async def declare_worker_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """What a worker does before faust starts: the pipeline's topics and the breaker table's
    changelog (``topics.worker_topic_specs``), created when missing and listed by every node;
    a changelog whose partitions differ from its source topic's (made by hand or by an older
    version) is a ``ConfigError`` naming both, not an agent that crashes in a loop with
    faust's ``PartitionsMismatch``."""
    specs = worker_topic_specs(settings.topic_prefix, settings.app_id,
                               settings.upload_partitions,
                               tuple(name for name, _ in settings.retry_tiers))
    created, partitions = await _ensure_topics(settings, specs, timeout_s=timeout_s)
    for source, changelog in co_partitioned_topics(settings.topic_prefix, settings.app_id):
        if partitions[source] != partitions[changelog]:
            raise ConfigError(
                f"topic {source} has {partitions[source]} partition(s) but its table's "
                f"changelog {changelog} has {partitions[changelog]}: faust needs them equal "
                f"(delete the changelog, or give it {partitions[source]})")
    return created


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
