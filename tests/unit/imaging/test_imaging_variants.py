"""Odd but legal inputs are normalised: 16-bit, gray, alpha, palette, CMYK, animated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imaging_samples import encode, photo_like

from pixelpipe.imaging import parse_operations, render
from pixelpipe.imaging._cv import cv2

OPS = parse_operations(["resize:width=32"])
IMAGE = photo_like(96, 64)


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _pil_image(mode: str):  # type: ignore[no-untyped-def]
    pil = pytest.importorskip("PIL.Image")
    return pil.fromarray(IMAGE[:, :, ::-1]).convert(mode)


def _pil_bytes(image, fmt: str, **options: object) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (encode((IMAGE.astype(np.uint16) * 257), ".png"), "png"),
        (encode(cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY), ".png"), "png"),
        (encode(cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY), ".jpg"), "jpeg"),
        (encode(IMAGE.astype(np.uint16) * 257, ".tiff"), "jpeg"),
        (encode(IMAGE, ".bmp"), "jpeg"),
        (encode(IMAGE, ".avif"), "jpeg"),
        (encode(IMAGE, ".jpg") + b"trailing camera junk\xff\x00", "jpeg"),
    ],
    ids=["png16", "png-gray", "jpeg-gray", "tiff16", "bmp", "avif", "jpeg-trailer"],
)
def test_variants_render_in_the_default_format(data: bytes, fmt: str) -> None:
    result = render(data, OPS)
    assert result.format == fmt
    assert _decode(result.data).dtype == np.uint8


def test_real_alpha_is_kept_and_opaque_alpha_dropped() -> None:
    rgba = cv2.cvtColor(IMAGE, cv2.COLOR_BGR2BGRA)
    assert _decode(render(encode(rgba, ".png"), OPS).data).shape[2] == 3  # fully opaque
    rgba[:10, :, 3] = 0
    out = _decode(render(encode(rgba, ".png"), OPS).data)
    assert out.shape[2] == 4 and out[0, 0, 3] == 0
    # a transparent TIFF has no jpeg/png/webp default: png keeps the alpha
    assert render(encode(rgba, ".tiff"), OPS).format == "png"
    # jpeg cannot hold alpha: composited over white
    jpeg = render(encode(rgba, ".png"), parse_operations(["format:type=jpeg"]))
    assert _decode(jpeg.data)[0, 0].tolist() == pytest.approx([255, 255, 255], abs=10)


def test_gray_alpha_and_palette_pngs() -> None:
    gray_alpha = _pil_bytes(_pil_image("LA"), "PNG")
    assert render(gray_alpha, OPS).width == 32
    palette = _pil_image("P")
    palette.info["transparency"] = 0
    assert render(_pil_bytes(palette, "PNG", transparency=0), OPS).width == 32


def test_cmyk_jpeg_becomes_bgr() -> None:
    data = _pil_bytes(_pil_image("CMYK"), "JPEG", quality=95)
    out = _decode(render(data, parse_operations(["format:type=png"])).data)
    assert out.shape == (64, 96, 3)
    assert np.abs(out.astype(int) - IMAGE.astype(int)).mean() < 40


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_sources_render_their_first_frame(fmt: str) -> None:
    pil = pytest.importorskip("PIL.Image")
    first = pil.new("RGB", (40, 30), (255, 0, 0))
    second = pil.new("RGB", (40, 30), (0, 0, 255))
    data = _pil_bytes(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    out = _decode(render(data, parse_operations(["format:type=png"])).data)
    assert out.shape[:2] == (30, 40)
    assert out[15, 20, 2] > 200 and out[15, 20, 0] < 50  # red, the first frame


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp", "avif"])
def test_every_output_format_is_verified_and_sized(kind: str) -> None:
    result = render(encode(IMAGE, ".png"), parse_operations(["resize:width=48", f"format:type={kind}"]))
    assert result.format == kind
    assert _decode(result.data).shape[:2] == (32, 48)
    assert set(result.timings_ms) >= {"decode", "resize", "encode", "verify"}
