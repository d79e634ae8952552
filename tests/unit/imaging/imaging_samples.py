"""Builders for test images: the tests make their own inputs (hostile ones included)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from pixelpipe.imaging._cv import cv2

RED = (0, 0, 255)
GREEN = (0, 255, 0)
BLUE = (255, 0, 0)
WHITE = (255, 255, 255)


def quadrants(width: int = 96, height: int = 64) -> np.ndarray:
    """BGR image: top-left red, top-right green, bottom-left blue, bottom-right white."""
    image = np.zeros((height, width, 3), np.uint8)
    hw, hh = width // 2, height // 2
    image[:hh, :hw] = RED
    image[:hh, hw:] = GREEN
    image[hh:, :hw] = BLUE
    image[hh:, hw:] = WHITE
    return image


def photo_like(width: int = 96, height: int = 64, seed: int = 3) -> np.ndarray:
    """A smooth gradient with some noise: compresses like a photo, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.dstack(((x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                      ((x + y) * 127 // max(1, width + height - 2))))
    noise = rng.integers(-12, 13, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, ext: str, *flags: int) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(flags))
    assert ok
    return buffer.tobytes()


def exif_orientation_block(orientation: int) -> bytes:
    """A minimal big-endian TIFF/EXIF block holding only the orientation tag."""
    entry = struct.pack(">HHIHH", 274, 3, 1, orientation, 0)
    return b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00" * 4


def jpeg_with_orientation(image: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A JPEG of ``image`` (stored pixels) carrying EXIF ``orientation`` in APP1."""
    data = encode(image, ".jpg", cv2.IMWRITE_JPEG_QUALITY, quality)
    payload = b"Exif\x00\x00" + exif_orientation_block(orientation)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    data = encode(image, ".png")
    ihdr_end = 8 + 25
    return data[:ihdr_end] + png_chunk(b"eXIf", exif_orientation_block(orientation)) + data[ihdr_end:]


def png_bomb(width: int, height: int, channels: int = 3) -> bytes:
    """A valid PNG of zeros: tiny on disk, ``width*height*channels`` bytes once decoded."""
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + channels * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` with a tiny (wrong) body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is patched to claim ``width`` x ``height``."""
    data = bytearray(encode(quadrants(16, 16), ".jpg"))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)
