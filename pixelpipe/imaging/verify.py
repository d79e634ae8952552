"""Verify an encoded output before it is published: decode it, check format and size."""

from __future__ import annotations

import numpy as np

from pixelpipe.errors import InternalError, PixelpipeError
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import sniff

__all__ = ["verify"]


def verify(data: bytes, kind: str, width: int, height: int) -> None:
    """Raise ``InternalError`` (processor ``verify``) unless ``data`` is a ``kind`` image of
    ``width`` x ``height`` that decodes."""
    try:
        found = sniff(data)
    except PixelpipeError as exc:
        raise InternalError(f"output is not a {kind} image", processor="verify") from exc
    if found != kind:
        raise InternalError(f"output is {found}, expected {kind}", processor="verify")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InternalError(f"output does not decode: {exc}", processor="verify") from exc
    if image is None:
        raise InternalError("output does not decode", processor="verify")
    got_h, got_w = image.shape[:2]
    if (got_w, got_h) != (width, height):
        raise InternalError(
            f"output is {got_w}x{got_h}, expected {width}x{height}", processor="verify"
        )
