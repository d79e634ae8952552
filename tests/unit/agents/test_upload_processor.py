"""UploadProcessor without a broker: real images in a LocalBlobStore, a real one-process
ImagePool, and a fake outcomes topic that records what the telemetry sends.

What must hold: a good upload becomes a Processed event whose renditions have the requested
sizes and are stored on disk with the sha256 and size the event claims; a corrupt image, a
checksum mismatch and a store failure become Failed with the right code (and retryability);
the breaker telemetry reports processor successes and failures, but never blames a processor
for the input's fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pixelpipe.agents.faults import FaultInjector
from pixelpipe.agents.telemetry import TelemetryReporter
from pixelpipe.agents.upload_processor import Failed, Processed, UploadProcessor
from pixelpipe.errors import StorageUnavailable
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.imaging._cv import cv2
from pixelpipe.schemas import (
    Origin,
    RenditionRequest,
    SourceRef,
    UploadEvent,
    encode,
    utc_now_iso,
)
from pixelpipe.storage.local import LocalBlobStore, StoredBlob

ORIGIN = Origin(topic="pixelpipe.uploads", partition=3, offset=41)
RENDITIONS = (
    RenditionRequest(name="small", operations=("resize:width=48", "format:type=jpeg,quality=80")),
    RenditionRequest(name="square", operations=("resize:width=24,height=24,fit=cover",
                                                "format:type=webp,quality=70")),
)


def photo(width: int = 96, height: int = 64) -> np.ndarray:
    """A BGR gradient with a little noise (compresses like a photo)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.dstack((x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256))
    return np.clip(base + rng.integers(-10, 11, size=base.shape), 0, 255).astype(np.uint8)


