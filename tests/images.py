"""Test images: real photographs (../shared/data/photos) cut into mixed formats and sizes.

The photographs are read from beside the repository, never copied into it. Without them (a
checkout without ../shared) the images are synthetic, and the tests say so in their output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
FORMATS = (".jpg", ".png", ".webp", ".tiff", ".bmp")


@dataclass(frozen=True)
class TestImage:
    path: Path
    width: int
    height: int


def photo_arrays() -> list[np.ndarray]:
    arrays = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2)
        if image is not None:
            arrays.append(image)
    if not arrays:  # pragma: no cover - only without ../shared
        rng = np.random.default_rng(0)
        arrays.append(cv2.GaussianBlur(rng.integers(0, 255, (1512, 2016, 3), np.uint8), (9, 9), 3))
    return arrays


def mixed_images(folder: Path, count: int, *, max_side: int = 1400, seed: int = 1) -> list[TestImage]:
    """``count`` crops of the photos, of varied sizes, in every source format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = photo_arrays()
    images = []
    for i in range(count):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        cw = int(rng.integers(min(120, w), min(max_side, w) + 1))
        ch = int(rng.integers(min(120, h), min(max_side, h) + 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = src[y : y + ch, x : x + cw]
        suffix = FORMATS[i % len(FORMATS)]
        path = folder / f"img-{i:04d}{suffix}"
        ok, buf = cv2.imencode(suffix, crop)
        assert ok, path
        path.write_bytes(buf.tobytes())
        images.append(TestImage(path, cw, ch))
    return images


def fit_inside(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The size 'resize fit=inside' must give, never enlarging."""
    scale = min(box_w / width, box_h / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))
