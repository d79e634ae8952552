"""Per-stage figures of an upload (``agents.stages``, issue 15): what the ``processed`` log
line shows about where an upload's time went.

What must hold: figures are per upload (per asyncio task: two uploads running at once never
mix theirs), nothing is recorded outside an upload, and a real upload through
``UploadProcessor`` reports its source, pool, render and store stages, with the render (the
image process's own time) inside the pool's round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_upload_processor import ORIGIN, RENDITIONS, photo, png_of, upload_of

from pixelpipe.agents import stages
from pixelpipe.agents.upload_processor import Processed, UploadProcessor
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.storage.local import LocalBlobStore


def test_describe_orders_the_known_stages_and_keeps_the_others() -> None:
    figures = {"store": 2.4, "kafka": 3.0, "pool": 31.2, "zeta": 1.0, "ahead": 1.0}
    assert stages.describe(figures) == "kafka 3, pool 31, ahead 1, store 2, zeta 1"
    assert stages.describe({}) == ""


async def test_figures_belong_to_the_task_of_their_upload() -> None:
    async def upload(name: str, delay: float) -> dict[str, float]:
        mine = stages.begin()
        with stages.timed("pool"):
            await asyncio.sleep(delay)
        stages.add("ahead", 1)
        stages.add("ahead", 2)
        assert mine is not None
        return mine

    slow, fast = await asyncio.gather(asyncio.create_task(upload("slow", 0.05)),
                                      asyncio.create_task(upload("fast", 0.0)))
    assert slow["ahead"] == fast["ahead"] == 3
    assert slow["pool"] >= 45 > fast["pool"]


async def test_outside_an_upload_nothing_is_recorded() -> None:
    async def step() -> None:
        stages.add("store", 5.0)  # a step called directly, as a unit test would
        with stages.timed("pool"):
            pass

    await asyncio.create_task(step())  # no error, nowhere to record


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[ImagePool]:
    pool = ImagePool(workers=1, task_timeout_s=20, memory_limit_mb=2048)
    yield pool
    await pool.aclose(timeout=5)


async def test_a_processed_upload_carries_its_stages(tmp_path: Path, pool: ImagePool) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    processor = UploadProcessor(store, pool, Limits())

    result = await asyncio.create_task(processor.process(upload_of(source), ORIGIN))

    assert isinstance(result, Processed), result
    figures = result.stages
    assert {"source", "pool", "render", "ahead", "store", "rest"} <= set(figures), figures
    assert figures["ahead"] == 0  # nothing else was in the pool
    assert 0 < figures["render"] <= figures["pool"]
    parts = figures["source"] + figures["pool"] + figures["store"] + figures["rest"]
    assert parts == pytest.approx(result.event.processing_ms, abs=0.01)
    assert len(result.event.renditions) == len(RENDITIONS)
