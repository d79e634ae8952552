"""The production profile (``PIXELPIPE_PROFILE=production``): settings that could lose data,
refused at worker start-up, and the effective settings ``pixelpipe check`` prints.

What "effective" means here: the producers' ``acks`` and idempotence as the clients are really
built (pixelpipe's own from ``streams/kafka.py``; faust's from the app configuration of
``agents/app.py``), and each existing topic's replicas and ``min.insync.replicas`` **as the
broker reports them** (``describe_topics`` / ``describe_configs``), not as we asked for them:
an existing topic is never altered, so what was created by an older version or by hand counts.

The rules (``problems``), each one clause of a one-line ``ConfigError``:

- fewer than 3 brokers in the cluster's metadata;
- ``PIXELPIPE_REPLICATION_FACTOR`` below 3 (the replicas of every topic pixelpipe creates);
- an existing topic of this pipeline (ours, faust's own: table changelogs, the assignor's
  leader topic, and ``__consumer_offsets``) with fewer than 3 replicas or a
  ``min.insync.replicas`` below 2;
- faust creating its own topics with fewer than 3 replicas (``topic_replication_factor``);
- a producer whose ``acks`` is not ``all``, or that is not idempotent;
- a local blob store (``PIXELPIPE_DATA`` not ``s3://...``): another machine cannot read it;
- an unencrypted broker connection (``kafka://``: PLAINTEXT or SASL_PLAINTEXT) unless the
  operator said the network is trusted (``PIXELPIPE_KAFKA_ALLOW_PLAINTEXT=1``): uploads and
  credentials would cross the network in the clear. Loopback is no exception here: a
  production worker is never meant to share a machine with its broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pixelpipe.config import (
    ENV_DATA,
    ENV_KAFKA_ALLOW_PLAINTEXT,
    ENV_REPLICATION_FACTOR,
    TLS_SCHEME,
    Settings,
)
from pixelpipe.errors import BrokerUnavailable, ConfigError
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import (
    dlq_replays_topic,
    min_insync_replicas,
    pipeline_topic_specs,
)

PRODUCTION = "production"
#: what production needs
MIN_REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
#: the broker's own topic whose replication matters to us (the groups' committed offsets)
OFFSETS_TOPIC = "__consumer_offsets"
_UNKNOWN_TOPIC = 3
#: ``security_protocol`` values that encrypt the connection
ENCRYPTED_PROTOCOLS = ("SSL", "SASL_SSL")
#: DescribeConfigs ``config_source`` -> a word (KIP-226)
_SOURCES = {1: "topic", 2: "broker", 3: "broker", 4: "broker", 5: "default", 6: "broker"}


@dataclass(frozen=True, slots=True)
class ProducerInfo:
    """One producer's effective delivery settings."""

    name: str
    #: what it sends
    sends: str
    #: ``all``, ``1``, ``0`` (``-1`` is reported as ``all``) or ``unknown``
    acks: str
    #: None: could not be told
    idempotent: bool | None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic as the broker reports it."""

    name: str
    partitions: int
    #: the fewest replicas of any partition (the replication factor)
    replication_factor: int
    #: the topic's effective ``min.insync.replicas``; None: not reported
    min_insync_replicas: int | None
    #: where that value comes from: ``topic`` (set on the topic), ``broker``, ``default``
    min_isr_source: str
    #: the fewest in-sync replicas of any partition right now
    in_sync: int
    #: partitions without a leader right now
    offline: int = 0


@dataclass(frozen=True, slots=True)
class Effective:
    """Everything the production rules look at."""

    profile: str
    #: ``PIXELPIPE_REPLICATION_FACTOR``, and the ``min.insync.replicas`` it implies
    replication_factor: int
    min_insync_replicas: int
    #: ``s3://...`` or ``local:<dir>``
    blob_store: str
    producers: tuple[ProducerInfo, ...]
    topics: tuple[TopicInfo, ...]
    #: expected topics not created yet (the worker creates them with the settings above)
    missing_topics: tuple[str, ...] = ()
    #: faust's ``topic_replication_factor`` (its changelogs, its assignor topic); None: unknown
    faust_topic_replication: int | None = None
    #: brokers in the cluster's metadata
    brokers: int = 0
    bootstrap: str = ""
    #: aiokafka's ``security_protocol`` of every client (``SASL_SSL``, ``SSL``,
    #: ``SASL_PLAINTEXT``, ``PLAINTEXT``); ``unknown`` when not told
    security_protocol: str = "unknown"
    #: ``PIXELPIPE_KAFKA_ALLOW_PLAINTEXT``: the operator accepts an unencrypted connection
    plaintext_allowed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the rules


def problems(effective: Effective) -> list[str]:
    """Every reason ``effective`` is not fit for production, one short clause each (pure)."""
    out: list[str] = []
    if effective.brokers < MIN_REPLICATION_FACTOR:
        out.append(f"the cluster has {effective.brokers} broker(s) in its metadata (production "
                   f"needs {MIN_REPLICATION_FACTOR} or more)")
    if effective.replication_factor < MIN_REPLICATION_FACTOR:
        out.append(f"{ENV_REPLICATION_FACTOR}={effective.replication_factor} (topics need "
                   f"{MIN_REPLICATION_FACTOR} replicas or more)")
    if (effective.faust_topic_replication is not None
            and effective.faust_topic_replication < MIN_REPLICATION_FACTOR):
        out.append(f"faust creates its own topics with {effective.faust_topic_replication} "
                   f"replica(s) (topic_replication_factor < {MIN_REPLICATION_FACTOR})")
    for topic in effective.topics:
        if topic.replication_factor < MIN_REPLICATION_FACTOR:
            out.append(f"topic {topic.name} has {topic.replication_factor} replica(s) "
                       f"(< {MIN_REPLICATION_FACTOR})")
        if topic.min_insync_replicas is None:
            out.append(f"topic {topic.name}: min.insync.replicas not reported by the broker")
        elif topic.min_insync_replicas < MIN_INSYNC_REPLICAS:
            out.append(f"topic {topic.name} has min.insync.replicas="
                       f"{topic.min_insync_replicas} (< {MIN_INSYNC_REPLICAS})")
    for producer in effective.producers:
        if producer.acks != "all":
            out.append(f"the {producer.name} producer has acks={producer.acks} (not all)")
        if producer.idempotent is False:
            out.append(f"the {producer.name} producer is not idempotent")
        elif producer.idempotent is None:
            out.append(f"the {producer.name} producer's idempotence is unknown")
    if effective.security_protocol not in ENCRYPTED_PROTOCOLS and not effective.plaintext_allowed:
        out.append(f"the broker connection is {effective.security_protocol} (production needs "
                   f"{TLS_SCHEME}://host:port, or {ENV_KAFKA_ALLOW_PLAINTEXT}=1 on a network "
                   "you trust)")
    if not effective.blob_store.startswith("s3://"):
        out.append(f"{ENV_DATA} is a local blob store ({effective.blob_store.removeprefix('local:')}"
                   "; production needs s3://bucket/prefix)")
    return out


def error_for(effective: Effective) -> ConfigError | None:
    """The one-line ``ConfigError`` naming every problem, or None when there is none."""
    found = problems(effective)
    if not found:
        return None
    return ConfigError(f"production profile: {len(found)} problem(s): " + "; ".join(found))


# --------------------------------------------------------------------------- what is effective


def blob_store_of(settings: Settings) -> str:
    """``s3://...`` when ``PIXELPIPE_DATA`` names an S3 store, else ``local:<dir>``. Anything
    not starting with ``s3://`` is local."""
    url = str(getattr(settings, "data_url", "") or "").strip()
    if url.lower().startswith("s3://"):
        return url
    return f"local:{settings.data_dir}"


