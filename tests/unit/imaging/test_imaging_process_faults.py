"""Faults inside the image process (``crash``, ``hang``, ``oom``): each ends as a retryable
error within the task timeout + 2 s, and the pool serves the next render as if nothing
happened (issue 14's chaos kinds, run for real in a pebble child)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from imaging_samples import encode, photo_like

from pixelpipe.errors import ProcessingTimeout, WorkerCrashed
from pixelpipe.imaging import ImagePool, parse_operations

OPS = parse_operations(["resize:width=32", "format:type=png"])
TIMEOUT_S = 2.0


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(encode(photo_like(64, 48), ".png"))
    return path


@pytest.fixture
async def pool() -> AsyncIterator[ImagePool]:
    pool = ImagePool(workers=1, task_timeout_s=TIMEOUT_S, memory_limit_mb=1024)
    await pool.warm_up()
    yield pool
    await pool.aclose(timeout=5)


@pytest.mark.parametrize(("fault", "error", "words"), [
    ("crash", WorkerCrashed, "SIGSEGV"),
    ("hang", ProcessingTimeout, "longer than"),
    ("oom", WorkerCrashed, "out of memory"),
])
async def test_a_misbehaving_render_fails_in_time_and_the_pool_recovers(
    source: Path, pool: ImagePool, fault: str, error: type[Exception], words: str,
) -> None:
    began = time.monotonic()
    with pytest.raises(error, match=words) as failed:
        await pool.run(str(source), OPS, fault=fault)
    assert time.monotonic() - began <= TIMEOUT_S + 2.0
    assert failed.value.retryable  # type: ignore[attr-defined]
    assert pool.restarts == 1
    # the next render, in a fresh process, is unaffected
    result = await pool.run(str(source), OPS)
    assert (result.width, result.format) == (32, "png")
    many = await pool.run_many(str(source), [OPS, OPS])
    assert len(many) == 2
