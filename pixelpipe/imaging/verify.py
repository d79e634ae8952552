"""Verify an encoded output before it is published: its structure, its size, its pixels.

Decoding an output alone proves little: a JPEG whose entropy-coded data was overwritten
with zeros, or had a byte flipped, decodes without an error (libjpeg only warns, and OpenCV
drops its warnings); libwebp decoded 41 of 200 damaged WebP files (measured in
``benchmarks/engine/RESULTS.md``). So the decoded output is compared with the image that was
encoded, at 1/8 scale in gray: the mean of every whole 8 x 8 block. A JPEG is decoded at 1/8
scale (every coefficient of every component is still entropy-decoded; the 1/8 IDCT is the
block's DC, its quantized mean); the encoded image's block means cost about 1 ms more for a
1600 px output. Lossy coding moves a block's mean by a few levels (a JPEG at quality 1: at
most about 17, from the DC quantizer of 255); damage that desynchronizes the entropy decoder
moves the blocks after it far more.
"""

from __future__ import annotations

import math

import numpy as np

from pixelpipe.errors import InternalError, PixelpipeError
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import probe
from pixelpipe.imaging.ops.pixels import channels, flatten

__all__ = ["MAX_BLOCK_DIFFERENCE", "verify"]

#: the largest difference (0-255) allowed between a block's mean in the encoded image and in
#: the decoded output; measured on hostile content at the lowest qualities
#: (``tests/unit/imaging/test_imaging_verify.py``)
MAX_BLOCK_DIFFERENCE = 48

_BLOCK = 8


def verify(data: bytes, kind: str, width: int, height: int,
           encoded: np.ndarray | None = None) -> None:
    """Raise ``InternalError`` (processor ``verify``) unless ``data`` is a complete ``kind``
    image of ``width`` x ``height`` that decodes to ``encoded`` (the image given to the
    encoder), block mean by block mean, within ``MAX_BLOCK_DIFFERENCE``.

    The container header must parse (structure complete, right format and size) and the
    pixels must decode. Without ``encoded`` only the structure and the decode are checked.
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
    jpeg = kind == "jpeg"
    flags, scale = (cv2.IMREAD_REDUCED_GRAYSCALE_8, _BLOCK) if jpeg else (cv2.IMREAD_UNCHANGED, 1)
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
    if encoded is None:
        return
    want = block_means(encoded)
    if want is None:
        return
    got = image[: want.shape[0], : want.shape[1]] if jpeg else block_means(image)
    if got is None or got.shape != want.shape:
        raise InternalError("output decodes to other pixels than were encoded",
                            processor="verify")
    difference = cv2.absdiff(want, got)
    worst = int(difference.max())
    if worst > MAX_BLOCK_DIFFERENCE:
        row, column = divmod(int(difference.argmax()), difference.shape[1])
        raise InternalError(
            f"output decodes to other pixels than were encoded: the 8x8 block at "
            f"({column * _BLOCK}, {row * _BLOCK}) is off by {worst} levels "
            f"(at most {MAX_BLOCK_DIFFERENCE})",
            processor="verify",
        )


def block_means(image: np.ndarray) -> np.ndarray | None:
    """The gray mean of every whole 8 x 8 block of ``image`` (uint8), or None when it has
    none; a BGRA image over white, as its JPEG would be; 16-bit samples at 8-bit."""
    h, w = (image.shape[0] // _BLOCK) * _BLOCK, (image.shape[1] // _BLOCK) * _BLOCK
    if not h or not w:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    whole = image[:h, :w]
    if channels(whole) == 4:
        whole = flatten(whole)
    # the mean of each block first, then gray: both are linear, and the resize is the big
    # one. Three 2x area halvings (OpenCV's vectorized path) cost about 0.4x one 8x area
    # resize, off by at most one level from it.
    means = whole
    for _ in range(3):
        means = cv2.resize(means, (means.shape[1] // 2, means.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
    if channels(means) == 3:
        means = cv2.cvtColor(means, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(means)
