"""Fixtures of the agents' unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pixelpipe.imaging import ImagePool


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[ImagePool]:
    """A real one-process image pool, one per test module."""
    pool = ImagePool(workers=1, task_timeout_s=20, max_tasks_per_child=50, memory_limit_mb=2048)
    yield pool
    await pool.aclose(timeout=5)
