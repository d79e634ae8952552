"""Fixtures for the imaging unit tests (no broker, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelpipe.imaging.ops.debug import DEBUG_ENV

PHOTOS = Path("/work/shared/data/photos")


@pytest.fixture(scope="session")
def photo_12mp() -> Path:
    path = PHOTOS / "012mp-bus.jpg"
    if not path.exists():
        pytest.skip("sample photo not available")
    return path


@pytest.fixture
def debug_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(DEBUG_ENV, "1")
    yield
