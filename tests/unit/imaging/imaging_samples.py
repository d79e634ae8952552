"""Builders for test images: the tests make their own inputs (hostile ones included)."""

from __future__ import annotations

import io
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


# --- HEIC ------------------------------------------------------------------------------------

#: x265 on one thread: the samples are tiny, and the tests must not take the machine's cores
_X265_ONE_THREAD = {"x265:pools": "1", "x265:frame-threads": "1"}


def heic(image: np.ndarray, quality: int = 90, *, orientation: int | None = None,
         tile: int | None = None, premultiplied: bool = False) -> bytes:
    """A real HEIC of ``image`` (BGR, BGRA or gray) from pillow-heif's encoder (libheif + x265).

    With ``orientation`` the file is what an iPhone writes: the stored pixels are ``image``,
    libheif writes the ``irot``/``imir`` transforms that turn them upright for that EXIF
    orientation, and the EXIF block says the same orientation again. ``tile``: a grid of
    tiles that size (as iPhones store photos, in 512 px tiles). ``premultiplied``: BGRA
    whose colour is stored multiplied by its alpha (the file says so).
    """
    import pillow_heif

    if image.ndim == 2:
        mode, pixels = "L", image
    elif image.shape[2] == 3:
        mode, pixels = "RGB", image[:, :, ::-1]
    else:
        mode, pixels = "RGBA", image[:, :, [2, 1, 0, 3]]
    pixels = np.ascontiguousarray(pixels)
    container = pillow_heif.from_bytes(mode, (image.shape[1], image.shape[0]), pixels.tobytes())
    if premultiplied:
        container[0].premultiplied_alpha = True
    options: dict[str, object] = {"quality": quality, "enc_params": _X265_ONE_THREAD}
    if orientation is not None:
        options["exif"] = b"Exif\x00\x00" + exif_orientation_block(orientation)
    if tile is not None:
        options["tile_size"] = tile
    buffer = io.BytesIO()
    container.save(buffer, **options)
    return buffer.getvalue()


def bmff_box(kind: bytes, body: bytes) -> bytes:
    """One ISO BMFF box (``ftyp``, ``meta``, ``ispe``, ...)."""
    return struct.pack(">I4s", 8 + len(body), kind) + body


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    return bmff_box(b"ftyp", major + b"\x00\x00\x00\x00" + b"".join(compatible))


def patch_box(data: bytes, kind: bytes, body: bytes, nth: int = 0) -> bytes:
    """``data`` with the body of its ``nth`` box of ``kind`` replaced by ``body`` (same
    length: every offset in the file stays valid)."""
    at = -1
    for _ in range(nth + 1):
        at = data.find(kind, at + 1)
        while at >= 4 and int.from_bytes(data[at - 4 : at], "big") != 8 + len(body):
            at = data.find(kind, at + 1)
        assert at >= 4, f"no {kind!r} box with a {len(body)}-byte body"
    return data[: at + 4] + body + data[at + 4 + len(body) :]


def heic_claiming(data: bytes, width: int, height: int, nth: int = 0) -> bytes:
    """A real HEIC whose ``nth`` ``ispe`` property (the primary's first) claims ``width``
    x ``height``; its coded image is unchanged."""
    return patch_box(data, b"ispe", struct.pack(">III", 0, width, height), nth)
