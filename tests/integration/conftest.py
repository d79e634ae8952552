"""Fixtures for tests against the real broker: an isolated pipeline and its workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PipelineEnv, WorkerProcess


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> PipelineEnv:
    """A pipeline of its own: unique topic prefix, consumer group and blob store."""
    return PipelineEnv(bootstrap=kafka_bootstrap, root=tmp_path)


@pytest.fixture
def worker(pipeline: PipelineEnv) -> Iterator[WorkerProcess]:
    """One running worker of the test's pipeline; stopped (SIGTERM) afterwards."""
    # Declare the topics first so the worker's consumer finds its partitions at once.
    process = pipeline.start_worker("w1")
    yield process
    process.stop()
