"""A real three-node KRaft cluster (issue 13): ``KAFKA_NODES=3 infra/kafka.sh up`` on a free
port range of its own, always taken down at the end.

- the pipeline's topics created with ``PIXELPIPE_REPLICATION_FACTOR=3`` have, as the brokers
  report them, 3 replicas and ``min.insync.replicas=2``;
- the production profile's broker-side rules pass there, and the profile refuses a single
  broker (the session's broker, read only: a fresh prefix, nothing created on it);
- a kill-node drill: a worker on the three nodes processes 200 uploads while the node leading
  the most uploads partitions is killed (kill -9) and restarted; every published event id
  ends processed or dead-lettered (read from the outcome topics, from outside); the time
  until produce resumes and until the restarted node is back in every ISR are printed;
- topics declared are listed by every node, asked one by one, the moment the declaration
  returns (a created topic reaches the nodes' metadata one after the other: the breaker
  agent's ``PartitionsMismatch`` loop); the worker's declaration includes the breaker table's
  changelog, and a worker refuses a changelog whose partitions differ from its source's;
- the alert evaluator reads the cluster while the node coordinating the uploads group is
  killed (its admin requests went to the dead node and failed until it was fenced).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import REPO, PipelineEnv, describe_topics, free_port, wait_for_records, wait_until
from images import mixed_images

from pixelpipe.streams.admin import declare_pipeline_topics
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.profile import effective, expected_topics
from pixelpipe.streams.topics import (
    dlq_topic,
    pipeline_topic_specs,
    processed_topic,
    uploads_topic,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

KAFKA_SH = REPO / "infra" / "kafka.sh"
RENDITIONS = [{"name": "t", "operations": ["resize:width=96,height=96,fit=inside",
                                           "format:type=jpeg,quality=80"]}]
#: problems of faust's side of agents/app.py (fixed: an idempotent producer, RF-3 topics)
FAUST_PROBLEMS = ("faust creates its own topics", "the faust producer")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range() -> int:
    """A base port P with P, P+1, P+10, P+11, P+20, P+21 all free (three nodes, controllers)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(30000, 60000, 100)
        if all(_free(base + offset) for offset in (0, 1, 10, 11, 20, 21)):
            return base
    raise RuntimeError("no free port range for three Kafka nodes")


@dataclass
class Cluster:
    env: dict[str, str]
    bootstrap: str
    home: Path
    up_seconds: float

    def sh(self, *args: str, timeout: float = 300, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(KAFKA_SH), *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kafka.sh {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr[-3000:]}")
        return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("kafka-three-nodes")
    env = dict(os.environ, KAFKA_NODES="3", KAFKA_PORT=str(free_port_range()),
               KAFKA_HOME_DIR=str(home), KAFKA_START_TIMEOUT="240", KAFKA_STOP_TIMEOUT="20")
    env.pop("KAFKA_CONTROLLER_PORT", None)
    began = time.monotonic()
    up = subprocess.run([str(KAFKA_SH), "up"], env=env, capture_output=True, text=True,
                        timeout=900, check=False)
    try:
        assert up.returncode == 0, f"kafka.sh up exited {up.returncode}:\n{up.stderr[-4000:]}"
        cluster = Cluster(env=env, bootstrap=up.stdout.strip().splitlines()[-1], home=home,
                          up_seconds=time.monotonic() - began)
        print(f"\nthree nodes up in {cluster.up_seconds:.1f} s: {cluster.bootstrap}")
        yield cluster
    finally:
        down = subprocess.run([str(KAFKA_SH), "down", "--purge"], env=env, capture_output=True,
                              text=True, timeout=180, check=False)
        if down.returncode != 0:
            subprocess.run([str(KAFKA_SH), "down", "--kill"], env=env, capture_output=True,
                           timeout=120, check=False)


class ClusterPipeline(PipelineEnv):
    """A test pipeline whose every client and worker creates topics with 3 replicas."""

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{"PIXELPIPE_REPLICATION_FACTOR": "3", **extra})


