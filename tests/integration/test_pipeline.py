"""Upload -> processed on the real broker, through the CLI as users run it (issue 2)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from harness import PipelineEnv, WorkerProcess, json_lines
from images import fit_inside, mixed_images

from pixelpipe.schemas import utc_now_iso
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import uploads_topic

pytestmark = [pytest.mark.broker]

RESIZE = "resize:width=320,height=320,fit=inside"
WEBP = "format:type=webp,quality=80"


def assert_output(pipeline: PipelineEnv, rendition: dict[str, Any], want: tuple[int, int]) -> None:
    """The stored output decodes, is WebP, and has the size 'fit inside 320' must give."""
    assert rendition["format"] == "webp"
    path = pipeline.data_dir / rendition["uri"].removeprefix("blob://")
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    got = (decoded.shape[1], decoded.shape[0])
    assert got == (rendition["width"], rendition["height"])
    # The long side is exact; the short one may differ by rounding (half a pixel either way).
    assert max(got) == max(want)
    assert abs(min(got) - min(want)) <= 1, (got, want)


def test_fifty_mixed_images_end_processed_and_consume_prints_them(
    pipeline: PipelineEnv, worker: WorkerProcess, tmp_path: Path
) -> None:
    # Given 50 crops of real photographs in five formats and many sizes
    images = {img.path.name: img for img in mixed_images(tmp_path / "in", 50)}
    # When they are published with --wait
    result = pipeline.cli("publish", str(tmp_path / "in"), "--op", RESIZE, "--op", WEBP,
                          "--wait", "--timeout", "240")
    lines = json_lines(result.stdout)
    # Then one line per image, in path order, each processed with an output of the right size
    assert [Path(line["path"]).name for line in lines] == sorted(images)
    assert result.returncode == 0, result.stderr
    for line in lines:
        assert line["status"] == "processed", line
        img = images[Path(line["path"]).name]
        (rendition,) = line["outcome"]["renditions"]
        assert_output(pipeline, rendition, fit_inside(img.width, img.height, 320, 320))
    # And consume --from-beginning prints the same 50 events
    consumed = json_lines(pipeline.cli("consume", "--from-beginning", "--limit", "50").stdout)
    assert sorted(e["event_id"] for e in consumed) == sorted(line["event_id"] for line in lines)
    assert all(e["schema"] == "pixelpipe.processed/1" for e in consumed)
    # And the worker's Prometheus metrics count them
    metrics = worker.get_text("/metrics")
    assert 'pixelpipe_outcomes_total{code="",route="processed"} 50.0' in metrics
    assert "pixelpipe_processing_seconds_count 50.0" in metrics


async def _publish_hostile_then_good(pipeline: PipelineEnv, good: list[Path]) -> dict[str, Any]:
    fake = "0" * 64
    base = {
        "schema": "pixelpipe.upload/1", "image_id": "bad", "submitted_at": utc_now_iso(),
        "renditions": [{"name": "w", "operations": [RESIZE, WEBP]}],
        "source": {"uri": f"blob://sources/00/{fake}", "sha256": fake, "size": 10},
    }
    outcomes: dict[str, Any] = {}
    async with Publisher(pipeline.settings()) as publisher:
        await publisher.watch_outcomes()
        topic = uploads_topic(pipeline.prefix)
        # malformed JSON: its dead letter's id is derived from where it was read
        partition, offset = await publisher.send_raw(topic, b"bad", b"{not json")
        expected = {f"malformed:{topic}:{partition}:{offset}": "malformed_event"}
        unknown = dict(base, event_id=str(uuid.uuid4()), schema="pixelpipe.upload/7")
        missing = dict(base, event_id=str(uuid.uuid4()))
        outside = dict(base, event_id=str(uuid.uuid4()),
                       source={"uri": "file:///etc/hostname", "sha256": fake, "size": 10})
        # a missing source is retryable: it walks the (short, test) tiers, then is exhausted
        for event, code in ((unknown, "malformed_event"), (missing, "retries_exhausted"),
                            (outside, "forbidden_source")):
            await publisher.send_raw(topic, b"bad", orjson.dumps(event))
            expected[str(event["event_id"])] = code
        corrupt = good[0].read_bytes()[:3000]  # a JPEG cut short
        upload = await publisher.publish_bytes(corrupt, [{"name": "w", "operations": [RESIZE]}])
        expected[upload.event_id] = "corrupt_image"
        for path in good:
            upload = await publisher.publish_file(path, [{"name": "w", "operations": [RESIZE, WEBP]}])
            expected[upload.event_id] = "processed"
        # a source stored beforehand (as a service that wrote it itself), then only announced
        blob = publisher.store.put_source(good[0].read_bytes())
        upload = await publisher.publish_stored(blob, [{"name": "w", "operations": [RESIZE]}])
        assert upload.event.source.sha256 == blob.sha256
        expected[upload.event_id] = "processed"
        for event_id in expected:
            outcome = await publisher.wait_for(event_id, timeout=120)
            outcomes[event_id] = outcome
    return {"expected": expected, "outcomes": outcomes}


def test_bad_input_is_dead_lettered_with_its_code_and_good_input_still_flows(
    pipeline: PipelineEnv, worker: WorkerProcess, tmp_path: Path
) -> None:
    good = [img.path for img in mixed_images(tmp_path / "good", 5)]
    good = [p for p in good if p.suffix == ".jpg"] + [p for p in good if p.suffix != ".jpg"]
    # Given malformed JSON, an unknown schema, a missing source, a path outside the store and
    # a corrupt image, followed by good images (retry tiers 1s,2s in tests)
    run = asyncio.run(_publish_hostile_then_good(pipeline, good))
    # Then each bad one is a dead letter with its precise code, and every good one is processed
    for event_id, want in run["expected"].items():
        outcome = run["outcomes"][event_id]
        got = "processed" if outcome.status == "processed" else outcome.event.error.code
        assert got == want, (event_id, outcome)
        if outcome.status == "dead_letter":
            letter = outcome.event
            assert letter.origin.topic == uploads_topic(pipeline.prefix)
            first_code = "source_missing" if want == "retries_exhausted" else want
            assert letter.attempts and all(a.code == first_code for a in letter.attempts)
            # non-retryable: one attempt, on the main topic; retryable: every tier, in order
            tiers = [a.tier for a in letter.attempts]
            assert tiers == (["main", "1s", "2s"] if want == "retries_exhausted" else ["main"])
            assert letter.original  # the upload as received travels with the letter
    malformed = next(o for e, o in run["outcomes"].items() if e.startswith("malformed:"))
    assert malformed.event.original == {"base64": "e25vdCBqc29u"}  # b"{not json"
    # And the worker is still the same process, counting dead letters by code
    assert worker.process.poll() is None
    metrics = worker.get_text("/metrics")
    assert 'pixelpipe_outcomes_total{code="corrupt_image",route="dlq"} 1.0' in metrics
    assert 'pixelpipe_outcomes_total{code="source_missing",route="1s"} 1.0' in metrics