def normalize_acks(acks: Any) -> str:
    if acks in (-1, "-1", "all"):
        return "all"
    if acks in (0, 1, "0", "1"):
        return str(acks)
    return "unknown"


def producer_info(name: str, sends: str, producer: Any) -> ProducerInfo:
    """The delivery settings of a built (not started) aiokafka producer, read from the client
    itself: aiokafka keeps ``acks`` in its sender and makes a transaction manager only for an
    idempotent producer. Attributes it does not have are reported ``unknown``."""
    sender = getattr(producer, "_sender", None)
    acks = normalize_acks(getattr(sender, "_acks", None))
    idempotent = (getattr(producer, "_txn_manager", None) is not None
                  if hasattr(producer, "_txn_manager") else None)
    return ProducerInfo(name=name, sends=sends, acks=acks, idempotent=idempotent)


async def pixelpipe_producer(settings: Settings) -> ProducerInfo:
    """The producer every pixelpipe client builds (``kafka.producer``), as built."""
    client = kafka.producer(settings, "profile-check")
    try:
        return producer_info("pixelpipe", "uploads, replays, backfills, breaker and degrade controls",
                             client)
    finally:
        await client.stop()  # never started: nothing to flush


#: what faust's producer sends for the worker
FAUST_SENDS = "processed events, dead letters, retries, outcomes, heartbeats, alerts"


