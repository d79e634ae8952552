"""Raising the decode limits raises OpenCV's own decoder ceiling too (issue 16, point 6).

OpenCV reads its pixel ceiling once, at ``import cv2``; it used to be pinned to the default
50 MP, so a worker configured for more still refused a larger image inside the decoder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pixelpipe.errors import ImageTooLarge
from pixelpipe.imaging import ImagePool, Limits, parse_operations

WIDTH, HEIGHT = 7600, 7400  # 56.2 MP: over the default 50 MP, under the raised 60 MP
RAISED = Limits(max_pixels=60_000_000, max_side=16_384)
# a full-size decode (a resize would decode at 1/8 scale, under any ceiling)
OPS = parse_operations(["rotate:angle=90", "format:type=jpeg,quality=60"])


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ramp = np.linspace(0, 255, WIDTH, dtype=np.uint8)
    image = np.dstack([np.tile(ramp, (HEIGHT, 1))] * 3)
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    path.write_bytes(data.tobytes())
    return path


async def test_a_56_mp_image_is_too_large_under_the_default_limits(big_jpeg: Path) -> None:
    async with ImagePool(workers=1, task_timeout_s=60) as pool:
        with pytest.raises(ImageTooLarge):
            await pool.run(str(big_jpeg), OPS)


async def test_a_56_mp_image_renders_once_the_limit_is_raised(big_jpeg: Path) -> None:
    async with ImagePool(workers=1, task_timeout_s=60, limits=RAISED) as pool:
        result = await pool.run(str(big_jpeg), OPS, RAISED)
    # before the fix: CorruptImage, "pixels <= CV_IO_MAX_IMAGE_PIXELS" from inside OpenCV
    assert (result.width, result.height) == (HEIGHT, WIDTH)
    assert result.format == "jpeg"
