"""Verify an encoded output before it is published: decode it, check format and size."""

from __future__ import annotations

import math

import numpy as np

from pixelpipe.errors import InternalError, PixelpipeError
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import probe

__all__ = ["verify"]


def verify(data: bytes, kind: str, width: int, height: int) -> None:
    """Raise ``InternalError`` (processor ``verify``) unless ``data`` is a complete ``kind``
    image of ``width`` x ``height`` that decodes.

    The container header must parse (structure complete, right format and size) and the
    pixels must decode. A JPEG is decoded at 1/8 scale: every coefficient is still
    entropy-decoded, which is what can fail, for a fraction of the IDCT work.
    """
    try:
        header = probe(data)
    except PixelpipeError as exc:
        raise InternalError(f"output is not a valid {kind} image: {exc}",
                            processor="verify") from exc
    if header.format != kind:
        raise InternalError(f"output is {header.format}, expected {kind}", processor="verify")
    if (header.width, header.height) != (width, height):
        raise InternalError(
            f"output header says {header.width}x{header.height}, expected {width}x{height}",
            processor="verify",
        )
    flags, scale = (cv2.IMREAD_REDUCED_COLOR_8, 8) if kind == "jpeg" else (cv2.IMREAD_UNCHANGED, 1)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise InternalError(f"output does not decode: {exc}", processor="verify") from exc
    if image is None:
        raise InternalError("output does not decode", processor="verify")
    got_h, got_w = image.shape[:2]
    if (got_w, got_h) != (math.ceil(width / scale), math.ceil(height / scale)):
        raise InternalError(
            f"output decodes to {got_w}x{got_h}, expected {width}x{height}", processor="verify"
        )