async def faust_producer(app: Any) -> ProducerInfo:
    """faust's producer for ``app`` (a faust App, not started), as faust builds it: its own
    ``Producer`` service makes the aiokafka client (``_new_producer``: the app's producer
    settings plus what faust adds), which is read like ours and thrown away. faust adds
    idempotence only inside a worker with ``processing_guarantee="exactly_once"``
    (transactions), which a client built outside a worker does not show: counted as well."""
    guarantee = getattr(app.conf, "processing_guarantee", "")
    exactly_once = str(getattr(guarantee, "value", guarantee)) == "exactly_once"
    try:
        client = app.producer._new_producer()
    except Exception:  # noqa: BLE001 - another faust: say unknown rather than guess
        acks = normalize_acks(getattr(app.conf, "producer_acks", None))
        return ProducerInfo("faust", FAUST_SENDS, acks, True if exactly_once else None)
    try:
        info = producer_info("faust", FAUST_SENDS, client)
    finally:
        await client.stop()  # never started
    if exactly_once and not info.idempotent:
        info = replace(info, idempotent=True)
    return info


def expected_topics(settings: Settings) -> list[str]:
    tiers = tuple(name for name, _ in settings.retry_tiers)
    names = [s.name for s in pipeline_topic_specs(settings.topic_prefix,
                                                  settings.upload_partitions, tiers)]
    return [*names, dlq_replays_topic(settings.topic_prefix)]


def _is_ours(settings: Settings, name: str, expected: set[str]) -> bool:
    """Our topics, faust's own for this app (``<app id>-...``), and the committed offsets."""
    return name in expected or name.startswith(f"{settings.app_id}-") or name == OFFSETS_TOPIC


def _entries(response: Any) -> Iterable[dict[str, Any]]:
    body = response.to_object() if hasattr(response, "to_object") else response
    return list(body.get("resources", ()))


def topic_infos(described: Sequence[dict[str, Any]],
                configs: Sequence[dict[str, Any]]) -> list[TopicInfo]:
    """``describe_topics`` and ``describe_configs`` (resources) answers -> ``TopicInfo``s (pure,
    so the rules can be tested on fake answers)."""
    min_isr: dict[str, tuple[int | None, str]] = {}
    for resource in configs:
        if resource.get("error_code"):
            continue
        for entry in resource.get("config_entries", ()):
            if entry.get("config_names") == "min.insync.replicas":
                value = entry.get("config_value")
                source = _SOURCES.get(int(entry.get("config_source", 0) or 0), "broker")
                min_isr[resource["resource_name"]] = (
                    int(value) if value not in (None, "") else None, source)
    out = []
    for topic in described:
        if not topic.get("partitions"):  # unknown (deleted meanwhile), or not described
            continue
        parts = topic["partitions"]
        value, source = min_isr.get(topic["topic"], (None, "unknown"))
        out.append(TopicInfo(
            name=topic["topic"],
            partitions=len(parts),
            replication_factor=min(len(p.get("replicas", ())) for p in parts),
            min_insync_replicas=value,
            min_isr_source=source,
            in_sync=min(len(p.get("isr", ())) for p in parts),
            offline=sum(1 for p in parts if p.get("leader", -1) < 0),
        ))
    return sorted(out, key=lambda t: t.name)


async def _described(client: Any, names: list[str], settle_s: float = 10.0) -> list[Any]:
    """``describe_topics``, again for a while as long as some topic has no partitions yet (a
    topic created a moment ago answers LEADER_NOT_AVAILABLE until its leaders are elected)."""
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        described = list(await client.describe_topics(names))
        unsettled = [t for t in described
                     if t.get("error_code") not in (0, _UNKNOWN_TOPIC) or not t.get("partitions")]
        if not unsettled or asyncio.get_running_loop().time() >= deadline:
            return described
        await asyncio.sleep(0.3)


