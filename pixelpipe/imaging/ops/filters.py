"""Pixel filters: ``blur``, ``sharpen``, ``grayscale``.

- ``blur``: Gaussian, ``sigma`` in px (default 1.0, 0.3-100).
- ``sharpen``: unsharp mask; ``amount`` (default 1.0, 0-10) of the difference from a
  Gaussian of ``sigma`` (default 1.0, 0.3-10) is added where that difference exceeds
  ``threshold`` (default 0, 0-255). Alpha is left alone.
- ``grayscale``: luma (BT.601, as OpenCV); alpha is kept. ``greyscale`` is accepted too.
"""

from __future__ import annotations

import numpy as np

from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.ops.base import Image, OpDef, Param, Params, Size
from pixelpipe.imaging.ops.pixels import channels

__all__ = ["BLUR", "GRAYSCALE", "SHARPEN"]


def _blur(image: Image, params: Params, target: Size) -> Image:
    return cv2.GaussianBlur(image, (0, 0), params["sigma"])


BLUR = OpDef(
    name="blur",
    params=(Param("sigma", "float", 1.0, minimum=0.3, maximum=100),),
    apply=_blur,
)


def _sharpen(image: Image, params: Params, target: Size) -> Image:
    alpha = None
    if channels(image) == 4:
        image, alpha = image[:, :, :3], image[:, :, 3]
    amount, threshold = params["amount"], params["threshold"]
    blurred = cv2.GaussianBlur(image, (0, 0), params["sigma"])
    sharpened = cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)
    if threshold > 0:
        # only where the local contrast is above the threshold, so flat areas keep no noise
        keep = cv2.absdiff(image, blurred) <= threshold
        sharpened = np.where(keep, image, sharpened)
    if alpha is not None:
        sharpened = np.dstack((sharpened, alpha))
    return sharpened


SHARPEN = OpDef(
    name="sharpen",
    params=(
        Param("amount", "float", 1.0, minimum=0, maximum=10),
        Param("sigma", "float", 1.0, minimum=0.3, maximum=10),
        Param("threshold", "int", 0, minimum=0, maximum=255),
    ),
    apply=_sharpen,
)


def _grayscale(image: Image, params: Params, target: Size) -> Image:
    n = channels(image)
    if n == 1:
        return image
    if n == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.merge((gray, gray, gray, image[:, :, 3]))


GRAYSCALE = OpDef(name="grayscale", params=(), apply=_grayscale, scale_invariant=True)
