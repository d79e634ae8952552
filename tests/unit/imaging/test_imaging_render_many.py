"""Decode once per upload (``engine.render_many``, ``ImagePool.run_many``; issue 15).

What must hold: every rendition is as close to a full-decode reference as the one-at-a-time
render (PSNR), a single rendition is byte-identical to ``render``, one failing rendition leaves
the others' results intact and keeps its own code, a source that cannot be decoded fails
them all, and the same holds through the process pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from images import PHOTOS
from imaging_samples import encode, photo_like

import pixelpipe.imaging.engine as engine
from pixelpipe.errors import CorruptImage, ImageTooLarge, InternalError, PixelpipeError
from pixelpipe.imaging import ImagePool, Limits, parse_operations
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.engine import RenderResult, render, render_many

THREE = [
    parse_operations(["resize:width=200", "format:type=jpeg,quality=80"]),
    parse_operations(["resize:width=800", "format:type=webp,quality=80"]),
    parse_operations(["resize:width=1600", "format:type=jpeg,quality=85"]),
]


def photo() -> Path:
    found = sorted(PHOTOS.glob("006mp-*.jpg")) or sorted(PHOTOS.glob("*.jpg"))
    assert found, f"no photographs in {PHOTOS}"
    return found[0]


def pixels(result: RenderResult | PixelpipeError) -> np.ndarray:
    assert isinstance(result, RenderResult), result
    image = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def test_each_rendition_is_as_close_to_a_full_decode_as_one_at_a_time() -> None:
    source = photo()
    full = cv2.imread(str(source), cv2.IMREAD_COLOR)
    once = render_many(source, THREE)
    for ops, made in zip(THREE, once, strict=True):
        alone = render(source, ops)
        assert isinstance(made, RenderResult)
        assert (made.width, made.height, made.format) == (alone.width, alone.height,
                                                          alone.format)
        reference = cv2.resize(full, (made.width, made.height), interpolation=cv2.INTER_AREA)
        # decode-once is never worse than the single render by more than 0.5 dB ...
        assert psnr(pixels(made), reference) >= psnr(pixels(alone), reference) - 0.5
        # ... and close to it in absolute terms (both are lossy encodes of a downscale)
        assert psnr(pixels(made), pixels(alone)) > 30.0


def test_the_source_is_decoded_once() -> None:
    once = render_many(photo(), THREE)
    decodes = [r.timings_ms.get("decode") for r in once if isinstance(r, RenderResult)]
    assert len(decodes) == 3 and sum(1 for d in decodes if d is not None) == 1


def test_a_single_rendition_is_byte_identical_to_render() -> None:
    source = photo()
    (made,) = render_many(source, [THREE[1]])
    assert isinstance(made, RenderResult)
    assert made.data == render(source, THREE[1]).data


def test_one_failing_rendition_leaves_the_others_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = photo()
    # the middle one plans an intermediate over the pixel limit: refused before any decode
    huge = parse_operations(["resize:width=60000,height=60000,fit=exact,enlarge=true"])
    good = render_many(source, [THREE[0], THREE[2]])
    out = render_many(source, [THREE[0], huge, THREE[2]], Limits())
    assert isinstance(out[1], ImageTooLarge) and out[1].processor == "resize"
    assert [r.data for r in (out[0], out[2]) if isinstance(r, RenderResult)] == [
        r.data for r in good if isinstance(r, RenderResult)]

    # an encoder failing for one format fails only the rendition in that format
    real = engine.encode

    def failing_webp(image: Any, kind: str, options: Any) -> bytes:
        if kind == "webp":
            raise InternalError("webp encoder refused the image", processor="encode")
        return real(image, kind, options)

    monkeypatch.setattr(engine, "encode", failing_webp)
    out = render_many(source, THREE)
    assert isinstance(out[1], InternalError) and out[1].processor == "encode"
    assert all(isinstance(out[i], RenderResult) for i in (0, 2))


def test_a_source_that_cannot_be_decoded_fails_them_all(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(encode(photo_like(64, 48), ".jpg")[:300] + bytes(2000))
    with pytest.raises(CorruptImage):
        render_many(bad, THREE)


async def test_run_many_through_the_pool_returns_results_and_errors(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(encode(photo_like(400, 300), ".png"))
    renditions = [parse_operations(["resize:width=100", "format:type=png"]),
                  parse_operations(["resize:width=60000,height=60000,fit=exact,enlarge=true"]),
                  parse_operations(["resize:width=40", "format:type=jpeg"])]
    async with ImagePool(workers=1, task_timeout_s=20) as pool:
        out = await pool.run_many(str(source), renditions, Limits())
    assert [type(r).__name__ for r in out] == ["RenderResult", "ImageTooLarge", "RenderResult"]
    assert [(r.width, r.format) for r in out if isinstance(r, RenderResult)] == [
        (100, "png"), (40, "jpeg")]
