"""Image processes: how often they are replaced (issue 15).

Replacing a process stops it for a spawn and ``import cv2``, so it is a rare backstop
(10,000 renders by default), not a routine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from imaging_samples import encode, photo_like

from pixelpipe.imaging import ImagePool, parse_operations

OPS = parse_operations(["resize:width=16", "format:type=png"])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(encode(photo_like(48, 32), ".png"))
    return path


def test_processes_are_replaced_rarely_by_default() -> None:
    pool = ImagePool(workers=1)
    try:
        assert pool._options["max_tasks"] == 10_000
    finally:
        pool.close(timeout=5)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ImagePool(workers=1, max_tasks_per_child=-1)


async def test_a_process_is_replaced_after_its_tasks_and_the_work_goes_on(source: Path) -> None:
    async with ImagePool(workers=1, task_timeout_s=20, max_tasks_per_child=2) as pool:
        pids = []
        for _ in range(3):  # each process serves at most 2 tasks: a render and its own pid
            result = await pool.run(str(source), OPS)
            assert result.width == 16
            pids.append(await asyncio.wrap_future(pool._pool.schedule(os.getpid)))
        assert len(set(pids)) == 3  # replaced after every 2 tasks, and nothing failed
