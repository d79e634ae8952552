"""``resize``: width, height, fit (inside|cover|contain|exact), gravity, enlarge, background.

- ``inside`` (default) keeps the aspect ratio within the box;
- ``cover`` fills the box and crops the overflow at ``gravity`` (default center);
- ``contain`` fits within the box and pads to it with ``background`` (default white);
- ``exact`` stretches to the box.

Without ``enlarge=true`` (default false) the image is never scaled up: ``inside`` and
``cover`` keep the source size where it is smaller, ``contain`` pads the unscaled image,
``exact`` caps each side at the source's. Give ``width``, ``height`` or both; with one, the
other follows the aspect ratio and every fit mode gives the same result.
"""

from __future__ import annotations

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
from pixelpipe.imaging.ops.pixels import interpolation, pad_to

__all__ = ["RESIZE"]

FITS = ("inside", "cover", "contain", "exact")


def _box(params: Params, w: int, h: int) -> Size:
    tw: int | None = params.get("width")
    th: int | None = params.get("height")
    if tw is None and th is not None:
        return (max(1, round(w * th / h)), th)
    if th is None and tw is not None:
        return (tw, max(1, round(h * tw / w)))
    if tw is None or th is None:  # refused by _validate; kept for the type checker
        raise InvalidOperation("resize: give width, height or both", processor="resize")
    return (tw, th)


def _scale(params: Params, w: int, h: int) -> float:
    tw, th = _box(params, w, h)
    fit = params["fit"]
    if fit in ("inside", "contain"):
        s = min(tw / w, th / h)
    else:
        s = max(tw / w, th / h)
    return s if params["enlarge"] else min(s, 1.0)


def _size(params: Params, w: int, h: int) -> Size:
    tw, th = _box(params, w, h)
    fit = params["fit"]
    if fit == "contain":
        return (tw, th)
    if fit == "exact":
        return (tw, th) if params["enlarge"] else (min(tw, w), min(th, h))
    s = _scale(params, w, h)
    out = (max(1, round(w * s)), max(1, round(h * s)))
    if fit == "cover":
        return (min(tw, out[0]), min(th, out[1]))
    return out


def _resize(image: Image, width: int, height: int) -> Image:
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=interpolation(w, h, width, height))


def _apply(image: Image, params: Params, target: Size) -> Image:
    h, w = image.shape[:2]
    tw, th = target
    fit = params["fit"]
    if fit == "cover":
        # crop the source to the target's aspect first, so only kept pixels are resampled
        crop_w = min(w, max(1, round(h * tw / th)))
        crop_h = min(h, max(1, round(w * th / tw)))
        x, y = gravity_offset(params["gravity"], w - crop_w, h - crop_h)
        return _resize(image[y : y + crop_h, x : x + crop_w], tw, th)
    if fit == "contain":
        s = min(tw / w, th / h)
        if not params["enlarge"]:
            s = min(s, 1.0)
        iw, ih = min(tw, max(1, round(w * s))), min(th, max(1, round(h * s)))
        inner = _resize(image, iw, ih)
        if (iw, ih) == (tw, th):
            return inner
        x, y = gravity_offset(params["gravity"], tw - iw, th - ih)
        return pad_to(inner, tw, th, x, y, parse_color(params["background"]))
    return _resize(image, tw, th)


def _validate(params: Params) -> None:
    if params.get("width") is None and params.get("height") is None:
        raise InvalidOperation("resize: give width, height or both", processor="resize")


def _relevant(params: Params) -> Params:
    keep = {"width", "height", "fit", "enlarge"}
    both = params.get("width") is not None and params.get("height") is not None
    if both and params["fit"] in ("cover", "contain"):
        keep.add("gravity")
    if both and params["fit"] == "contain":
        keep.add("background")
    if not both:
        # with one side given every fit mode is "inside"
        return {k: v for k, v in params.items() if k in keep} | {"fit": "inside"}
    return {k: v for k, v in params.items() if k in keep}


RESIZE = OpDef(
    name="resize",
    params=(
        Param("width", "int", None, minimum=1, maximum=65_535),
        Param("height", "int", None, minimum=1, maximum=65_535),
        Param("fit", "choice", "inside", choices=FITS, aliases={"fill": "exact"}),
        Param("gravity", "choice", "center", choices=GRAVITIES, aliases={"centre": "center"}),
        Param("enlarge", "bool", False),
        Param("background", "color", "ffffffff"),
    ),
    apply=_apply,
    size=_size,
    validate=_validate,
    relevant=_relevant,
    scale=_scale,
    doc=__doc__ or "",
)
