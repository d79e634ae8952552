"""Renditions served without rendering: a stored output for ``cached_only``, the original for
``emergency``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pixelpipe.agents.degraded_outputs import find_cached, original_as_rendition
from pixelpipe.imaging import canonical_spec, parse_operation, parse_operations
from pixelpipe.policy.degradation import plan_for_level
from pixelpipe.schemas import RenditionRequest, SourceRef, UploadEvent, utc_now_iso
from pixelpipe.storage.local import LocalBlobStore, output_key, sha256_bytes

OPS = ["resize:width=64,height=64,fit=inside", "format:type=jpeg,quality=90"]
RENDITION = RenditionRequest(name="t", operations=tuple(OPS))


def jpeg(width: int, height: int) -> bytes:
    image = np.full((height, width, 3), 120, np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def upload_for(store: LocalBlobStore, data: bytes) -> UploadEvent:
    blob = store.put_source(data)
    return UploadEvent(event_id="e1", image_id="i1",
                       source=SourceRef(uri=blob.uri, sha256=blob.sha256, size=blob.size),
                       renditions=(RENDITION,), submitted_at=utc_now_iso())


def test_nothing_stored_means_nothing_cached(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    upload = upload_for(store, jpeg(200, 100))
    assert find_cached(store, upload, RENDITION, parse_operations(OPS), 70) is None


def test_the_best_stored_output_is_served_with_its_own_level_checksum_and_size(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path)
    upload = upload_for(store, jpeg(200, 100))
    operations = parse_operations(OPS)
    # an output made at reduced_quality earlier (the key carries the level)
    plan = plan_for_level("reduced_quality", RENDITION, operations, parse_operation)
    output = jpeg(64, 32)
    key = output_key(upload.source.sha256, canonical_spec(plan.operations), plan.degraded)
    stored = store.put_output(key, "jpg", output)
    result = find_cached(store, upload, RENDITION, operations, 70)
    assert result is not None
    assert (result.uri, result.sha256, result.size) == (stored.uri, sha256_bytes(output),
                                                        len(output))
    assert (result.width, result.height, result.format) == (64, 32, "jpeg")
    assert result.degraded == "reduced_quality"


def test_emergency_serves_the_source_itself(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    upload = upload_for(store, jpeg(200, 100))
    result = original_as_rendition(upload, store.resolve(upload.source.uri), RENDITION)
    assert (result.uri, result.sha256, result.size) == (
        upload.source.uri, upload.source.sha256, upload.source.size)
    assert (result.width, result.height, result.degraded) == (200, 100, "emergency")
