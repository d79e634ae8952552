"""The blob store's disk fills up (issue 14): a small tmpfs mounted by the test (as root) holds
the store. While it is full, every upload's output write fails as ``storage_unavailable`` and
walks the retry tiers; once space returns, processing resumes and every published event id
ends processed, none dead-lettered (judged from the topics, as an outside reader)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, read_to_end, wait_for_records, wait_until
from images import mixed_images

from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic, retry_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

TIERS = ("2s", "4s", "8s", "16s")  # 30 s of retries: longer than the disk stays full
RENDITIONS = [{"name": "t", "operations": ["resize:width=200", "format:type=png"]}]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):  # as the broker and S3 fixtures do: CI never skips
            pytest.fail("mounting a tmpfs needs root, and CI runs as root here")
        pytest.skip("mounting a tmpfs needs root (set CI to make this an error)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> Path:
    """A ballast file that takes every free byte of the file system ``path`` is on."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):  # megabytes, then what is left of the last one
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return ballast


def test_a_full_disk_retries_the_writes_and_nothing_is_lost(
    pipeline: PipelineEnv, tmp_path: Path, small_disk: Path
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", 6, max_side=400)
               if img.path.suffix in (".jpg", ".png")]
    env = {"PIXELPIPE_DATA": str(small_disk / "blobs"), "PIXELPIPE_RETRY_TIERS": ",".join(TIERS)}

    async def publish(count: int) -> list[str]:
        ids = []
        async with Publisher(pipeline.settings(data_dir=small_disk / "blobs")) as publisher:
            for i in range(count):
                upload = await publisher.publish_bytes(sources[i % len(sources)].read_bytes(),
                                                       RENDITIONS)
                ids.append(upload.event_id)
        return ids

    # the sources are stored while there is room; then the disk fills before any worker runs
    ids = asyncio.run(publish(12))
    ballast = fill(small_disk)
    with pytest.raises(OSError) as full:
        (small_disk / "probe").write_bytes(b"x" * 65536)
    assert full.value.errno == errno.ENOSPC
    worker = pipeline.start_worker("diskfull", PIXELPIPE_WORKERS="1", **env)
    try:
        tiers = [retry_topic(t, pipeline.prefix) for t in TIERS]

        def retried(records: list[Any]) -> bool:
            return len({orjson.loads(r.value)["event_id"] for r in records}) >= 6

        wait_for_records(pipeline.bootstrap, tiers, retried, timeout=60,
                         what="uploads retried while the disk is full")
        assert not read_to_end(pipeline.bootstrap, [processed_topic(pipeline.prefix)])
        # space comes back
        ballast.unlink()
        (small_disk / "probe").unlink(missing_ok=True)
        began = time.monotonic()

        def done(records: list[Any]) -> bool:
            return set(ids) <= {orjson.loads(r.value)["event_id"] for r in records}

        outcomes = wait_for_records(
            pipeline.bootstrap, [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
            done, timeout=90, what="an outcome for every upload once space returned")
        resumed_in = time.monotonic() - began
        assert {r.topic for r in outcomes if orjson.loads(r.value)["event_id"] in ids} == {
            processed_topic(pipeline.prefix)}, "dead-lettered while the disk was full"
        codes = {a["code"] for r in read_to_end(pipeline.bootstrap, tiers)
                 for a in orjson.loads(r.value)["attempts"]}
        assert codes == {"storage_unavailable"}, codes
        print(f"\nresumed: every upload processed {resumed_in:.1f} s after space returned")
        wait_until(lambda: worker.process.poll() is None, 1, "the worker to be alive")
    finally:
        worker.stop()
