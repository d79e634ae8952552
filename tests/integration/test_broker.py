"""The session broker really works: topics, acks=all produce, consume, group offset commits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

PARTITIONS = 3
MESSAGES = 30


async def create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    name = f"test-broker-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        # CreateTopics returns once the controller committed it; the broker's metadata cache
        # may lag a few ms behind, so wait until the topic is described with all partitions.
        for _ in range(100):
            described = await admin.describe_topics([name])
            if described[0]["error_code"] == 0 and len(described[0]["partitions"]) == partitions:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"topic {name} not visible after creation: {described}")
    finally:
        await admin.close()
    return name


async def delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> dict[int, list[int]]:
    """Send with acks=all (idempotent); returns partition -> offsets acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    acked: dict[int, list[int]] = {}
    try:
        for i, value in enumerate(payloads):
            meta = await producer.send_and_wait(topic, value, key=str(i % 7).encode())
            assert meta.topic == topic
            acked.setdefault(meta.partition, []).append(meta.offset)
    finally:
        await producer.stop()
    return acked


async def consume(consumer: AIOKafkaConsumer, count: int, timeout: float = 30.0) -> list[bytes]:
    got: list[bytes] = []

    async def drain() -> None:
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(r.value for r in records if r.value is not None)

    await asyncio.wait_for(drain(), timeout)
    return got


def group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def test_produce_consume_commit(kafka_bootstrap: str) -> None:
    topic = await create_topic(kafka_bootstrap)
    group = f"test-broker-{uuid.uuid4().hex}"
    payloads = [f"message-{i}".encode() for i in range(MESSAGES)]
    try:
        acked = await produce(kafka_bootstrap, topic, payloads)
        assert sum(len(offsets) for offsets in acked.values()) == MESSAGES
        for offsets in acked.values():
            assert offsets == list(range(len(offsets)))  # dense, in order, per partition

        consumer = group_consumer(kafka_bootstrap, topic, group)
        await consumer.start()
        try:
            got = await consume(consumer, MESSAGES)
            assert sorted(got) == sorted(payloads)
            await consumer.commit()  # the group coordinator works on one node
            for partition in range(PARTITIONS):
                tp = TopicPartition(topic, partition)
                assert await consumer.committed(tp) == len(acked.get(partition, []))
        finally:
            await consumer.stop()

        # A new member of the same group resumes after the commit: only the new record arrives.
        await produce(kafka_bootstrap, topic, [b"after-commit"])
        consumer = group_consumer(kafka_bootstrap, topic, group)
        await consumer.start()
        try:
            assert await consume(consumer, 1) == [b"after-commit"]
            extra = await consumer.getmany(timeout_ms=1000)
            assert not any(extra.values()), extra
        finally:
            await consumer.stop()
    finally:
        await delete_topic(kafka_bootstrap, topic)


@pytest.mark.chaos
@pytest.mark.slow
async def test_restart_keeps_data(kafka_broker) -> None:  # type: ignore[no-untyped-def]
    if not kafka_broker.can_control:
        pytest.skip(f"the {kafka_broker.kind} broker is not controlled by the tests")
    bootstrap = kafka_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=1)
    group = f"test-broker-{uuid.uuid4().hex}"
    await produce(bootstrap, topic, [b"one", b"two"])
    consumer = group_consumer(bootstrap, topic, group)
    await consumer.start()
    try:
        assert await consume(consumer, 1) != []
        await consumer.commit({TopicPartition(topic, 0): 1})
    finally:
        await consumer.stop()

    await asyncio.to_thread(kafka_broker.restart)

    await produce(bootstrap, topic, [b"three"])  # the topic survived the restart
    consumer = group_consumer(bootstrap, topic, group)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(topic, 0)) == 1  # so did the offset
        assert await consume(consumer, 2) == [b"two", b"three"]
    finally:
        await consumer.stop()
        await delete_topic(bootstrap, topic)
