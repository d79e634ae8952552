"""Fixtures for the imaging unit tests (no broker, no network)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelpipe.imaging.ops.debug import DEBUG_ENV

# ../shared beside the repository (as in CI), never copied into it
PHOTOS = Path(__file__).resolve().parents[4] / "shared" / "data" / "photos"


@pytest.fixture(scope="session")
def photo_12mp() -> Path:
    path = PHOTOS / "012mp-bus.jpg"
    if not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"CI runs with ../shared beside the repo: no {path}")
        pytest.skip("sample photo not available")
    return path


@pytest.fixture
def debug_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(DEBUG_ENV, "1")
    yield
