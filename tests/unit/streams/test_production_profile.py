"""The production profile's rules (issue 13) on fake described configs, and the min ISR rule
of the topics pixelpipe creates. No broker: the described topics and configs are the shapes
aiokafka's admin client returns (``describe_topics`` dicts, ``describe_configs`` resources)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.config import Settings
from pixelpipe.errors import ConfigError
from pixelpipe.streams import profile
from pixelpipe.streams.admin import _config
from pixelpipe.streams.profile import (
    Effective,
    ProducerInfo,
    TopicInfo,
    blob_store_of,
    error_for,
    problems,
    producer_info,
    topic_infos,
)
from pixelpipe.streams.topics import TopicSpec, min_insync_replicas

# --------------------------------------------------------------------------- min ISR rule


@pytest.mark.parametrize(("rf", "expected"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)])
def test_min_isr_is_two_from_three_replicas_on_else_one(rf: int, expected: int) -> None:
    assert min_insync_replicas(rf) == expected


def test_created_topics_carry_min_isr_for_their_replication() -> None:
    spec = TopicSpec("p.uploads", 12)
    assert _config(spec, 3)["min.insync.replicas"] == "2"
    assert _config(spec, 1)["min.insync.replicas"] == "1"
    assert _config(TopicSpec("p.dlq", 1, retention_ms=-1, min_insync_replicas=3), 3) == {
        "min.insync.replicas": "3", "retention.ms": "-1"}
    assert _config(TopicSpec("p.breaker", 1, compacted=True), 3) == {
        "min.insync.replicas": "2", "cleanup.policy": "compact"}


# --------------------------------------------------------------------------- the rules

GOOD_PRODUCERS = (ProducerInfo("pixelpipe", "uploads", "all", True),
                  ProducerInfo("faust", "outcomes", "all", True))


def topic(name: str, rf: int = 3, min_isr: int | None = 2) -> TopicInfo:
    return TopicInfo(name=name, partitions=6, replication_factor=rf,
                     min_insync_replicas=min_isr, min_isr_source="topic", in_sync=rf)


def good(**changes: Any) -> Effective:
    base = Effective(
        profile="production", replication_factor=3, min_insync_replicas=2,
        blob_store="s3://pixelpipe/prod", producers=GOOD_PRODUCERS,
        topics=(topic("p.uploads"), topic("p.processed"), topic("__consumer_offsets")),
        faust_topic_replication=3, brokers=3, bootstrap="a:9092,b:9092,c:9092",
        security_protocol="SASL_SSL",
    )
    return replace(base, **changes)


def test_a_replicated_cluster_with_safe_producers_and_s3_passes() -> None:
    assert problems(good()) == []
    assert error_for(good()) is None


def test_missing_topics_are_no_problem_the_worker_creates_them_with_the_setting() -> None:
    assert problems(good(topics=(), missing_topics=("p.uploads", "p.dlq"))) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"brokers": 1}, "the cluster has 1 broker(s) in its metadata"),
    ({"replication_factor": 1}, "PIXELPIPE_REPLICATION_FACTOR=1"),
    ({"replication_factor": 2}, "PIXELPIPE_REPLICATION_FACTOR=2"),
    ({"faust_topic_replication": 1}, "faust creates its own topics with 1 replica(s)"),
    ({"topics": (topic("p.uploads", rf=1),)}, "topic p.uploads has 1 replica(s)"),
    ({"topics": (topic("p.uploads", min_isr=1),)}, "topic p.uploads has min.insync.replicas=1"),
    ({"topics": (topic("p.uploads", min_isr=None),)},
     "topic p.uploads: min.insync.replicas not reported"),
    ({"producers": (ProducerInfo("faust", "x", "1", True),)}, "the faust producer has acks=1"),
    ({"producers": (ProducerInfo("faust", "x", "all", False),)},
     "the faust producer is not idempotent"),
    ({"producers": (ProducerInfo("pixelpipe", "x", "all", None),)},
     "the pixelpipe producer's idempotence is unknown"),
    ({"blob_store": "local:/srv/blobs"}, "PIXELPIPE_DATA is a local blob store (/srv/blobs"),
    ({"security_protocol": "PLAINTEXT"}, "the broker connection is PLAINTEXT (production needs "
                                         "kafka+ssl://host:port, or PIXELPIPE_KAFKA_ALLOW_"),
    ({"security_protocol": "SASL_PLAINTEXT"}, "the broker connection is SASL_PLAINTEXT"),
    ({"security_protocol": "unknown"}, "the broker connection is unknown"),
])
def test_each_unsafe_setting_is_named(changes: dict[str, Any], expected: str) -> None:
    found = problems(good(**changes))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_an_encrypted_connection_passes(protocol: str) -> None:
    assert problems(good(security_protocol=protocol)) == []


def test_plaintext_passes_only_when_the_operator_allowed_it() -> None:
    assert problems(good(security_protocol="PLAINTEXT", plaintext_allowed=True)) == []
    assert problems(good(security_protocol="SASL_PLAINTEXT", plaintext_allowed=True)) == []


def test_the_effective_protocol_is_the_settings_one(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_producer(settings: Settings) -> ProducerInfo:
        return GOOD_PRODUCERS[0]

    async def fake_topics(settings: Settings, **kwargs: Any) -> tuple[list[Any], list[str], int]:
        return [], [], 3

    monkeypatch.setattr(profile, "pixelpipe_producer", fake_producer)
    monkeypatch.setattr(profile, "describe_topics", fake_topics)
    plain = Settings.from_env({"PIXELPIPE_KAFKA": "kafka://10.0.0.5:9092",
                               "PIXELPIPE_KAFKA_ALLOW_PLAINTEXT": "1"})
    found = asyncio.run(profile.effective(plain))
    assert (found.security_protocol, found.plaintext_allowed) == ("PLAINTEXT", True)
    tls = Settings.from_env({"PIXELPIPE_KAFKA": "kafka+ssl://10.0.0.5:9093",
                             "PIXELPIPE_KAFKA_USER": "pixelpipe",
                             "PIXELPIPE_KAFKA_PASSWORD": "not-logged"})
    found = asyncio.run(profile.effective(tls))
    assert (found.security_protocol, found.plaintext_allowed) == ("SASL_SSL", False)


def test_every_problem_is_named_in_one_line() -> None:
    bad = good(replication_factor=1, blob_store="local:.pixelpipe/blobs",
               topics=(topic("p.uploads", rf=1, min_isr=1),),
               producers=(ProducerInfo("faust", "x", "all", False),))
    error = error_for(bad)
    assert isinstance(error, ConfigError)
    text = str(error)
    assert "\n" not in text
    assert text.startswith("production profile: 5 problem(s): ")
    for part in ("PIXELPIPE_REPLICATION_FACTOR=1", "topic p.uploads has 1 replica(s)",
                 "min.insync.replicas=1", "not idempotent", "local blob store"):
        assert part in text


# --------------------------------------------------------------------------- as described


def described(name: str, replicas: list[list[int]], isr: list[list[int]] | None = None,
              error: int = 0) -> dict[str, Any]:
    isr = isr or replicas
    return {"error_code": error, "topic": name, "is_internal": False, "partitions": [
        {"error_code": 0, "partition": i, "leader": r[0] if r else -1, "replicas": r,
         "isr": isr[i], "offline_replicas": []} for i, r in enumerate(replicas)]}


def config(name: str, value: str | None, source: int = 1, error: int = 0) -> dict[str, Any]:
    entries = [] if value is None else [
        {"config_names": "min.insync.replicas", "config_value": value, "read_only": False,
         "config_source": source, "is_sensitive": False, "config_synonyms": []}]
    return {"error_code": error, "error_message": "", "resource_type": 2,
            "resource_name": name, "config_entries": entries}


def test_topic_infos_read_replicas_isr_and_min_isr_as_the_broker_reports_them() -> None:
    infos = topic_infos(
        [described("p.uploads", [[1, 2, 3], [2, 3, 1]], isr=[[1, 2, 3], [2, 3]]),
         described("p.dlq", [[1]]),
         described("p.gone", [], error=3)],
        [config("p.uploads", "2", source=1), config("p.dlq", "1", source=4),
         config("p.gone", None, error=3)],
    )
    by_name = {t.name: t for t in infos}
    assert set(by_name) == {"p.uploads", "p.dlq"}
    uploads = by_name["p.uploads"]
    assert (uploads.partitions, uploads.replication_factor, uploads.min_insync_replicas,
            uploads.min_isr_source, uploads.in_sync) == (2, 3, 2, "topic", 2)
    dlq = by_name["p.dlq"]
    assert (dlq.replication_factor, dlq.min_insync_replicas, dlq.min_isr_source) == (
        1, 1, "broker")
    found = problems(good(topics=tuple(infos)))
    assert found == ["topic p.dlq has 1 replica(s) (< 3)",
                     "topic p.dlq has min.insync.replicas=1 (< 2)"]


def test_a_partition_with_fewer_replicas_makes_the_topic_count_as_that() -> None:
    (info,) = topic_infos([described("p.x", [[1, 2, 3], [1, 2]])], [config("p.x", "2")])
    assert info.replication_factor == 2


def test_a_topic_without_a_reported_min_isr_is_a_problem_not_a_pass() -> None:
    (info,) = topic_infos([described("p.x", [[1, 2, 3]])], [])
    assert info.min_insync_replicas is None
    assert problems(good(topics=(info,))) == [
        "topic p.x: min.insync.replicas not reported by the broker"]


# --------------------------------------------------------------------------- producers, store


class FakeSender:
    def __init__(self, acks: Any) -> None:
        self._acks = acks


class FakeProducer:
    def __init__(self, acks: Any, txn: object | None) -> None:
        self._sender = FakeSender(acks)
        self._txn_manager = txn


def test_producer_info_reads_the_client_as_built() -> None:
    assert producer_info("p", "x", FakeProducer(-1, object())) == ProducerInfo(
        "p", "x", "all", True)
    assert producer_info("p", "x", FakeProducer(1, None)) == ProducerInfo("p", "x", "1", False)
    assert producer_info("p", "x", object()) == ProducerInfo("p", "x", "unknown", None)


def test_pixelpipe_clients_are_acks_all_and_idempotent() -> None:
    info = asyncio.run(profile.pixelpipe_producer(Settings(broker="kafka://127.0.0.1:1")))
    assert (info.acks, info.idempotent) == ("all", True)


def test_faust_producer_is_read_from_the_client_faust_builds(tmp_path: Path) -> None:
    from pixelpipe.agents.app import create_app

    app = create_app(Settings(broker="kafka://127.0.0.1:1", state_dir=tmp_path))
    info = asyncio.run(profile.faust_producer(app))
    assert info.name == "faust"
    assert info.acks == "all"  # producer_acks=-1 in agents/app.py
    assert isinstance(info.idempotent, bool)


def test_faust_with_exactly_once_counts_as_idempotent() -> None:
    class Conf:
        processing_guarantee = "exactly_once"
        producer_acks = -1

    class App:
        conf = Conf()

        @property
        def producer(self) -> Any:
            class Service:
                def _new_producer(self) -> Any:
                    class Client(FakeProducer):
                        async def stop(self) -> None:
                            return None
                    return Client(-1, None)  # built outside a worker: no transactions yet
            return Service()

    info = asyncio.run(profile.faust_producer(App()))
    assert (info.acks, info.idempotent) == ("all", True)


def test_blob_store_is_local_unless_the_data_url_is_s3(tmp_path: Path) -> None:
    local = Settings.from_env({"PIXELPIPE_DATA": str(tmp_path)})
    assert blob_store_of(local) == f"local:{tmp_path}"
    s3 = Settings.from_env({"PIXELPIPE_DATA": "s3://pixelpipe-prod/blobs"})
    assert blob_store_of(s3) == "s3://pixelpipe-prod/blobs"


# --------------------------------------------------------------------------- the setting


def test_profile_comes_from_the_environment() -> None:
    assert Settings.from_env({}).profile == "development"
    assert Settings.from_env({"PIXELPIPE_PROFILE": "Production"}).profile == "production"
    with pytest.raises(ConfigError, match="PIXELPIPE_PROFILE='staging'"):
        Settings.from_env({"PIXELPIPE_PROFILE": "staging"})


def test_development_never_asks_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("development must not check")

    monkeypatch.setattr(profile, "effective", boom)
    profile.enforce_profile(Settings(), faust_app=boom)


def test_production_refuses_with_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(settings: Settings, **_k: Any) -> Effective:
        return good(replication_factor=settings.replication_factor)

    monkeypatch.setattr(profile, "effective", fake)
    with pytest.raises(ConfigError, match=r"^production profile: 1 problem\(s\): "
                                          r"PIXELPIPE_REPLICATION_FACTOR=1 "):
        profile.enforce_profile(Settings(profile="production"))
    profile.enforce_profile(Settings(profile="production", replication_factor=3))


# --------------------------------------------------------------------------- pixelpipe check


@pytest.fixture
def fake_check(monkeypatch: pytest.MonkeyPatch) -> dict[str, Effective]:
    state = {"effective": good()}

    async def fake(settings: Settings, **_k: Any) -> Effective:
        return replace(state["effective"], profile=settings.profile)

    monkeypatch.setattr(profile, "effective", fake)
    monkeypatch.setattr("pixelpipe.cli.check.faust_app_of", lambda *_a: None)
    for name in ("PIXELPIPE_PROFILE", "PIXELPIPE_KAFKA", "PIXELPIPE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return state


def test_check_prints_effective_settings_and_passes(fake_check: dict[str, Effective]) -> None:
    result = CliRunner().invoke(main, ["check", "--profile", "production"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pixelpipe  all   yes" in out and "faust      all   yes" in out
    assert "p.uploads" in out and "__consumer_offsets" in out
    assert "connection:         SASL_SSL\n" in out
    assert out.rstrip().endswith("production profile: ok")


def test_check_shows_an_allowed_plaintext_connection(fake_check: dict[str, Effective]) -> None:
    fake_check["effective"] = good(security_protocol="PLAINTEXT", plaintext_allowed=True)
    result = CliRunner().invoke(main, ["check", "--profile", "production"])
    assert result.exit_code == 0, result.output
    assert "connection:         PLAINTEXT, plaintext allowed by the operator" in result.stdout


def test_check_fails_in_one_line_naming_each_problem(fake_check: dict[str, Effective]) -> None:
    fake_check["effective"] = good(replication_factor=1, blob_store="local:/x")
    result = CliRunner().invoke(main, ["check", "--profile", "production"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("pixelpipe: error: production profile: 2 problem(s): ")
    assert "PIXELPIPE_REPLICATION_FACTOR=1" in line and "local blob store" in line


def test_check_in_development_reports_but_does_not_fail(fake_check: dict[str, Effective]) -> None:
    fake_check["effective"] = good(replication_factor=1)
    result = CliRunner().invoke(main, ["check", "--json"])
    assert result.exit_code == 0, result.output
    import orjson

    body = orjson.loads(result.stdout)
    assert body["profile"] == "development" and body["ok"] is False
    assert body["problems"][0].startswith("PIXELPIPE_REPLICATION_FACTOR=1")
    assert body["producers"][0]["acks"] == "all"