def test_up_prints_three_nodes_and_status_shows_each(cluster: Cluster) -> None:
    ports = [int(cluster.env["KAFKA_PORT"]) + step for step in (0, 10, 20)]
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{port}" for port in ports)
    status = cluster.sh("status")
    lines = status.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["node 1", "node 2", "node 3"]
    assert all(": running: " in line for line in lines[:3]), status.stdout
    assert "metadata lists nodes [1,2,3]" in lines[3]
    props = (cluster.home / "node2" / "server.properties").read_text()
    for line in ("node.id=2", "min.insync.replicas=2", "unclean.leader.election.enable=false",
                 "offsets.topic.replication.factor=3", "broker.session.timeout.ms=3000"):
        assert line in props.splitlines()
    ids = {(cluster.home / f"node{n}" / "data" / "meta.properties").read_text().split(
        "cluster.id=")[1].split()[0] for n in (1, 2, 3)}
    assert len(ids) == 1, ids  # one cluster id


def test_topics_have_three_replicas_and_min_isr_two_as_the_brokers_report(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path).settings()
    assert settings.replication_factor == 3
    created = asyncio.run(declare_pipeline_topics(settings))
    replays = f"{settings.topic_prefix}.dlq.replays"  # created by `dlq replay`, not a worker
    assert set(created) == set(expected_topics(settings)) - {replays}

    def described() -> Any:  # every broker's metadata knows a new topic a moment later
        found = asyncio.run(effective(settings))
        return found if set(found.missing_topics) == {replays} else None

    found = wait_until(described, 30, "the new topics in the metadata", interval=0.5)
    ours = [t for t in found.topics if t.name.startswith(f"{settings.topic_prefix}.")]
    assert {t.name for t in ours} == set(created)
    for topic in ours:
        assert (topic.replication_factor, topic.min_insync_replicas, topic.min_isr_source,
                topic.in_sync) == (3, 2, "topic", 3), topic
    assert found.brokers == 3


def production_problems(cluster: Cluster, tmp_path: Path) -> list[str]:
    """``pixelpipe check --profile production --json`` on the three nodes, with the topics
    declared and an ``s3://`` store named (the S3 store is not this test's subject)."""
    pipeline = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path)
    asyncio.run(declare_pipeline_topics(pipeline.settings()))
    result = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "check", "--profile", "production", "--json"],
        # the cluster listens in plaintext on loopback: the operator's explicit allowance (the
        # test below shows the refusal without it)
        env=pipeline.env(PIXELPIPE_DATA="s3://pixelpipe-test/blobs",
                         PIXELPIPE_KAFKA_ALLOW_PLAINTEXT="1"), capture_output=True,
        timeout=120, check=False)
    body = orjson.loads(result.stdout)
    assert (result.returncode == 0) == body["ok"], result.stderr
    assert body["brokers"] == 3 and body["blob_store"] == "s3://pixelpipe-test/blobs"
    return list(body["problems"])


def test_production_profile_broker_side_passes_on_three_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    found = production_problems(cluster, tmp_path)
    # replication, min ISR, broker count, pixelpipe's producer and the store all pass (faust's
    # side is checked by the test below)
    assert [p for p in found if not p.startswith(FAUST_PROBLEMS)] == [], found


def test_production_profile_passes_on_three_nodes(cluster: Cluster, tmp_path: Path) -> None:
    assert production_problems(cluster, tmp_path) == []


def test_production_profile_refuses_a_single_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    # the session's single broker, read only: a fresh prefix, and the worker refuses before
    # it declares anything
    pipeline = ClusterPipeline(bootstrap=kafka_bootstrap, root=tmp_path)
    env = pipeline.env(PIXELPIPE_PROFILE="production", PIXELPIPE_DATA="s3://pixelpipe-test/b",
                       PIXELPIPE_WEB_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "worker"], env=env, capture_output=True, text=True,
        timeout=120, cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("pixelpipe: error: production profile: "), line
    assert "the cluster has 1 broker(s) in its metadata" in line
    # plaintext without the operator's allowance is refused, loopback or not
    assert "the broker connection is PLAINTEXT (production needs kafka+ssl://" in line
    # and with RF 1 (the default) the setting itself is named, by `pixelpipe check` too
    plain = PipelineEnv(bootstrap=kafka_bootstrap, root=tmp_path, prefix=pipeline.prefix)
    check = plain.cli("check", "--profile", "production", check=False)
    assert check.returncode == 1
    assert b"PIXELPIPE_REPLICATION_FACTOR=1 (topics need 3 replicas" in check.stderr
    assert not [t for t in _topics(kafka_bootstrap) if t.startswith(pipeline.prefix)]