async def _configs(client: Any, names: list[str], settle_s: float = 10.0) -> list[Any]:
    """The topics' ``min.insync.replicas`` (``describe_configs`` resources), asked again for a
    while for the topics a broker answered with an error (one whose metadata has not caught up
    with a topic created a moment ago answers UNKNOWN_TOPIC_OR_PARTITION)."""
    deadline = asyncio.get_running_loop().time() + settle_s
    good: dict[str, Any] = {}
    pending = list(names)
    while True:
        responses = await client.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None})
            for name in pending
        ])
        failed: dict[str, Any] = {}
        for resource in (r for response in responses for r in _entries(response)):
            (failed if resource.get("error_code") else good)[resource["resource_name"]] = resource
        pending = [n for n in pending if n not in good]
        if not pending or asyncio.get_running_loop().time() >= deadline:
            return [*good.values(), *failed.values()]
        await asyncio.sleep(0.3)


async def describe_topics(
    settings: Settings, *, timeout_s: float = 30.0, attempts: int = 4,
) -> tuple[list[TopicInfo], list[str], int]:
    """This pipeline's existing topics as the broker reports them, the expected ones missing,
    and the brokers in the metadata. Retried: after a node dies the admin client keeps
    talking to it for a while."""
    expected = expected_topics(settings)
    last: BaseException | None = None
    for attempt in range(attempts):
        client = kafka.admin(settings, request_timeout_ms=int(timeout_s * 1000))
        try:
            await kafka.start(client, settings, timeout_s)
            names = sorted(n for n in await client.list_topics()
                           if _is_ours(settings, n, set(expected)))
            cluster = await client.describe_cluster()
            if not names:
                return [], expected, len(cluster.get("brokers", ()))
            described = await _described(client, names)
            resources = await _configs(client, names)
            infos = topic_infos(described, resources)
            present = {t.name for t in infos}
            return infos, [n for n in expected if n not in present], len(cluster.get("brokers", ()))
        except kafka.FAILURES as exc:
            last = exc
            await asyncio.sleep(min(0.5 * 2 ** attempt, 3.0))
        finally:
            await client.close()
    raise BrokerUnavailable(
        f"cannot describe the topics at {settings.bootstrap_servers} "
        f"({type(last).__name__ if last else 'no answer'})") from last


async def effective(settings: Settings, *, faust_app: Any = None,
                    timeout_s: float = 30.0) -> Effective:
    """The effective settings: producers as built, topics as the broker reports them.
    ``faust_app``: the worker's faust App (built from ``settings``, not started), whose
    producer and topic replication are read too."""
    producers = [await pixelpipe_producer(settings)]
    faust_rf: int | None = None
    if faust_app is not None:
        producers.append(await faust_producer(faust_app))
        faust_rf = getattr(faust_app.conf, "topic_replication_factor", None)
    topics, missing, brokers = await describe_topics(settings, timeout_s=timeout_s)
    return Effective(
        profile=settings.profile,
        replication_factor=settings.replication_factor,
        min_insync_replicas=min_insync_replicas(settings.replication_factor),
        blob_store=blob_store_of(settings),
        producers=tuple(producers),
        topics=tuple(topics),
        missing_topics=tuple(missing),
        faust_topic_replication=faust_rf,
        brokers=brokers,
        bootstrap=settings.bootstrap_servers,
        security_protocol=settings.kafka_security_protocol,
        plaintext_allowed=settings.kafka_allow_plaintext,
    )


def enforce_profile(settings: Settings, faust_app: Callable[[], Any] | None = None) -> None:
    """The worker's start-up check: nothing to do unless ``profile`` is production; then a
    one-line ``ConfigError`` naming every problem. ``faust_app``: builds the faust App the
    worker would run (called only in production; never started). Run it before the worker
    declares any topic, so a refused start leaves nothing behind."""
    if settings.profile != PRODUCTION:
        return
    app = faust_app() if faust_app is not None else None
    error = error_for(asyncio.run(effective(settings, faust_app=app)))
    if error is not None:
        raise error
