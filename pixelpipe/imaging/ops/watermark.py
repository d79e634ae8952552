"""``watermark``: overlay a named image at a gravity, with margin, opacity and scale.

Parameters: ``image`` (required) names a file in the watermark directory given by the
environment variable ``PIXELPIPE_WATERMARK_DIR`` — a bare file name such as ``logo.png``,
never a path, so an event cannot read arbitrary files; ``gravity`` (default southeast);
``margin`` in px from the edges (default 10); ``opacity`` 0-1 (default 0.5, multiplied by the
overlay's own alpha); ``scale``: the overlay's width as a fraction of the image's (default
0.25; it never grows past the image). The overlay goes through the same safe decode as a
source, with small limits (4096 px a side, 10 MB).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Final

import numpy as np

from pixelpipe.errors import InvalidOperation, PixelpipeError, SourceMissing
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.limits import Limits
from pixelpipe.imaging.ops.base import GRAVITIES, Image, OpDef, Param, Params, Size, gravity_offset
from pixelpipe.imaging.ops.pixels import channels, interpolation, with_alpha

__all__ = ["WATERMARK", "WATERMARK_DIR_ENV"]

WATERMARK_DIR_ENV: Final = "PIXELPIPE_WATERMARK_DIR"
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OVERLAY_LIMITS: Final = Limits(max_pixels=4096 * 4096, max_side=4096, max_bytes=10 * 1024 * 1024)


def _validate(params: Params) -> None:
    name = params.get("image")
    if name is None or not _NAME.fullmatch(name) or ".." in name:  # not "$": no final "\n"
        raise InvalidOperation(
            "watermark: image must be a bare file name in the watermark directory",
            processor="watermark",
        )


def _overlay_path(name: str) -> str:
    root = os.environ.get(WATERMARK_DIR_ENV)
    if not root:
        raise InvalidOperation(
            f"watermark: no watermark directory configured ({WATERMARK_DIR_ENV})",
            processor="watermark",
        )
    return os.path.join(root, name)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> Image:
    # imported here: decode -> formats -> ops would otherwise be a cycle at import time
    from pixelpipe.imaging.decode import decode, read_source
    from pixelpipe.imaging.exif import apply_orientation, read_orientation
    from pixelpipe.imaging.formats import check_limits, probe

    data = read_source(path, _OVERLAY_LIMITS)
    header = probe(data)
    check_limits(header.width, header.height, _OVERLAY_LIMITS)
    image = apply_orientation(decode(data, header), read_orientation(header.exif))
    return with_alpha(image)


def _overlay(name: str) -> Image:
    path = _overlay_path(name)
    try:
        mtime = os.stat(path).st_mtime_ns
        return _load(path, mtime)
    except (FileNotFoundError, SourceMissing) as exc:
        raise InvalidOperation(f"watermark: no image named {name!r}",
                               processor="watermark") from exc
    except PixelpipeError as exc:
        raise InvalidOperation(f"watermark: image {name!r} is unusable: {exc}",
                               processor="watermark") from exc


def _apply(image: Image, params: Params, target: Size) -> Image:
    overlay = _overlay(params["image"])
    h, w = image.shape[:2]
    oh, ow = overlay.shape[:2]
    margin = params["margin"]
    room_w, room_h = max(1, w - 2 * margin), max(1, h - 2 * margin)
    s = min(params["scale"] * w / ow, room_w / ow, room_h / oh)
    sw, sh = max(1, min(room_w, round(ow * s))), max(1, min(room_h, round(oh * s)))
    if (sw, sh) != (ow, oh):
        overlay = cv2.resize(overlay, (sw, sh), interpolation=interpolation(ow, oh, sw, sh))
    x, y = gravity_offset(params["gravity"], max(0, w - sw - 2 * margin),
                          max(0, h - sh - 2 * margin))
    x, y = min(x + margin, w - sw), min(y + margin, h - sh)
    if channels(image) == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    else:
        image = image.copy()  # never paint into a view of the caller's (or decoder's) array
    roi = image[y : y + sh, x : x + sw]
    weight = overlay[:, :, 3:4].astype(np.float32) * (params["opacity"] / 255.0)
    colour = overlay[:, :, :3].astype(np.float32)
    base = roi[:, :, :3].astype(np.float32)
    roi[:, :, :3] = np.clip(colour * weight + base * (1.0 - weight) + 0.5, 0, 255).astype(
        np.uint8
    )
    if channels(image) == 4:
        base_alpha = roi[:, :, 3:4].astype(np.float32) / 255.0
        out_alpha = weight + base_alpha * (1.0 - weight)
        roi[:, :, 3:4] = np.clip(out_alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image


WATERMARK = OpDef(
    name="watermark",
    params=(
        Param("image", "str", None),
        Param("gravity", "choice", "southeast", choices=GRAVITIES, aliases={"centre": "center"}),
        Param("margin", "int", 10, minimum=0, maximum=10_000),
        Param("opacity", "float", 0.5, minimum=0, maximum=1),
        Param("scale", "float", 0.25, minimum=0.01, maximum=1),
    ),
    apply=_apply,
    validate=_validate,
    doc=__doc__ or "",
)
