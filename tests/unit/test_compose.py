"""docker-compose.yml cannot run here (no Docker engine): its structure is checked instead.

Three KRaft nodes in one quorum with RF 3 / min ISR 2, an S3 server, two workers on the S3
store with the production profile and a web token, Prometheus and Grafana; every PIXELPIPE_*
variable it sets is one pixelpipe reads, and every file it mounts exists in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def known_variables() -> set[str]:
    """Every PIXELPIPE_* name pixelpipe's source reads (config.py holds nearly all)."""
    names: set[str] = set()
    for path in (REPO / "pixelpipe").rglob("*.py"):
        names |= set(re.findall(r"PIXELPIPE_[A-Z0-9_]+", path.read_text()))
    return names


def test_the_services_are_the_distributed_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka-1", "kafka-2", "kafka-3", "s3", "worker-1", "worker-2",
                             "prometheus", "grafana"}


def test_the_three_kafka_nodes_form_one_quorum_with_rf_3_and_min_isr_2() -> None:
    services = compose()["services"]
    nodes = [services[f"kafka-{n}"]["environment"] for n in (1, 2, 3)]
    assert [env["KAFKA_NODE_ID"] for env in nodes] == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in nodes}) == 1
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    for n, env in enumerate(nodes, start=1):
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka-{n}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    assert {services[f"kafka-{n}"]["volumes"][0] for n in (1, 2, 3)} == {
        "kafka-1:/var/lib/kafka/data", "kafka-2:/var/lib/kafka/data",
        "kafka-3:/var/lib/kafka/data"}


def test_the_workers_run_on_s3_with_rf_3_the_production_profile_and_a_token() -> None:
    services = compose()["services"]
    known = known_variables()
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["PIXELPIPE_DATA"].startswith("s3://")
        assert env["PIXELPIPE_S3_ENDPOINT"] == "http://s3:7070"
        assert env["PIXELPIPE_REPLICATION_FACTOR"] == 3
        assert env["PIXELPIPE_PROFILE"] == "production"
        assert env["PIXELPIPE_KAFKA"].count("kafka://") == 3
        assert env["PIXELPIPE_WEB_HOST"] == "0.0.0.0" and env["PIXELPIPE_WEB_TOKEN"].startswith("${")
        unknown = {k for k in env if k.startswith("PIXELPIPE_")} - known
        assert not unknown, f"variables pixelpipe does not read: {unknown}"
        assert set(services[name]["depends_on"]) == {"kafka-1", "kafka-2", "kafka-3", "s3"}
    ports = {services[n]["ports"][0] for n in ("worker-1", "worker-2")}
    assert ports == {"127.0.0.1:6066:6066", "127.0.0.1:6067:6066"}  # loopback on the host


def test_every_mounted_file_exists_and_prometheus_scrapes_both_workers() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":", 1)[0]
            assert (REPO / source).is_file(), f"{name} mounts a missing {source}"
    scrape = yaml.safe_load((REPO / "infra/compose/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["pixelpipe-rules.yml"]
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["worker-1:6066", "worker-2:6066"]
    assert (REPO / "Dockerfile").is_file()
