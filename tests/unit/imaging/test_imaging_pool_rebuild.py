"""A broken pebble pool (its manager died) is replaced once; broken again soon, the worker
stops (``PoolBroken``) instead of dead-lettering every upload as an internal error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imaging_samples import encode, photo_like

from pixelpipe.errors import PoolBroken
from pixelpipe.imaging import ImagePool, parse_operations

OPS = parse_operations(["resize:width=32", "format:type=png"])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(encode(photo_like(64, 48), ".png"))
    return path


def break_pool(pool: ImagePool) -> None:
    """Make the current pebble pool fail as a dead manager makes it fail."""
    def schedule(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Unexpected error within the Pool")
    pool._pool.schedule = schedule  # type: ignore[method-assign]


async def test_a_broken_pool_is_replaced_and_the_render_goes_through(source: Path) -> None:
    pool = ImagePool(workers=1, task_timeout_s=20)
    try:
        break_pool(pool)
        result = await pool.run(str(source), OPS)
        assert (result.width, result.format) == (32, "png")
        assert pool.rebuilds == 1
    finally:
        await pool.aclose(timeout=5)


async def test_a_pool_broken_twice_within_a_minute_stops_the_worker(source: Path) -> None:
    pool = ImagePool(workers=1, task_timeout_s=20)
    try:
        break_pool(pool)
        await pool.run(str(source), OPS)
        break_pool(pool)
        with pytest.raises(PoolBroken, match="twice"):
            await pool.run(str(source), OPS)
    finally:
        await pool.aclose(timeout=5)
