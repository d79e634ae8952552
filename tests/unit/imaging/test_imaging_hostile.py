"""A hostile set the tests build themselves: each input gives a valid output or a precise code."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imaging_samples import encode, jpeg_claiming, photo_like, png_bomb, png_chunk, png_claiming

from pixelpipe.errors import (
    CorruptImage,
    ForbiddenSource,
    ImageTooLarge,
    PixelpipeError,
    SourceMissing,
    UnsupportedFormat,
)
from pixelpipe.imaging import DEFAULT_LIMITS, Limits, RenderResult, parse_operations, render
from pixelpipe.imaging._cv import cv2

#: what a bad input may be refused with: the input's fault, never a crash or internal error
INPUT_CODES = {"corrupt_image", "unsupported_format", "image_too_large"}
OPS = parse_operations(["resize:width=32"])
IMAGE = photo_like(96, 64)


def _pil_bytes(fmt: str, **options: object) -> bytes:
    pil = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    pil.fromarray(IMAGE[:, :, ::-1]).save(buffer, fmt, **options)
    return buffer.getvalue()


SAMPLES: dict[str, bytes] = {
    "jpeg": encode(IMAGE, ".jpg"),
    "jpeg-progressive": encode(IMAGE, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "png": encode(IMAGE, ".png"),
    "webp-lossy": encode(IMAGE, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
    "webp-lossless": encode(IMAGE, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101),
    "tiff": encode(IMAGE, ".tiff"),
    "bmp": encode(IMAGE, ".bmp"),
    "avif": encode(IMAGE, ".avif", cv2.IMWRITE_AVIF_QUALITY, 80),
}


def _outcome(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RenderResult | PixelpipeError:
    try:
        return render(data, OPS, limits)
    except PixelpipeError as exc:
        return exc


def _assert_valid_or_precise(data: bytes) -> None:
    outcome = _outcome(data)
    if isinstance(outcome, PixelpipeError):
        assert outcome.code in INPUT_CODES, outcome
        assert outcome.processor == "decode", outcome
    else:
        assert outcome.width == 32 and outcome.data


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_render(name: str) -> None:
    result = render(SAMPLES[name], OPS)
    assert (result.width, result.height) == (32, 21)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_truncated_at_many_points_is_corrupt_never_grey(name: str) -> None:
    data = SAMPLES[name]
    for cut in sorted({*range(1, 64, 7), *np.linspace(64, len(data) - 1, 24).astype(int)}):
        outcome = _outcome(data[:cut])
        # a cut file must never come out as an image (OpenCV would paint JPEG gaps grey)
        assert isinstance(outcome, PixelpipeError), f"cut at {cut} of {len(data)} rendered"
        assert outcome.code in {"corrupt_image", "unsupported_format"}, (cut, outcome)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_bit_flips_give_valid_output_or_a_precise_code(name: str) -> None:
    rng = np.random.default_rng(7)
    data = SAMPLES[name]
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            mutated[int(rng.integers(0, len(mutated)))] ^= 1 << int(rng.integers(0, 8))
        _assert_valid_or_precise(bytes(mutated))


def test_zero_bytes_and_zero_filled_inputs() -> None:
    with pytest.raises(CorruptImage):
        render(b"", OPS)
    with pytest.raises(UnsupportedFormat):
        render(b"\x00" * 1024, OPS)
    jpeg = SAMPLES["jpeg"]
    zeroed = jpeg[:300] + b"\x00" * (len(jpeg) - 300)
    _assert_valid_or_precise(zeroed)


@pytest.mark.parametrize(
    "data",
    [
        png_claiming(100_000, 100_000),
        jpeg_claiming(60_000, 60_000),
        png_claiming(16_385, 10),  # one side over, pixels fine
        b"GIF89a" + struct.pack("<HH", 65_535, 65_535) + b"\x00" * 64,
        b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 100_000, -100_000) + b"\x00" * 64,
    ],
    ids=["png-100k", "jpeg-60k", "png-one-side", "gif-64k", "bmp-100k"],
)
def test_headers_claiming_huge_sizes_are_too_large(data: bytes) -> None:
    with pytest.raises(ImageTooLarge) as info:
        render(data, OPS)
    assert info.value.processor == "decode"


def test_png_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_bomb(8_000, 8_000)  # ~190 KB on disk, 192 MB decoded
    assert len(bomb) < 300_000
    with pytest.raises(ImageTooLarge):
        render(bomb, OPS)


def test_smaller_limits_apply_to_a_bomb_within_the_defaults() -> None:
    bomb = png_bomb(2_000, 2_000)
    assert render(bomb, OPS).width == 32
    with pytest.raises(ImageTooLarge):
        render(bomb, OPS, Limits(max_pixels=1_000_000))


def test_byte_cap_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(SAMPLES["jpeg"])
    with pytest.raises(ImageTooLarge):
        render(path, OPS, Limits(max_bytes=100))
    with pytest.raises(ImageTooLarge):
        render(SAMPLES["jpeg"], OPS, Limits(max_bytes=100))


def test_wrong_extension_is_decoded_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "really-a-png.jpg"
    path.write_bytes(SAMPLES["png"])
    result = render(str(path), OPS)
    assert result.format == "png"


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n" + b"\x00" * 64,
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"II+\x00" + b"\x00" * 64,  # BigTIFF
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 64,  # JPEG 2000
        b"hello world, not an image",
    ],
    ids=["pdf", "svg", "bigtiff", "jp2", "text"],  # HEIC is a source format now
)
def test_disallowed_formats_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        render(data, OPS)


def test_paths_that_are_not_regular_files(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing):
        render(tmp_path / "missing.jpg", OPS)
    with pytest.raises(ForbiddenSource):
        render(tmp_path, OPS)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ForbiddenSource):
        render(fifo, OPS)  # must not block waiting for a writer


def test_png_with_bad_crc_or_missing_iend_is_corrupt() -> None:
    data = bytearray(SAMPLES["png"])
    data[40] ^= 0xFF  # inside IDAT: libpng's CRC check fails
    with pytest.raises(CorruptImage):
        render(bytes(data), OPS)
    no_iend = SAMPLES["png"][:-12] + png_chunk(b"tEXt", b"a\x00b")
    with pytest.raises(CorruptImage):
        render(no_iend, OPS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0.0, 1.0),
    insert=st.binary(max_size=16),
)
def test_mutated_images_never_crash(
    name: str, edits: list[tuple[float, int]], cut: float, insert: bytes
) -> None:
    data = bytearray(SAMPLES[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    at = int(cut * len(data))
    mutated = bytes(data[:at]) + insert + bytes(data[at:]) if insert else bytes(data[: max(at, 1)])
    _assert_valid_or_precise(mutated)