def _topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def names() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


# --------------------------------------------------------------------------- kill-node drill


def leaders(bootstrap: str, topic: str) -> Counter[int]:
    (described,) = describe_topics(bootstrap, [topic])
    return Counter(p["leader"] for p in described["partitions"])


def isr_full(bootstrap: str, topics: list[str], node: int) -> bool:
    return all(node in p["isr"] and len(p["isr"]) == len(p["replicas"])
               for t in describe_topics(bootstrap, topics) for p in t["partitions"])


@dataclass
class Sent:
    event_id: str
    started: float
    acked: float


def test_kill_node_drill_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    pipeline = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path)
    sources = [img.path for img in mixed_images(tmp_path / "src", 8, max_side=400)]
    worker = pipeline.start_worker("w1")
    sent: list[Sent] = []
    errors: list[BaseException] = []
    total = 200

    async def publish() -> None:
        async with Publisher(pipeline.settings()) as publisher:
            for i in range(total):
                began = time.monotonic()
                upload = await publisher.publish_bytes(
                    sources[i % len(sources)].read_bytes(), RENDITIONS, image_id=f"img-{i}")
                sent.append(Sent(upload.event_id, began, time.monotonic()))
                await asyncio.sleep(0.1)  # paced: the kill and the restart land mid-stream

    def run_publisher() -> None:
        try:
            asyncio.run(publish())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    try:
        topic = uploads_topic(pipeline.prefix)
        led = leaders(cluster.bootstrap, topic)
        victim = led.most_common(1)[0][0]
        publisher = threading.Thread(target=run_publisher, daemon=True)
        publisher.start()
        wait_until(lambda: len(sent) >= 50 or errors, 120, "50 uploads published")
        killed_at = time.monotonic()
        cluster.sh("kill-node", str(victim))
        # the killed node's leaderships move once its session expires (3 s)
        wait_until(lambda: victim not in leaders(cluster.bootstrap, topic), 60,
                   f"node {victim} to lose its uploads leaderships")
        moved_s = time.monotonic() - killed_at
        wait_until(lambda: any(s.started >= killed_at + moved_s for s in sent) or errors, 60,
                   "a publish after the failover")
        pipeline_topics = [uploads_topic(pipeline.prefix), processed_topic(pipeline.prefix),
                           dlq_topic(pipeline.prefix)]
        restart_began = time.monotonic()
        # the ISR is watched while start-node runs: the node may rejoin before it returns
        started: list[float] = []
        starter = threading.Thread(target=lambda: (
            cluster.sh("start-node", str(victim)), started.append(time.monotonic())))
        starter.start()
        wait_until(lambda: isr_full(cluster.bootstrap, pipeline_topics, victim), 120,
                   f"node {victim} back in every ISR", interval=0.3)
        isr_s = time.monotonic() - restart_began
        starter.join(300)
        assert started, "start-node failed (see the output above)"
        restarted_at = started[0]
        publisher.join(180)
        assert not errors, errors
        assert len(sent) == total

        ids = [s.event_id for s in sent]
        wanted = set(ids)

        def all_seen(records: list[Any]) -> bool:
            return wanted <= {orjson.loads(r.value).get("event_id") for r in records}

        records = wait_for_records(
            cluster.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
            all_seen, timeout=180, what=f"an outcome for all {total} uploads")
        outcomes = Counter(orjson.loads(r.value).get("event_id") for r in records)
        lost = [e for e in ids if e not in outcomes]
        duplicates = sum(n - 1 for e, n in outcomes.items() if e in wanted and n > 1)
        dead = sum(1 for r in records if r.topic == dlq_topic(pipeline.prefix))

        before = [s.acked - s.started for s in sent if s.acked < killed_at]
        during = [s for s in sent if s.acked >= killed_at and s.started < restart_began]
        stall = max((s.acked - max(s.started, killed_at) for s in during), default=0.0)
        print(f"\nkill-node drill: node {victim} (leading {led[victim]} of "
              f"{sum(led.values())} uploads partitions) killed "
              f"after {sum(1 for s in sent if s.acked < killed_at)} uploads; leaderships moved "
              f"in {moved_s:.1f} s; longest publish after the kill {stall:.1f} s (median "
              f"before {statistics.median(before) * 1000:.0f} ms); start-node (serving, "
              f"registered) {restarted_at - restart_began:.1f} s, back in every ISR "
              f"{isr_s:.1f} s after it began; {total} uploads: {len(lost)} lost, {duplicates} "
              f"duplicates, {dead} dead-lettered; cluster up took {cluster.up_seconds:.1f} s")
        assert lost == [], f"{len(lost)} lost: {lost[:5]}"
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert cluster.sh("status", check=False).returncode == 0
    finally:
        worker.stop()



