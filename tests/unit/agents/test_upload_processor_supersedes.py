"""The worker carries ``supersedes`` (``pixelpipe backfill``) from the upload into its processed
event; an ordinary upload's event has none. A real one-process pool, no broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pixelpipe.agents.upload_processor import Processed, UploadProcessor
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.imaging._cv import cv2
from pixelpipe.schemas import (
    Origin,
    RenditionRequest,
    SourceRef,
    UploadEvent,
    decode_processed,
    encode,
    utc_now_iso,
)
from pixelpipe.storage.local import LocalBlobStore

ORIGIN = Origin(topic="pixelpipe.uploads", partition=1, offset=5)


@pytest.fixture(scope="module")
async def one_pool() -> AsyncIterator[ImagePool]:
    pool = ImagePool(workers=1, task_timeout_s=20, max_tasks_per_child=50, memory_limit_mb=2048)
    yield pool
    await pool.aclose(timeout=5)


@pytest.mark.parametrize("supersedes", ["3@41", None])
async def test_the_processed_event_carries_the_uploads_supersedes(
    tmp_path: Path, one_pool: ImagePool, supersedes: str | None
) -> None:
    store = LocalBlobStore(tmp_path)
    image = np.full((32, 48, 3), 120, np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert ok
    blob = store.put_source(bytes(png.tobytes()))
    upload = UploadEvent(
        event_id="evt-b", image_id="img-b",
        source=SourceRef(uri=blob.uri, sha256=blob.sha256, size=blob.size,
                         content_type="image/png"),
        renditions=(RenditionRequest(name="s", operations=("resize:width=24",
                                                           "format:type=jpeg,quality=80")),),
        submitted_at=utc_now_iso(), priority="low", supersedes=supersedes,
    )
    result = await UploadProcessor(store, one_pool, Limits()).process(encode(upload), ORIGIN,
                                                                      attempts=1)
    assert isinstance(result, Processed), result
    assert result.event.supersedes == supersedes
    assert result.event.event_id == "evt-b" and result.event.renditions[0].degraded is None
    assert decode_processed(encode(result.event)).supersedes == supersedes
