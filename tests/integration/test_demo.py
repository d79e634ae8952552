"""`pixelpipe demo` runs the whole job and every outcome is the expected one (issue 2, 5)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from harness import PipelineEnv, free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_processes_the_good_samples_and_dead_letters_the_broken_ones(
    pipeline: PipelineEnv,
) -> None:
    # Given a broker that answers (the demo starts infra/ only when none does)
    env = pipeline.env(PIXELPIPE_WEB_PORT=str(free_port()))
    # When the demo runs in an empty directory
    result = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "demo"], env=env, cwd=pipeline.root,
        capture_output=True, timeout=600, check=False,
    )
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out[-3000:] + result.stderr.decode(errors="replace")[-3000:]
    # Then its results hold good samples processed and each broken one with its code
    rows = [orjson.loads(line) for line in
            (pipeline.root / ".pixelpipe/demo/results.jsonl").read_bytes().splitlines()]
    got = {row["input"]: row["got"] for row in rows}
    assert got["broken-truncated.jpg"] == "corrupt_image"
    assert got["broken-claims-100000x100000.png"] == "image_too_large"
    assert got["source file:///etc/passwd"] == "forbidden_source"
    assert got["not JSON at all"] == "malformed_event"
    assert got["source blob that does not exist"] == "retries_exhausted"
    assert sum(g == "processed" for g in got.values()) >= 5
    assert all(row["ok"] for row in rows)
    assert "0 unexpected" in out
    assert os.path.isdir(pipeline.data_dir / "outputs")


def test_the_demo_runs_beside_a_production_worker_and_leaves_its_topics_alone(
    pipeline: PipelineEnv,
) -> None:
    from harness import read_to_end

    from pixelpipe.streams.topics import dlq_topic, uploads_topic

    # Given a worker already running on the broker with production tiers
    running = pipeline.start_worker("prod", PIXELPIPE_RETRY_TIERS="5s,30s,2m,10m")
    try:
        # When the demo runs with the same settings, even its web port (taken)
        env = pipeline.env(PIXELPIPE_WEB_PORT=str(running.web_port))
        result = subprocess.run(
            [sys.executable, "-m", "pixelpipe", "demo"], env=env, cwd=pipeline.root,
            capture_output=True, timeout=600, check=False,
        )
        out = result.stdout.decode(errors="replace")
        # Then it succeeds in its own namespace ...
        assert result.returncode == 0, out[-3000:] + result.stderr.decode(errors="replace")[-3000:]
        assert "0 unexpected" in out and f"topics {pipeline.prefix}-demo-" in out
        # ... and the running worker's topics never saw a demo upload or dead letter
        topics = [uploads_topic(pipeline.prefix), dlq_topic(pipeline.prefix)]
        assert read_to_end(pipeline.bootstrap, topics) == []
        assert running.process.poll() is None
    finally:
        running.stop()
