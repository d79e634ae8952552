"""Where an upload's sha256 is checked: by the image process that reads the source to render
it (the file read once, hashed off the event loop's process), and in the worker only when
nothing renders it.

What must hold: a source that does not match its event fails the upload with
``checksum_mismatch`` before anything is decoded or stored, whichever process finds it and
however many renditions it has, and blames no processor; a retry of an unchanged source that
was verified is not hashed again; a file changed after it was verified is caught; an upload
served without rendering (the original, at a forced ``emergency``) is checked all the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from test_upload_processor import ORIGIN, RENDITIONS, FakeTopic, photo, png_of, upload_of

from pixelpipe.agents.telemetry import TelemetryReporter
from pixelpipe.agents.upload_processor import Failed, Processed, UploadProcessor
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.storage.local import LocalBlobStore, StoredBlob


class RecordingPool:
    """The real pool, recording the ``expected_sha256`` each task was given."""

    def __init__(self, pool: ImagePool) -> None:
        self.pool, self.workers, self.pending = pool, pool.workers, 0
        self.expected: list[str | None] = []

    def has_room(self) -> bool:
        return True

    async def run(self, path: str, operations: Any, limits: Limits, fault: str | None = None,
                  expected_sha256: str | None = None) -> Any:
        self.expected.append(expected_sha256)
        return await self.pool.run(path, operations, limits, fault, expected_sha256)

    async def run_many(self, path: str, renditions: Any, limits: Limits,
                       fault: str | None = None, expected_sha256: str | None = None) -> Any:
        self.expected.append(expected_sha256)
        return await self.pool.run_many(path, renditions, limits, fault, expected_sha256)


def recorded(tmp_path: Path, pool: ImagePool, **options: Any,
             ) -> tuple[StoredBlob, RecordingPool, UploadProcessor]:
    """A photo's source in a store under ``tmp_path``, and a processor on a recording pool."""
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo()))
    recording = RecordingPool(pool)
    return source, recording, UploadProcessor(store, recording, Limits(),  # type: ignore[arg-type]
                                              **options)


def outputs(root: Path) -> list[Path]:
    return sorted((root / "outputs").rglob("*.*")) if (root / "outputs").exists() else []


def rewrite_same_size(blob: StoredBlob) -> None:
    """Change the source's bytes in place, keeping its size (so only the hash can tell)."""
    data = bytearray(blob.path.read_bytes())
    data[-20] ^= 0xFF  # inside the PNG's last chunks: still the same length
    os.chmod(blob.path, 0o644)  # sources are written read-only
    blob.path.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != blob.sha256


async def test_the_image_process_checks_the_source_and_a_retry_is_not_hashed_again(
    tmp_path: Path, pool: ImagePool
) -> None:
    source, recording, processor = recorded(tmp_path, pool)

    first = await processor.process(upload_of(source), ORIGIN)
    assert isinstance(first, Processed), first
    assert recording.expected == [source.sha256]  # checked where it was read to render
    assert processor.sources.hashes.hits == 0

    # a replay of the same upload (its renditions not found stored: another store key)
    second = await processor.process(upload_of(source, renditions=RENDITIONS[:1]), ORIGIN)
    assert isinstance(second, Processed), second
    assert recording.expected == [source.sha256, None]  # verified and unchanged: no hash
    assert processor.sources.hashes.hits == 1


async def test_a_file_changed_after_it_was_verified_is_caught(
    tmp_path: Path, pool: ImagePool
) -> None:
    source, recording, processor = recorded(tmp_path, pool)
    assert isinstance(await processor.process(upload_of(source), ORIGIN), Processed)
    stored = outputs(tmp_path)

    rewrite_same_size(source)
    again = await processor.process(upload_of(source, renditions=RENDITIONS[:1]), ORIGIN)
    assert isinstance(again, Failed) and again.error.code == "checksum_mismatch", again
    assert again.error.processor == "fetch"
    assert recording.expected[-1] == source.sha256  # a new file key: checked again
    assert outputs(tmp_path) == stored  # nothing rendered from it was stored


@pytest.mark.parametrize("renditions", [RENDITIONS[:1], RENDITIONS], ids=["one", "two"])
async def test_a_mismatch_found_by_the_image_process_fails_the_upload_and_blames_nothing(
    tmp_path: Path, pool: ImagePool, renditions: Any
) -> None:
    topic = FakeTopic()
    source, recording, processor = recorded(tmp_path, pool, reporter=TelemetryReporter(topic))

    result = await processor.process(upload_of(source, sha256="0" * 64, renditions=renditions),
                                     ORIGIN)
    assert isinstance(result, Failed) and result.error.code == "checksum_mismatch", result
    assert result.error.processor == "fetch" and result.error.retryable is True
    assert recording.expected == ["0" * 64]  # the image process found it
    assert outputs(tmp_path) == []
    await processor.reporter.flush()
    assert [body for body in topic.sent if not body["ok"]] == []  # no processor blamed
    assert not any(body["processor"] == "decode" for body in topic.sent)  # nothing decoded


async def test_an_upload_served_without_rendering_is_checked_in_the_worker(
    tmp_path: Path, pool: ImagePool
) -> None:
    # an operator forced emergency: every rendition is the original, nothing is rendered
    source, recording, processor = recorded(tmp_path, pool, levels=lambda: ("emergency", True))

    wrong = await processor.process(upload_of(source, sha256="0" * 64), ORIGIN)
    assert isinstance(wrong, Failed) and wrong.error.code == "checksum_mismatch", wrong

    served = await processor.process(upload_of(source), ORIGIN)
    assert isinstance(served, Processed), served
    assert {r.uri for r in served.event.renditions} == {source.uri}
    assert recording.expected == []  # the pool was never asked
