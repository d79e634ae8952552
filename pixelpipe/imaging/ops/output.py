"""``format`` and ``strip``: how the result is encoded. Neither touches pixels.

``format`` parameters: ``type`` jpeg|png|webp|avif (``jpg`` accepted); ``quality`` 1-100
(defaults: jpeg 82, webp 80, avif 60 — OpenCV's own are JPEG 95 and lossless WebP);
``progressive`` and ``optimize`` (jpeg, default false); ``lossless`` (webp, default false);
``compression`` 0-9 (png, default 6); ``speed`` 0-10 (avif, default 8: libavif's slow
settings cost seconds per image for little gain); ``effort`` 0-6 (webp, default 4: libwebp's
``method``, what libvips calls ``effort``; 2 encodes an 800 px photo in under half the time
for about 3 % more bytes, see benchmarks/engine/RESULTS.md). The last ``format`` in a
rendition wins.

``strip`` drops metadata. Output never carries metadata anyway (EXIF orientation is applied
to the pixels, and the encoders write none), so ``strip`` is accepted for compatibility and
documents the default.
"""

from __future__ import annotations

from typing import Any

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging.formats import FORMAT_ALIASES, OUTPUT_FORMATS
from pixelpipe.imaging.ops.base import Image, OpDef, Param, Params, Size

__all__ = ["DEFAULT_AVIF_SPEED", "DEFAULT_PNG_COMPRESSION", "DEFAULT_QUALITY", "DEFAULT_WEBP_EFFORT",
           "FORMAT", "STRIP"]

DEFAULT_QUALITY = {"jpeg": 82, "webp": 80, "avif": 60}
DEFAULT_PNG_COMPRESSION = 6
DEFAULT_AVIF_SPEED = 8
#: libwebp's own default ``method``; an output at this effort is what OpenCV's encoder writes
DEFAULT_WEBP_EFFORT = 4

_RELEVANT = {
    "jpeg": ("type", "quality", "progressive", "optimize"),
    "png": ("type", "compression"),
    "webp": ("type", "quality", "lossless", "effort"),
    "avif": ("type", "quality", "speed"),
}


def _identity(image: Image, params: Params, target: Size) -> Image:
    return image


def _relevant(params: Params) -> Params:
    kind = params["type"]
    out: dict[str, Any] = {k: v for k, v in params.items() if k in _RELEVANT[kind]}
    if kind == "webp" and out.get("lossless"):
        out.pop("quality", None)  # lossless WebP ignores quality
    elif "quality" in _RELEVANT[kind] and out.get("quality") is None:
        out["quality"] = DEFAULT_QUALITY[kind]
    if kind == "png" and out.get("compression") is None:
        out["compression"] = DEFAULT_PNG_COMPRESSION
    if kind == "avif" and out.get("speed") is None:
        out["speed"] = DEFAULT_AVIF_SPEED
    if kind == "webp" and out.get("effort") in (None, DEFAULT_WEBP_EFFORT):
        # the default is left out of the canonical spec, so every rendition that existed
        # before ``effort`` did keeps its spec, its output key and its bytes
        out.pop("effort", None)
    return out


def _validate(params: Params) -> None:
    if params.get("type") is None:
        raise InvalidOperation("format: type is required (jpeg, png, webp, avif)",
                               processor="format")


FORMAT = OpDef(
    name="format",
    params=(
        Param("type", "choice", None, choices=OUTPUT_FORMATS, aliases=FORMAT_ALIASES),
        Param("quality", "int", None, minimum=1, maximum=100),
        Param("progressive", "bool", False),
        Param("optimize", "bool", False),
        Param("lossless", "bool", False),
        Param("compression", "int", None, minimum=0, maximum=9),
        Param("speed", "int", None, minimum=0, maximum=10),
        Param("effort", "int", None, minimum=0, maximum=6),
    ),
    apply=_identity,
    validate=_validate,
    relevant=_relevant,
    scale_invariant=True,
    doc=__doc__ or "",
)

STRIP = OpDef(name="strip", params=(), apply=_identity, scale_invariant=True,
              doc=__doc__ or "")
