"""Work-conserving degradation: the ladder sheds what the pool cannot start now, never the
pool's own capacity (UploadProcessor on a real one-process pool, no broker).

At an automatic ``cached_only`` or ``emergency`` an upload the pool has room for is rendered at
``basic``; with the pool busy it is deferred (``cached_only``, without reading the source) or
served as the original (``emergency``); a level an operator forced is obeyed as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_upload_processor import ORIGIN, photo, png_of, upload_of

from pixelpipe.agents.upload_processor import Failed, Processed, UploadProcessor
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.policy.degradation import Level
from pixelpipe.schemas import decode_upload, encode
from pixelpipe.storage.local import LocalBlobStore


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[ImagePool]:
    pool = ImagePool(workers=1, task_timeout_s=20, max_tasks_per_child=50, memory_limit_mb=2048)
    await pool.warm_up()
    yield pool
    await pool.aclose(timeout=5)


class CountingStore(LocalBlobStore):
    """Counts source look-ups: a deferral at a busy pool must not read the source."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.source_reads = 0

    def open_source(self, uri: str, *, max_bytes: int) -> Path:
        self.source_reads += 1
        return super().open_source(uri, max_bytes=max_bytes)


def processor_at(store: LocalBlobStore, pool: ImagePool, level: Level,
                 forced: bool = False) -> UploadProcessor:
    return UploadProcessor(store, pool, Limits(), levels=lambda: (level, forced))


def busy(pool: ImagePool) -> None:
    """Pretend the pool is full (as while its renders run)."""
    pool.pending += 2 * pool.workers


def idle(pool: ImagePool) -> None:
    pool.pending -= 2 * pool.workers


@pytest.mark.parametrize("level", ["cached_only", "emergency"])
async def test_an_automatic_level_renders_at_basic_when_the_pool_has_room(
    tmp_path: Path, pool: ImagePool, level: Level
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    assert pool.has_room()

    result = await processor_at(store, pool, level).process(upload_of(source), ORIGIN)

    assert isinstance(result, Processed), result
    assert result.event.level == level  # the worker's level, as it was
    assert [r.degraded for r in result.event.renditions] == ["basic", "basic"]
    assert all(r.uri.startswith("blob://outputs/") for r in result.event.renditions)
    assert {(r.width, r.height) for r in result.event.renditions} == {(48, 32), (24, 24)}


async def test_cached_only_with_a_busy_pool_defers_without_reading_the_source(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = CountingStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    busy(pool)
    try:
        result = await processor_at(store, pool, "cached_only").process(upload_of(source), ORIGIN)
    finally:
        idle(pool)
    assert isinstance(result, Failed)
    assert result.error.code == "overloaded" and result.error.processor == "degrade"
    assert store.source_reads == 0


async def test_cached_only_with_a_busy_pool_serves_what_the_store_has(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = CountingStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    first = await processor_at(store, pool, "full").process(upload_of(source), ORIGIN)
    assert isinstance(first, Processed)
    reads = store.source_reads
    busy(pool)
    try:
        again = await processor_at(store, pool, "cached_only").process(upload_of(source), ORIGIN)
    finally:
        idle(pool)
    assert isinstance(again, Processed), again
    assert [(r.uri, r.sha256, r.degraded) for r in again.event.renditions] == [
        (r.uri, r.sha256, None) for r in first.event.renditions]
    assert store.source_reads == reads


async def test_emergency_with_a_busy_pool_serves_the_original(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    busy(pool)
    try:
        result = await processor_at(store, pool, "emergency").process(upload_of(source), ORIGIN)
    finally:
        idle(pool)
    assert isinstance(result, Processed), result
    assert {(r.uri, r.degraded) for r in result.event.renditions} == {(source.uri, "emergency")}


@pytest.mark.parametrize(("level", "expect"), [("cached_only", "overloaded"),
                                               ("emergency", "emergency")])
async def test_a_forced_level_is_obeyed_even_with_room_in_the_pool(
    tmp_path: Path, pool: ImagePool, level: Level, expect: str
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    assert pool.has_room()
    result = await processor_at(store, pool, level, forced=True).process(upload_of(source), ORIGIN)
    if expect == "overloaded":
        assert isinstance(result, Failed) and result.error.code == "overloaded"
    else:
        assert isinstance(result, Processed)
        assert {r.degraded for r in result.event.renditions} == {"emergency"}


async def test_low_priority_is_deferred_from_basic_only_while_the_pool_is_busy(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    upload = decode_upload(upload_of(source))
    low = encode(dataclasses.replace(upload, priority="low"))
    processor = processor_at(store, pool, "basic")
    served = await processor.process(low, ORIGIN)
    assert isinstance(served, Processed)
    assert {r.degraded for r in served.event.renditions} == {"basic"}
    busy(pool)
    try:
        deferred = await processor.process(low, ORIGIN)
    finally:
        idle(pool)
    assert isinstance(deferred, Failed) and deferred.error.code == "overloaded"


async def test_a_broken_pool_stops_the_worker_instead_of_failing_the_upload(
    tmp_path: Path, pool: ImagePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelpipe.errors import PoolBroken

    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))

    async def broken(*args: object, **kwargs: object) -> None:
        raise PoolBroken("image pool broke twice", processor="pool")

    monkeypatch.setattr(pool, "run", broken)
    monkeypatch.setattr(pool, "run_many", broken)
    with pytest.raises(PoolBroken):  # not a Failed outcome: the agent crashes the worker
        await processor_at(store, pool, "full").process(upload_of(source), ORIGIN)


async def test_an_upload_deferred_enough_times_is_served_instead_of_deferred_again(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = CountingStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    upload = decode_upload(upload_of(source))
    low = encode(dataclasses.replace(upload, priority="low"))
    busy(pool)
    try:
        for level, raw in (("cached_only", upload_of(source)), ("basic", low)):
            processor = processor_at(store, pool, level)  # type: ignore[arg-type]
            deferred = await processor.process(raw, ORIGIN, deferrals=2)
            assert isinstance(deferred, Failed) and deferred.error.code == "overloaded", level
            served = await processor.process(raw, ORIGIN, deferrals=3)  # the budget: 3
            assert isinstance(served, Processed), (level, served)
            assert {r.degraded for r in served.event.renditions} == {"emergency"}
            assert {r.uri for r in served.event.renditions} == {source.uri}
        # an operator's forced cached_only is obeyed as it is, however often it deferred
        forced = processor_at(store, pool, "cached_only", forced=True)
        still = await forced.process(upload_of(source), ORIGIN, deferrals=10)
        assert isinstance(still, Failed) and still.error.code == "overloaded"
    finally:
        idle(pool)