# --------------------------------------------------------------------------- every node's metadata


async def listed_by_each_node(client: Any, topics: list[str]) -> dict[int, dict[str, int]]:
    """node -> topic -> partitions, each node asked itself (0: it does not list the topic)."""
    from aiokafka.protocol.metadata import MetadataRequest

    nodes = sorted(b.nodeId for b in client.cluster.brokers())
    request = MetadataRequest(topics, allow_auto_topic_creation=False)
    answers = await asyncio.gather(*(client.send(node, request) for node in nodes))
    out: dict[int, dict[str, int]] = {}
    for node, answer in zip(nodes, answers, strict=True):
        listed = {t["topic"]: len(t["partitions"]) for t in answer.to_object()["topics"]
                  if not t["error_code"]}
        out[node] = {topic: listed.get(topic, 0) for topic in topics}
    return out


def test_declared_topics_are_listed_by_every_node_when_the_declaration_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    from aiokafka.client import AIOKafkaClient

    settings = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path).settings()
    specs = pipeline_topic_specs(settings.topic_prefix, settings.upload_partitions,
                                 tuple(name for name, _ in settings.retry_tiers))
    wanted = {spec.name: spec.partitions for spec in specs}

    async def declare_then_ask() -> dict[int, dict[str, int]]:
        client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap)
        await client.bootstrap()  # before: nothing between the declaration and the question
        try:
            await declare_pipeline_topics(settings)
            return await listed_by_each_node(client, sorted(wanted))
        finally:
            await client.close()

    listed = asyncio.run(declare_then_ask())
    assert sorted(listed) == [1, 2, 3]
    lagging = {node: {t: n for t, n in topics.items() if n != wanted[t]}
               for node, topics in listed.items()}
    assert {node: t for node, t in lagging.items() if t} == {}


def test_worker_declares_the_breaker_changelog_with_its_sources_partitions(
    cluster: Cluster, tmp_path: Path
) -> None:
    from aiokafka.client import AIOKafkaClient

    from pixelpipe.agents.app import create_app, faust_topics
    from pixelpipe.agents.breaker import register_breaker_agent
    from pixelpipe.streams.admin import declare_worker_topics
    from pixelpipe.streams.topics import BREAKER_TABLE, outcomes_topic

    settings = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path).settings(
        state_dir=tmp_path / "state")
    app = create_app(settings)  # faust's own name for the changelog, not ours
    register_breaker_agent(app, settings, faust_topics(app, settings))
    changelog = app.tables[BREAKER_TABLE].changelog_topic.get_topic_name()
    source = outcomes_topic(settings.topic_prefix)

    async def declare_then_ask() -> tuple[list[str], dict[int, dict[str, int]]]:
        client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap)
        await client.bootstrap()
        try:
            created = await declare_worker_topics(settings)
            return created, await listed_by_each_node(client, [source, changelog])
        finally:
            await client.close()

    created, listed = asyncio.run(declare_then_ask())
    assert changelog in created
    assert listed == {node: {source: 1, changelog: 1} for node in (1, 2, 3)}
    (described,) = describe_topics(cluster.bootstrap, [changelog])
    assert all(len(p["replicas"]) == 3 for p in described["partitions"])


