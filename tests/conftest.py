"""Shared fixtures. The broker logic lives in tests/kafka_broker.py (see its docstring)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PipelineEnv, WorkerProcess
from kafka_broker import Broker, session_broker
from s3_server import S3Pipeline, S3Server, session_s3


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's real S3 server (versitygw via infra/s3.sh, test port 17070, bucket
    pixelpipe-test); its credentials are set in this process's environment, where the S3
    store's client reads them. CI fails if it cannot start."""
    server = session_s3()
    saved = {name: os.environ.get(name) for name in server.client_env()}
    os.environ.update(server.client_env())
    yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.close()


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


@pytest.fixture
def s3_pipeline(kafka_bootstrap: str, s3_server: S3Server, tmp_path: Path) -> S3Pipeline:
    """A pipeline of its own whose blob store is a fresh prefix of the S3 server's bucket."""
    return S3Pipeline(bootstrap=kafka_bootstrap, root=tmp_path, workers=1,
                      s3_env={"PIXELPIPE_DATA": s3_server.url(), **s3_server.client_env()})


@pytest.fixture
def s3_worker(s3_pipeline: S3Pipeline) -> Iterator[WorkerProcess]:
    """One running worker on the S3 store; stopped (SIGTERM) afterwards."""
    process = s3_pipeline.start_worker("s3")
    yield process
    process.stop()
