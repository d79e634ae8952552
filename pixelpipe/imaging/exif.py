"""EXIF orientation: read tag 274 from a TIFF-structured block and undo it on pixels.

Decoding always passes ``IMREAD_IGNORE_ORIENTATION`` and orientation is applied here, so it
works the same for every container we can find EXIF in (JPEG APP1, PNG ``eXIf``, WebP
``EXIF``, TIFF IFD0) and composes with JPEG shrink-on-load.
"""

from __future__ import annotations

import struct

from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.ops.base import Image

__all__ = ["apply_orientation", "oriented_size", "read_orientation"]

_ORIENTATION_TAG = 274


def read_orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1-8) in ``exif``; 1 when absent or unreadable (never raises)."""
    if not exif or len(exif) < 8:
        return 1
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for i in range(min(count, 512)):
            tag, kind, _n, value = struct.unpack_from(order + "HHI4s", exif, ifd + 2 + 12 * i)
            if tag == _ORIENTATION_TAG and kind == 3:
                (orientation,) = struct.unpack_from(order + "H", value)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        return 1
    return 1


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The displayed size of a ``width`` x ``height`` image stored with ``orientation``."""
    return (height, width) if orientation >= 5 else (width, height)


def apply_orientation(image: Image, orientation: int) -> Image:
    """Return ``image`` turned upright for EXIF ``orientation`` (1 returns it unchanged)."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(image), -1)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image