def png_of(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return bytes(buffer.tobytes())


def corrupt_jpeg() -> bytes:
    ok, buffer = cv2.imencode(".jpg", photo())
    assert ok
    return bytes(buffer.tobytes())[:200] + bytes(range(256)) * 4  # a JPEG head, garbage body


def upload_of(blob: StoredBlob, *, renditions: tuple[RenditionRequest, ...] = RENDITIONS,
              sha256: str | None = None, size: int | None = None) -> bytes:
    return encode(UploadEvent(
        event_id="evt-1", image_id="img-1",
        source=SourceRef(uri=blob.uri, sha256=sha256 or blob.sha256,
                         size=blob.size if size is None else size, content_type="image/png"),
        renditions=renditions, submitted_at=utc_now_iso(), attributes={"tenant": "t1"},
    ))


class FakeTopic:
    """Records every send; ``send`` is awaited by the reporter (fire and forget)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, *, key: bytes, value: bytes, **_: Any) -> asyncio.Future[None]:
        body = orjson.loads(value)
        assert key == body["processor"].encode()
        self.sent.append(body)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class BrokenStore(LocalBlobStore):
    """Sources read fine; output writes of the ``failing`` extensions (default: every one)
    fail as a full or unmounted disk, or a bad block, would. Records each write's extension
    and thread."""

    def __init__(self, root: Path, failing: tuple[str, ...] | None = None) -> None:
        super().__init__(root)
        self.failing = failing
        self.writes: list[tuple[str, int]] = []  # (extension, thread id)

    def put_output(self, key: str, extension: str, data: bytes) -> StoredBlob:
        self.writes.append((extension, threading.get_ident()))
        if self.failing is None or extension in self.failing:
            raise StorageUnavailable("disk full", processor="store")
        return super().put_output(key, extension, data)


def processor_for(store: LocalBlobStore, pool: ImagePool, topic: FakeTopic | None = None,
                  faults: FaultInjector | None = None) -> UploadProcessor:
    reporter = TelemetryReporter(topic) if topic is not None else None
    return UploadProcessor(store, pool, Limits(), faults=faults, reporter=reporter)


def sent_for(topic: FakeTopic, processor: str) -> list[dict[str, Any]]:
    return [body for body in topic.sent if body["processor"] == processor]


async def test_a_good_upload_is_processed_with_every_rendition_stored(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    topic = FakeTopic()
    processor = processor_for(store, pool, topic)

    result = await processor.process(upload_of(source), ORIGIN, attempts=2)

    assert isinstance(result, Processed), result
    event = result.event
    assert (event.event_id, event.image_id, event.source_sha256) == ("evt-1", "img-1",
                                                                    source.sha256)
    assert event.attempts == 2
    assert event.attributes == {"tenant": "t1"}
    by_name = {r.name: r for r in event.renditions}
    assert set(by_name) == {"small", "square"}
    assert (by_name["small"].width, by_name["small"].height, by_name["small"].format) == (
        48, 32, "jpeg")
    assert (by_name["square"].width, by_name["square"].height, by_name["square"].format) == (
        24, 24, "webp")
    for rendition in event.renditions:
        assert rendition.degraded is None and rendition.skipped == ()
        path = store.resolve(rendition.uri)
        assert path.is_file() and path.is_relative_to(tmp_path.resolve() / "outputs")
        data = path.read_bytes()
        assert len(data) == rendition.size
        assert hashlib.sha256(data).hexdigest() == rendition.sha256
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape[:2] == (rendition.height, rendition.width)
    assert by_name["small"].uri.endswith(".jpg") and by_name["square"].uri.endswith(".webp")

    # telemetry: successes are aggregated per processor until the flush
    await processor.reporter.flush()
    assert all(body["ok"] for body in topic.sent)
    assert sent_for(topic, "decode")[0]["calls"] == 1  # decoded once for both renditions
    assert sent_for(topic, "resize")[0]["calls"] == 2
    assert sent_for(topic, "jpeg")[0]["calls"] == 1
    assert sent_for(topic, "webp")[0]["calls"] == 1
    assert sent_for(topic, "store")[0]["calls"] == 2
    assert not sent_for(topic, "format")  # an option of the encoder, not a processor


async def test_processing_the_same_upload_twice_writes_the_same_outputs(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo()))
    processor = processor_for(store, pool)
    first = await processor.process(upload_of(source), ORIGIN)
    second = await processor.process(upload_of(source), ORIGIN)
    assert isinstance(first, Processed) and isinstance(second, Processed)
    assert [r.uri for r in first.event.renditions] == [r.uri for r in second.event.renditions]
    assert len(list((tmp_path / "outputs").rglob("*.*"))) == 2


async def test_a_corrupt_image_fails_with_corrupt_image_and_blames_no_processor(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(corrupt_jpeg())
    topic = FakeTopic()
    processor = processor_for(store, pool, topic)

    result = await processor.process(upload_of(source), ORIGIN)

    assert isinstance(result, Failed), result
    assert result.error.code == "corrupt_image"
    assert result.error.retryable is False
    assert result.event_id == "evt-1"
    assert result.upload is not None and result.upload.image_id == "img-1"
    assert result.original["event_id"] == "evt-1"  # the upload as received, for the letter
    assert not (tmp_path / "outputs").exists()
    await processor.reporter.flush()
    assert [body for body in topic.sent if not body["ok"]] == []  # the input's fault


async def test_a_store_failure_fails_retryable_and_reports_the_store(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = BrokenStore(tmp_path)
    source = store.put_source(png_of(photo()))
    topic = FakeTopic()
    processor = processor_for(store, pool, topic)

    result = await processor.process(upload_of(source), ORIGIN)

    assert isinstance(result, Failed), result
    assert isinstance(result.error, StorageUnavailable)
    assert result.error.code == "storage_unavailable" and result.error.retryable is True
    assert result.error.processor == "store"
    assert store.writes
    failures = [body for body in topic.sent if not body["ok"]]
    assert failures and {body["processor"] for body in failures} == {"store"}
    assert {body["code"] for body in failures} == {"storage_unavailable"}


async def test_one_failed_output_write_keeps_the_others_and_the_retry_writes_only_it(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = BrokenStore(tmp_path, failing=("webp",))
    source = store.put_source(png_of(photo()))
    topic = FakeTopic()
    processor = processor_for(store, pool, topic)

    failed = await processor.process(upload_of(source), ORIGIN)

    assert isinstance(failed, Failed), failed
    assert failed.error.code == "storage_unavailable" and failed.error.retryable is True
    assert [extension for extension, _ in store.writes] == ["jpg", "webp"]
    # both writes of the upload in one thread hop, off the event loop's thread
    assert len({thread for _, thread in store.writes}) == 1
    assert store.writes[0][1] != threading.get_ident()
    assert [p.suffix for p in (tmp_path / "outputs").rglob("*.*")] == [".jpg"]
    await processor.reporter.flush()
    assert [b["calls"] for b in sent_for(topic, "store") if b["ok"]] == [1]  # the jpg's write
    assert [b["code"] for b in sent_for(topic, "store") if not b["ok"]] == ["storage_unavailable"]

    store.writes.clear()
    again = await processor.process(upload_of(source), ORIGIN, attempts=2)
    assert isinstance(again, Failed)
    assert [extension for extension, _ in store.writes] == ["webp"]  # the jpg is served stored


async def test_an_injected_store_fault_fails_retryable_then_the_next_upload_succeeds(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo()))
    one = (RENDITIONS[0],)
    processor = processor_for(store, pool, faults=FaultInjector.parse(
        "store:storage_unavailable:1"))

    failed = await processor.process(upload_of(source, renditions=one), ORIGIN)
    assert isinstance(failed, Failed)
    assert failed.error.code == "storage_unavailable" and failed.error.retryable is True
    assert not (tmp_path / "outputs").exists()

    again = await processor.process(upload_of(source, renditions=one), ORIGIN)
    assert isinstance(again, Processed)  # the fault fired once only


async def test_a_checksum_mismatch_fails_with_checksum_mismatch(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo()))
    processor = processor_for(store, pool)

    wrong_hash = await processor.process(upload_of(source, sha256="0" * 64), ORIGIN)
    assert isinstance(wrong_hash, Failed)
    assert wrong_hash.error.code == "checksum_mismatch" and wrong_hash.error.retryable is True

    wrong_size = await processor.process(upload_of(source, size=source.size + 1), ORIGIN)
    assert isinstance(wrong_size, Failed)
    assert wrong_size.error.code == "checksum_mismatch"
    assert not (tmp_path / "outputs").exists()  # nothing rendered from an unverified source


async def test_a_malformed_upload_fails_with_an_id_derived_from_its_offset(
    tmp_path: Path, pool: ImagePool
) -> None:
    processor = processor_for(LocalBlobStore(tmp_path), pool)
    result = await processor.process(b"not json", ORIGIN)
    assert isinstance(result, Failed)
    assert result.error.code == "malformed_event" and result.upload is None
    assert result.event_id == "malformed:pixelpipe.uploads:3:41"


async def test_a_missing_source_fails_retryable(tmp_path: Path, pool: ImagePool) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo()))
    source.path.unlink()
    processor = processor_for(store, pool)
    result = await processor.process(upload_of(source), ORIGIN)
    assert isinstance(result, Failed)
    assert result.error.code == "source_missing" and result.error.retryable is True
