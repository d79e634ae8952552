"""Encoding the result: format choice, sane defaults, OpenCV encoder flags.

Without a ``format`` operation the output keeps the source's format when it is jpeg, png or
webp; otherwise it is png for images with transparency and jpeg for the rest. JPEG cannot
carry alpha, so transparent pixels are composited over white.

OpenCV writes every format. Its WebP encoder (libwebp's simple API) has no ``method`` knob,
so a WebP at a non-default ``effort`` is written by Pillow's libwebp binding instead, with
the settings the simple API uses otherwise (lossy: ``quality``; lossless: quality 70). At the
default effort the two write the same bytes, so the default stays on OpenCV's path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from pixelpipe.errors import InternalError, UnsupportedFormat, WorkerCrashed
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import OUTPUT_SUFFIXES
from pixelpipe.imaging.ops.base import Image
from pixelpipe.imaging.ops.output import (
    DEFAULT_AVIF_SPEED,
    DEFAULT_PNG_COMPRESSION,
    DEFAULT_QUALITY,
    DEFAULT_WEBP_EFFORT,
)
from pixelpipe.imaging.ops.pixels import channels, flatten
from pixelpipe.imaging.spec import Operation

__all__ = ["avif_supported", "encode", "output_format"]


def output_format(
    operations: Sequence[Operation], source_format: str, has_alpha: bool
) -> tuple[str, dict[str, Any]]:
    """The output format and its options: the last ``format`` op, else the default rule."""
    for op in reversed(operations):
        if op.name == "format":
            options = op.arguments
            return str(options["type"]), options
    if source_format in ("jpeg", "png", "webp"):
        kind = source_format
    else:
        kind = "png" if has_alpha else "jpeg"
    return kind, {"type": kind}


def _flags(kind: str, options: dict[str, Any]) -> list[int]:
    if kind == "jpeg":
        return [
            cv2.IMWRITE_JPEG_QUALITY, int(options.get("quality", DEFAULT_QUALITY["jpeg"])),
            cv2.IMWRITE_JPEG_PROGRESSIVE, int(bool(options.get("progressive", False))),
            cv2.IMWRITE_JPEG_OPTIMIZE, int(bool(options.get("optimize", False))),
        ]
    if kind == "png":
        return [cv2.IMWRITE_PNG_COMPRESSION,
                int(options.get("compression", DEFAULT_PNG_COMPRESSION))]
    if kind == "webp":
        # OpenCV encodes WebP losslessly for quality > 100
        quality = 101 if options.get("lossless") else int(
            options.get("quality", DEFAULT_QUALITY["webp"]))
        return [cv2.IMWRITE_WEBP_QUALITY, quality]
    if kind == "avif":
        return [
            cv2.IMWRITE_AVIF_QUALITY, int(options.get("quality", DEFAULT_QUALITY["avif"])),
            cv2.IMWRITE_AVIF_SPEED, int(options.get("speed", DEFAULT_AVIF_SPEED)),
        ]
    raise InternalError(f"no encoder for {kind!r}", processor="encode")


@functools.cache
def avif_supported() -> bool:
    """Whether this OpenCV build can write AVIF (opencv-python-headless 5.0 wheels can)."""
    try:
        ok, _ = cv2.imencode(".avif", np.zeros((8, 8, 3), np.uint8))
    except cv2.error:
        return False
    return bool(ok)


def encode(image: Image, kind: str, options: dict[str, Any]) -> bytes:
    """Encode ``image`` as ``kind`` (jpeg, png, webp, avif) with ``options``.

    AVIF needs an OpenCV built with libavif; without it the render fails with
    ``unsupported_format`` (processor ``encode``), never a crash.
    """
    if kind == "avif" and not avif_supported():
        raise UnsupportedFormat("this OpenCV build cannot encode AVIF", processor="encode")
    if kind == "jpeg" and channels(image) == 4:
        image = flatten(image)
    effort = options.get("effort")
    if kind == "webp" and effort is not None and effort != DEFAULT_WEBP_EFFORT:
        return _webp_with_effort(image, int(effort), options)
    try:
        ok, buffer = cv2.imencode(OUTPUT_SUFFIXES[kind], image, _flags(kind, options))
    except cv2.error as exc:
        raise InternalError(f"{kind} encoder failed: {exc}", processor="encode") from exc
    except MemoryError as exc:
        raise WorkerCrashed("out of memory in encode", processor="encode") from exc
    if not ok:
        raise InternalError(f"{kind} encoder refused the image", processor="encode")
    return buffer.tobytes()


#: libwebp's simple lossless API encodes at this quality (its "compression effort" there)
_LOSSLESS_QUALITY = 70


def _webp_with_effort(image: Image, effort: int, options: dict[str, Any]) -> bytes:
    """WebP at libwebp ``method`` = ``effort`` through Pillow (imported here: only image
    processes that write such a WebP pay for it)."""
    import io

    from PIL import Image as PILImage

    lossless = bool(options.get("lossless"))
    quality = _LOSSLESS_QUALITY if lossless else int(
        options.get("quality", DEFAULT_QUALITY["webp"]))
    try:
        if channels(image) == 4:
            picture = PILImage.fromarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA), "RGBA")
        elif channels(image) == 1:
            picture = PILImage.fromarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), "RGB")
        else:
            picture = PILImage.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "RGB")
        out = io.BytesIO()
        picture.save(out, "WEBP", quality=quality, lossless=lossless, method=effort)
    except MemoryError as exc:
        raise WorkerCrashed("out of memory in encode", processor="encode") from exc
    except (OSError, ValueError) as exc:
        raise InternalError(f"webp encoder failed: {exc}", processor="encode") from exc
    return out.getvalue()
