"""The image process keeps its freed buffers: the next upload's buffers fault in no pages."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pixelpipe.imaging import pool
from pixelpipe.imaging.memory import keep_freed_buffers

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# in a fresh interpreter: ten uploads' page faults (see _faults_over_uploads), with or without
_FRESH = """
import sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "kept":
    from pixelpipe.imaging.memory import keep_freed_buffers
    assert keep_freed_buffers()
from test_imaging_memory import _faults_over_uploads
print(_faults_over_uploads())
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FRESH, mode, str(Path(__file__).parent)],
                          capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout.strip())


@glibc
def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = _page_faults("default"), _page_faults("kept")
    # glibc's defaults hand the buffers back and fault them in again on every upload (fewer
    # faults than 4 KiB pages where numpy asks for huge pages, but every page zeroed again)
    assert default >= 100, default
    assert kept <= 20, (kept, default)


@glibc
def test_glibc_takes_both_thresholds() -> None:
    assert keep_freed_buffers() is True


def _faults_over_uploads() -> int:
    """The page faults of ten uploads' worth of buffers (a 6 MP decode and a 1600 px
    rendition, each page written), made and freed after one upload to warm up."""
    import resource

    import numpy as np

    def upload() -> None:
        decoded = np.ones((2000, 3008, 3), np.uint8)
        rendition = np.ones((1064, 1600, 3), np.uint8)
        del decoded, rendition

    upload()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        upload()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
async def test_the_pools_image_processes_keep_their_buffers() -> None:
    import asyncio

    image_pool = pool.ImagePool(workers=1)
    try:
        faults = await asyncio.wrap_future(image_pool._pool.schedule(_faults_over_uploads))
    finally:
        await image_pool.aclose()
    assert faults <= 20, faults
