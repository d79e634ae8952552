"""Geometry without resampling scale: ``crop``, ``rotate``, ``flip``, ``auto-orient``.

- ``crop``: ``width`` and ``height`` (required) and either ``x`` and ``y`` (top-left corner)
  or ``gravity`` (default center). A box reaching past the image is clipped to it; a box
  starting outside it is ``invalid_operation``.
- ``rotate``: ``angle`` in degrees, clockwise; multiples of 90 are exact, other angles grow
  the canvas to hold the whole image and fill the corners with ``background`` (default
  white; ``transparent`` adds an alpha channel).
- ``flip``: ``axis`` horizontal (mirror, default), vertical or both.
- ``auto-orient``: EXIF orientation is always applied when decoding, so this is accepted and
  does nothing more (it keeps specs written for imgproxy/sharp valid).
"""

from __future__ import annotations

import math

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.ops.base import (
    GRAVITIES,
    Image,
    OpDef,
    Param,
    Params,
    Size,
    gravity_offset,
    parse_color,
)
from pixelpipe.imaging.ops.pixels import fill_for

__all__ = ["AUTO_ORIENT", "CROP", "FLIP", "ROTATE"]


# --- crop ------------------------------------------------------------------------------------


def _crop_box(params: Params, w: int, h: int) -> tuple[int, int, int, int]:
    cw, ch = params["width"], params["height"]
    if "x" in params:
        x, y = params["x"], params["y"]
        if x >= w or y >= h:
            raise InvalidOperation(
                f"crop: box at ({x}, {y}) starts outside the {w}x{h} image", processor="crop"
            )
        return (x, y, min(cw, w - x), min(ch, h - y))
    cw, ch = min(cw, w), min(ch, h)
    x, y = gravity_offset(params["gravity"], w - cw, h - ch)
    return (x, y, cw, ch)


def _crop_size(params: Params, w: int, h: int) -> Size:
    _x, _y, cw, ch = _crop_box(params, w, h)
    return (cw, ch)


def _crop(image: Image, params: Params, target: Size) -> Image:
    h, w = image.shape[:2]
    x, y, cw, ch = _crop_box(params, w, h)
    return image[y : y + ch, x : x + cw]


def _crop_validate(params: Params) -> None:
    if ("x" in params) != ("y" in params):
        raise InvalidOperation("crop: give both x and y, or neither", processor="crop")
    if "width" not in params or "height" not in params:
        raise InvalidOperation("crop: width and height are required", processor="crop")


def _crop_relevant(params: Params) -> Params:
    if "x" in params:
        return {k: v for k, v in params.items() if k != "gravity"}
    return params


CROP = OpDef(
    name="crop",
    params=(
        Param("x", "int", None, minimum=0, maximum=65_535),
        Param("y", "int", None, minimum=0, maximum=65_535),
        Param("width", "int", None, minimum=1, maximum=65_535),
        Param("height", "int", None, minimum=1, maximum=65_535),
        Param("gravity", "choice", "center", choices=GRAVITIES, aliases={"centre": "center"}),
    ),
    apply=_crop,
    size=_crop_size,
    validate=_crop_validate,
    relevant=_crop_relevant,
)


# --- rotate ----------------------------------------------------------------------------------

_RIGHT_ANGLES = {90.0: cv2.ROTATE_90_CLOCKWISE, 180.0: cv2.ROTATE_180,
                 270.0: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _rotated_size(angle: float, w: int, h: int) -> Size:
    if angle in (0.0, 180.0):
        return (w, h)
    if angle in (90.0, 270.0):
        return (h, w)
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    return (max(1, round(w * c + h * s)), max(1, round(w * s + h * c)))


def _rotate_size(params: Params, w: int, h: int) -> Size:
    return _rotated_size(params["angle"], w, h)


def _rotate(image: Image, params: Params, target: Size) -> Image:
    angle = params["angle"]
    if angle == 0.0:
        return image
    if angle in _RIGHT_ANGLES:
        return cv2.rotate(image, _RIGHT_ANGLES[angle])
    h, w = image.shape[:2]
    tw, th = target
    # OpenCV turns counter-clockwise for positive angles; ours are clockwise (as sharp's)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), -angle, 1.0)
    matrix[0, 2] += (tw - w) / 2.0
    matrix[1, 2] += (th - h) / 2.0
    image, fill = fill_for(image, parse_color(params["background"]))
    return cv2.warpAffine(
        image, matrix, (tw, th), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
    )


def _rotate_relevant(params: Params) -> Params:
    angle = params["angle"] % 360.0
    if angle == 360.0:  # a tiny negative angle: float modulo rounds it up to the full turn
        angle = 0.0
    out = dict(params) | {"angle": angle + 0.0}  # + 0.0 turns -0.0 into 0.0
    if angle % 90.0 == 0.0:
        out.pop("background", None)
    return out


ROTATE = OpDef(
    name="rotate",
    params=(
        Param("angle", "float", None, minimum=-3600, maximum=3600),
        Param("background", "color", "ffffffff"),
    ),
    apply=_rotate,
    size=_rotate_size,
    validate=lambda params: _require(params, "rotate", "angle"),
    relevant=_rotate_relevant,
)


def _require(params: Params, op: str, name: str) -> None:
    if params.get(name) is None:
        raise InvalidOperation(f"{op}: {name} is required", processor=op)


# --- flip, auto-orient -----------------------------------------------------------------------

_FLIP_CODES = {"horizontal": 1, "vertical": 0, "both": -1}


def _flip(image: Image, params: Params, target: Size) -> Image:
    return cv2.flip(image, _FLIP_CODES[params["axis"]])


FLIP = OpDef(
    name="flip",
    params=(
        Param("axis", "choice", "horizontal", choices=tuple(_FLIP_CODES),
              aliases={"x": "horizontal", "y": "vertical", "h": "horizontal", "v": "vertical"}),
    ),
    apply=_flip,
    scale_invariant=True,
)


def _identity(image: Image, params: Params, target: Size) -> Image:
    return image


AUTO_ORIENT = OpDef(name="auto-orient", params=(), apply=_identity, scale_invariant=True)