def test_worker_refuses_a_breaker_changelog_whose_partitions_differ(
    cluster: Cluster, tmp_path: Path
) -> None:
    # faust's check (tables/base.py, _verify_source_topic_partitions) compares the outcomes
    # topic's partitions with the changelog's as its consumer's metadata reports them; the
    # crash loop seen on the three nodes had 0 for a changelog not listed yet. A real
    # mismatch must stop the worker at start-up with both numbers, not crash the agent on
    # every outcome.
    from pixelpipe.streams.admin import ensure_topics
    from pixelpipe.streams.topics import TopicSpec

    pipeline = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path)
    settings = pipeline.settings()
    changelog = f"{settings.app_id}-breaker-window-changelog"  # faust's name for it
    asyncio.run(ensure_topics(settings, [TopicSpec(changelog, 2, compacted=True)]))
    env = pipeline.env(PIXELPIPE_WEB_PORT=str(free_port()),
                       PIXELPIPE_DATADIR=str(tmp_path / "state"))
    process = subprocess.Popen([sys.executable, "-m", "pixelpipe", "worker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    try:
        _out, err = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
        raise AssertionError(f"the worker ran on a mismatched changelog:\n{err[-3000:]}"
                             ) from None
    assert process.returncode == 1, err[-3000:]
    assert (f"has 1 partition(s) but its table's changelog {changelog} has 2") in err, err


# --------------------------------------------------------------------------- alerts, a node down


class _StubAlerts:
    """Stands in for the faust alerts topic: records what the evaluator would publish."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes, value: bytes) -> Any:
        self.sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_alert_evaluation_reads_the_cluster_while_the_coordinator_is_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from pixelpipe.agents.alerts import AlertEvaluator
    from pixelpipe.streams import kafka

    pipeline = ClusterPipeline(bootstrap=cluster.bootstrap, root=tmp_path)
    settings = pipeline.settings()
    topic = uploads_topic(settings.topic_prefix)
    asyncio.run(declare_pipeline_topics(settings))
    tp0 = TopicPartition(topic, 0)

    async def prepare() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(topic, b"x", key=b"k", partition=0)
        finally:
            await producer.stop()
        consumer = kafka.consumer(settings, group=settings.uploads_group)
        await consumer.start()
        try:
            consumer.assign([tp0])
            await consumer.commit({tp0: 2})  # lag 1 on partition 0
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            return int(await admin.find_coordinator(settings.uploads_group))
        finally:
            await admin.close()

    coordinator = asyncio.run(prepare())
    evaluator = AlertEvaluator(None, settings,  # type: ignore[arg-type]
                               SimpleNamespace(alerts=_StubAlerts()),  # type: ignore[arg-type]
                               None, "three-node-test")
    results: list[tuple[float, dict[int, Any]]] = []

    async def evaluate_around_the_kill() -> None:
        try:
            await evaluator.evaluate()  # the owner, as it is every interval
            killed = time.monotonic()
            cluster.sh("kill-node", str(coordinator))
            for _ in range(3):  # right after the kill, before and after the node is fenced
                await evaluator.evaluate()
                lag = await evaluator.reader.lag(time.time(), ages=False)
                results.append((time.monotonic() - killed,
                                {r["partition"]: r["committed"] for r in lag["partitions"]}))
                await asyncio.sleep(1)
        finally:
            await evaluator.reader.close()

    try:
        asyncio.run(evaluate_around_the_kill())
    finally:
        cluster.sh("start-node", str(coordinator))
    print(f"\nalerts with node {coordinator} (the uploads group's coordinator) killed: "
          + "; ".join(f"evaluated at +{at:.1f} s" for at, _ in results)
          + f"; {evaluator.reader.retries} admin request(s) retried on another node")
    assert evaluator.evaluations == 4
    # the committed offsets were read (not an error answer taken for "none committed")
    assert [committed[0] for _, committed in results] == [2, 2, 2]
    assert cluster.sh("status", check=False).returncode == 0
