"""The one place Kafka clients are built: every producer, consumer and admin client of ours.

Built from ``Settings`` (bootstrap servers, client id, and the connection's security: TLS with
the configured CA, SASL user/password/mechanism; ``security_options``, here and nowhere else),
with the defaults our guarantees need (aiokafka's own defaults are unsafe for us: ``acks=1``,
no idempotence, auto commit, ``auto_offset_reset="latest"``). An unencrypted connection to a
broker beyond loopback is refused here (``Settings.check_kafka_transport``). Connection
failures are translated into ``BrokerUnavailable`` once, here. faust builds its own clients
from the app configuration (``agents`` layer), with the same ``ssl_context``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from pixelpipe.config import ENV_KAFKA_CA_FILE, Settings
from pixelpipe.errors import BrokerUnavailable, ConfigError, TopicMissing

#: what a client's start (or a metadata call) raises when the broker cannot be reached
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    KafkaConnectionError, KafkaError, TimeoutError, OSError,
)
#: the above, or our translation of them: what a caller that can carry on without Kafka catches
FAILURES: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECT_ERRORS)
START_TIMEOUT_S = 30.0


def _common(settings: Settings, role: str) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers,
            "client_id": f"{settings.app_id}-{role}", **security_options(settings)}


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of a ``kafka+ssl://`` broker (None for ``kafka://``): the broker's
    certificate checked against ``kafka_ca_file`` (else the system's CAs), host name
    included. A CA file that cannot be loaded is a one-line ``ConfigError``."""
    if not settings.kafka_tls:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=settings.kafka_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "unreadable"
        raise ConfigError(f"{ENV_KAFKA_CA_FILE}={settings.kafka_ca_file}: not a PEM CA "
                          f"bundle ({reason})") from None
    return context


def security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security options for ``settings`` (``security_protocol``, ``ssl_context``,
    ``sasl_*``); refuses plaintext to a non-loopback broker unless allowed."""
    settings.check_kafka_transport()
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if settings.kafka_tls:
        options["ssl_context"] = ssl_context(settings)
    if settings.kafka_user:
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_user,
                       sasl_plain_password=settings.kafka_password)
    return options


def describe_connection(settings: Settings) -> str:
    """Where and how we connect, for messages: never the password."""
    how = settings.kafka_security_protocol
    if settings.kafka_user:
        how += f" {settings.kafka_sasl_mechanism} as {settings.kafka_user!r}"
    return f"{settings.bootstrap_servers} ({how})"


def producer(settings: Settings, role: str = "producer", **options: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica and never duplicates on retry."""
    config: dict[str, Any] = {"acks": "all", "enable_idempotence": True,
                              "request_timeout_ms": 30_000}
    config.update(options)
    return AIOKafkaProducer(**_common(settings, role), **config)


def consumer(
    settings: Settings, *topics: str, group: str | None, role: str = "consumer",
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer that commits nothing by itself and starts at the earliest offset unless
    told otherwise. ``group=None``: group-less (assign partitions yourself)."""
    config: dict[str, Any] = {"group_id": group, "enable_auto_commit": False,
                              "auto_offset_reset": "earliest"}
    config.update(options)
    return AIOKafkaConsumer(*topics, **_common(settings, role), **config)


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_common(settings, "admin"), **options)


async def start(
    client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient, settings: Settings,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Start ``client``, or stop it and raise ``BrokerUnavailable`` with a one-line reason."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except CONNECT_ERRORS as exc:
        await close(client)
        if settings.kafka_user or settings.kafka_tls:
            # aiokafka reports a refused password or certificate as a failed bootstrap
            raise BrokerUnavailable(
                f"cannot connect to Kafka at {describe_connection(settings)}: "
                f"{type(exc).__name__} (unreachable, the password refused, or a certificate "
                f"the CA file does not vouch for)") from exc
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__})"
        ) from exc


async def close(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient) -> None:
    """Stop a client whatever its kind (admin clients ``close``, the others ``stop``)."""
    if isinstance(client, AIOKafkaAdminClient):
        await client.close()
    else:
        await client.stop()


async def topic_partitions(
    settings: Settings, topic: str, *, timeout_s: float = START_TIMEOUT_S,
) -> list[TopicPartition]:
    """The partitions of ``topic`` from fresh cluster metadata; [] when it does not exist.

    Through the admin client's public ``describe_topics``: a consumer only knows the metadata
    of what it subscribed to, and asking it for more means reaching into its private client.
    """
    client = admin(settings, request_timeout_ms=int(timeout_s * 1000))
    await start(client, settings, timeout_s)
    try:
        described = await asyncio.wait_for(client.describe_topics([topic]), timeout_s)
    except CONNECT_ERRORS as exc:
        raise BrokerUnavailable(
            f"cannot read the metadata of {topic} ({type(exc).__name__})") from exc
    finally:
        await client.close()
    partitions = sorted(
        p["partition"] for t in described if t.get("topic") == topic and not t.get("error_code")
        for p in t.get("partitions", ())
    )
    return [TopicPartition(topic, p) for p in partitions]


async def existing_partitions(
    settings: Settings, topic: str, *, timeout_s: float = START_TIMEOUT_S,
) -> list[TopicPartition]:
    """Like ``topic_partitions``, but a missing topic is ``TopicMissing``."""
    partitions = await topic_partitions(settings, topic, timeout_s=timeout_s)
    if not partitions:
        raise TopicMissing(f"topic {topic} does not exist (has a worker declared it?)")
    return partitions
