"""EXIF orientations 1-8 all come out upright, checked from the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_samples import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    encode,
    jpeg_with_orientation,
    png_with_orientation,
    quadrants,
)

from pixelpipe.imaging import parse_operations, render
from pixelpipe.imaging._cv import cv2

UPRIGHT = quadrants(96, 64)


def stored_for(orientation: int, upright: np.ndarray) -> np.ndarray:
    """The stored pixels a camera writes for ``orientation``, from the EXIF definition of
    where the stored row 0 and column 0 lie in the upright picture."""
    return {
        1: upright,  # row 0 top, column 0 left
        2: upright[:, ::-1],  # row 0 top, column 0 right
        3: upright[::-1, ::-1],  # row 0 bottom, column 0 right
        4: upright[::-1, :],  # row 0 bottom, column 0 left
        5: upright.transpose(1, 0, 2),  # row 0 left, column 0 top
        6: np.rot90(upright, 1),  # row 0 right, column 0 top
        7: upright[::-1, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 bottom
        8: np.rot90(upright, -1),  # row 0 left, column 0 bottom
    }[orientation]


def _assert_upright(data: bytes) -> None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (64, 96)
    for (y, x), colour in {(16, 24): RED, (16, 72): GREEN, (48, 24): BLUE, (48, 72): WHITE}.items():
        assert np.abs(image[y, x].astype(int) - colour).max() <= 12, (y, x)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_comes_out_upright(orientation: int) -> None:
    source = jpeg_with_orientation(np.ascontiguousarray(stored_for(orientation, UPRIGHT)), orientation)
    result = render(source, parse_operations(["format:type=png"]))
    assert (result.width, result.height) == (96, 64)
    _assert_upright(result.data)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_orientation_with_shrink_on_load(orientation: int) -> None:
    big = cv2.resize(UPRIGHT, (960, 640), interpolation=cv2.INTER_NEAREST)
    source = jpeg_with_orientation(np.ascontiguousarray(stored_for(orientation, big)), orientation)
    result = render(source, parse_operations(["resize:width=96", "format:type=png"]))
    assert (result.width, result.height) == (96, 64)
    _assert_upright(result.data)


@pytest.mark.parametrize("orientation", [2, 6])
def test_png_exif_chunk_orientation_is_honoured(orientation: int) -> None:
    source = png_with_orientation(np.ascontiguousarray(stored_for(orientation, UPRIGHT)), orientation)
    _assert_upright(render(source, parse_operations(["format:type=png"])).data)


def test_missing_or_broken_exif_means_upright() -> None:
    plain = encode(UPRIGHT, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95)
    _assert_upright(render(plain, parse_operations(["format:type=png"])).data)
    broken = jpeg_with_orientation(UPRIGHT, 9)  # out of range: ignored
    _assert_upright(render(broken, parse_operations(["format:type=png"])).data)
