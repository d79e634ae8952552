"""Sample images for the demo, generated on the spot: good ones in several formats, and
deliberately broken ones, each with the outcome it must have.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    expect: str  # "processed" or the dead-letter error code
    what: str


def _picture(width: int, height: int, seed: int, alpha: bool = False) -> np.ndarray:
    """A recognisable picture: gradients, circles and a label (not just noise)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    b = (xs / max(width - 1, 1) * 255).astype(np.uint8)
    g = (ys / max(height - 1, 1) * 255).astype(np.uint8)
    r = ((xs + ys) / (width + height) * 255).astype(np.uint8)
    img = np.dstack([b, g, r])
    rng = np.random.default_rng(seed)
    for _ in range(12):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, center, int(rng.integers(10, max(11, min(width, height) // 4))), color, -1)
    cv2.putText(img, f"pixelpipe {width}x{height}", (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.5, width / 800), (255, 255, 255), 2)
    if alpha:
        a = np.full((height, width), 255, np.uint8)
        cv2.circle(a, (width // 2, height // 2), min(width, height) // 3, 0, -1)
        img = np.dstack([img, a])
    return img


def _write(path: Path, img: np.ndarray, params: list[int] | None = None) -> Path:
    ok, buf = cv2.imencode(path.suffix, img, params or [])
    if not ok:
        raise RuntimeError(f"cannot encode {path.name}")
    path.write_bytes(buf.tobytes())
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def make_samples(folder: Path, photos: Path | None = None) -> list[Sample]:
    """Write the demo's sample files into ``folder``; return them with their expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [
        Sample(_write(folder / "gradient-2400x1600.jpg", _picture(2400, 1600, 1),
                      [cv2.IMWRITE_JPEG_QUALITY, 90]), "processed", "JPEG, 3.8 MP"),
        Sample(_write(folder / "logo-alpha-900x600.png", _picture(900, 600, 2, alpha=True)),
               "processed", "PNG with alpha"),
        Sample(_write(folder / "banner-1280x400.webp", _picture(1280, 400, 3),
                      [cv2.IMWRITE_WEBP_QUALITY, 90]), "processed", "WebP"),
        Sample(_write(folder / "scan-1000x1400.tiff", _picture(1000, 1400, 4)),
               "processed", "TIFF"),
        Sample(_write(folder / "icon-256x256.bmp", _picture(256, 256, 5)), "processed", "BMP"),
    ]
    good = (folder / "gradient-2400x1600.jpg").read_bytes()
    truncated = folder / "broken-truncated.jpg"
    truncated.write_bytes(good[: len(good) * 2 // 5])
    samples.append(Sample(truncated, "corrupt_image", "JPEG cut at 40%"))
    garbage = folder / "broken-random-bytes.jpg"
    garbage.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes())
    samples.append(Sample(garbage, "unsupported_format", "random bytes named .jpg"))
    empty = folder / "broken-empty.png"
    empty.write_bytes(b"")
    samples.append(Sample(empty, "corrupt_image", "zero bytes"))
    bomb = folder / "broken-claims-100000x100000.png"
    bomb.write_bytes(_png_claiming(100_000, 100_000))
    samples.append(Sample(bomb, "image_too_large", "header claims 10 gigapixels"))
    text = folder / "broken-text-as.png"
    text.write_text("this is not an image\n")
    samples.append(Sample(text, "unsupported_format", "a text file named .png"))
    if photos is not None and photos.is_dir():
        for photo in sorted(photos.glob("*.jp*g")):
            samples.append(Sample(photo, "processed", "real photograph"))
    return samples
