"""Shared fixtures. The broker logic lives in tests/kafka_broker.py (see its docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PipelineEnv, WorkerProcess
from kafka_broker import Broker, session_broker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """The session's real Kafka broker (env, testcontainers or infra/); CI fails if none."""
    broker = session_broker()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    """Bootstrap servers, e.g. "127.0.0.1:19092"."""
    return kafka_broker.bootstrap


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> PipelineEnv:
    """A pipeline of its own: unique topic prefix, consumer group and blob store."""
    return PipelineEnv(bootstrap=kafka_bootstrap, root=tmp_path)


@pytest.fixture
def worker(pipeline: PipelineEnv) -> Iterator[WorkerProcess]:
    """One running worker of the test's pipeline; stopped (SIGTERM) afterwards."""
    process = pipeline.start_worker("w1")
    yield process
    process.stop()
