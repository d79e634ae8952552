"""HEIC/HEIF input (issue 15): sniffing, the header size before any decode, decoding through
pillow-heif (libheif), orientation, hostile files and decode-once renders.

Every file here is a real HEIC made at test time by pillow-heif's own encoder (libheif +
x265): plain, with an iPhone-like orientation (``irot``/``imir`` *and* an EXIF Orientation
tag), odd sizes (which libheif stores with a ``clap`` crop), grids of tiles, alpha, gray.
Hostile variants are patched from them. ``PIXELPIPE_HEIC_SAMPLES`` may name a folder of
camera files (e.g. pillow-heif's sdist ``tests/images``) for one more check against libheif.

The orientation rule under test: HEIF's transforms (``irot``, ``imir``, ``clap``) are applied
by libheif while decoding; the EXIF Orientation tag is ignored for HEIC, as Apple's ImageIO,
libheif and sharp do, so an iPhone photo (which carries both) is turned once, not twice.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from imaging_samples import (
    bmff_box,
    encode,
    ftyp,
    heic,
    heic_claiming,
    patch_box,
    photo_like,
    quadrants,
)

import pixelpipe.imaging.engine as engine
from pixelpipe.errors import (
    CorruptImage,
    ImageTooLarge,
    PixelpipeError,
    UnsupportedFormat,
    WorkerCrashed,
)
from pixelpipe.imaging import DEFAULT_LIMITS, Limits, RenderResult, parse_operations, render
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.decode import decode, translate_heif_error
from pixelpipe.imaging.engine import render_many
from pixelpipe.imaging.exif import apply_orientation
from pixelpipe.imaging.formats import (
    SOURCE_FORMATS,
    SOURCE_SUFFIXES,
    Header,
    content_type_of,
    probe,
    sniff,
)
from pixelpipe.imaging.spec import Operation

pillow_heif = pytest.importorskip("pillow_heif")

INPUT_CODES = {"corrupt_image", "unsupported_format", "image_too_large"}
OPS = parse_operations(["resize:width=32"])
PNG = parse_operations(["format:type=png"])
IMAGE = photo_like(96, 64)
#: a bigger, smoother picture for the grid (tiles of 64 px: 4 x 3 of them)
GRID_IMAGE = photo_like(200, 130, seed=5)


@pytest.fixture(scope="module")
def plain() -> bytes:
    return heic(IMAGE, 92)


@pytest.fixture(scope="module")
def rotated() -> bytes:
    """Stored as the quadrants (96 x 64), upright after a quarter turn clockwise: ``irot``
    says so, and the EXIF block says Orientation 6 as well (an iPhone held upright)."""
    return heic(quadrants(96, 64), 92, orientation=6)


@pytest.fixture(scope="module")
def grid() -> bytes:
    return heic(GRID_IMAGE, 92, tile=64)


def pixels(result: RenderResult | PixelpipeError, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    assert isinstance(result, RenderResult), result
    image = cv2.imdecode(np.frombuffer(result.data, np.uint8), flags)
    assert image is not None
    return image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def outcome(data: bytes, ops: Sequence[Operation] = OPS,
            limits: Limits = DEFAULT_LIMITS) -> RenderResult | PixelpipeError:
    try:
        return render(data, ops, limits)
    except PixelpipeError as exc:
        return exc


def assert_valid_or_precise(data: bytes) -> None:
    result = outcome(data)
    if isinstance(result, PixelpipeError):
        assert result.code in INPUT_CODES, result
        assert result.processor == "decode", result
    else:
        assert result.width == 32 and result.data


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test: what is refused must be refused from the
    header alone."""
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(engine, "decode", refuse)
    monkeypatch.setattr(pillow_heif, "open_heif", refuse)
    monkeypatch.setattr(pillow_heif, "read_heif", refuse)


# --- the format tables and sniffing -----------------------------------------------------------


def test_heic_is_a_source_format_and_not_an_output_format() -> None:
    assert "heic" in SOURCE_FORMATS
    assert SOURCE_SUFFIXES[".heic"] == SOURCE_SUFFIXES[".heif"] == "heic"
    assert content_type_of(".HEIC") == "image/heic"
    with pytest.raises(PixelpipeError):
        parse_operations(["format:type=heic"])


@pytest.mark.parametrize(
    ("brands", "expected"),
    [
        ((b"heic", b"mif1", b"heic"), "heic"),  # what libheif and iPhones write
        ((b"heix", b"mif1"), "heic"),
        ((b"heim",), "heic"),
        ((b"heis",), "heic"),
        ((b"hevc", b"msf1"), "heic"),  # an HEVC image sequence
        ((b"hevx",), "heic"),
        ((b"mif1", b"heic"), "heic"),
        ((b"mif1", b"miaf"), "heic"),  # generic HEIF, no AVIF brand: libheif decides
        ((b"msf1",), "heic"),
        ((b"avif", b"mif1", b"miaf"), "avif"),
        ((b"avis", b"msf1", b"avif"), "avif"),
        ((b"mif1", b"mif1", b"avif", b"miaf"), "avif"),  # generic major, AVIF compatible
        ((b"heic", b"avif"), "heic"),  # the major brand comes first
        ((b"avif", b"heic"), "avif"),
        ((b"mif1", b"avif", b"heic"), "avif"),  # then the compatible brands in their order
        ((b"mif1", b"heic", b"avif"), "heic"),
        ((b"isom", b"heix"), "heic"),
    ],
)
def test_ftyp_brands_in_order(brands: tuple[bytes, ...], expected: str) -> None:
    assert sniff(ftyp(*brands) + b"\x00" * 32) == expected


@pytest.mark.parametrize("brands", [(b"isom", b"mp41"), (b"mp42",), (b"crx ",), (b"jp2 ",)])
def test_other_iso_bmff_files_are_unsupported(brands: tuple[bytes, ...]) -> None:
    with pytest.raises(UnsupportedFormat):
        sniff(ftyp(*brands) + b"\x00" * 32)


def test_avif_is_still_avif() -> None:
    avif = encode(IMAGE, ".avif", cv2.IMWRITE_AVIF_QUALITY, 80)
    assert probe(avif).format == "avif"
    assert render(avif, OPS).width == 32


# --- probe: the size from the header ------------------------------------------------------------


def test_probe_gives_heic_and_the_size(plain: bytes, grid: bytes) -> None:
    header = probe(plain)
    assert (header.format, header.width, header.height) == ("heic", 96, 64)
    assert header.exif is None and not header.animated
    assert (probe(grid).width, probe(grid).height) == (200, 130)


@pytest.mark.parametrize(
    ("width", "height", "orientation"),
    [(95, 63, None), (95, 63, 6), (33, 17, 5), (29, 100, 8), (1, 1, None)],
)
def test_probe_size_matches_libheif_with_clap_and_irot(width: int, height: int,
                                                       orientation: int | None) -> None:
    # odd sizes: libheif codes a padded picture and stores a clean-aperture crop ('clap')
    data = heic(photo_like(width, height), 90, orientation=orientation)
    header = probe(data)
    libheif = pillow_heif.open_heif(data)
    assert (header.width, header.height) == libheif.size
    turned = orientation is not None and orientation >= 5
    assert (header.width, header.height) == ((height, width) if turned else (width, height))
    assert (render(data, PNG).width, render(data, PNG).height) == libheif.size


def test_the_limit_is_checked_from_the_header_before_decoding(
    plain: bytes, grid: bytes, no_decoding: None
) -> None:
    with pytest.raises(ImageTooLarge) as info:
        render(heic_claiming(plain, 100_000, 100_000), OPS)
    assert info.value.processor == "decode" and "100000x100000" in str(info.value)
    with pytest.raises(ImageTooLarge):  # one side over, the pixels within
        render(heic_claiming(plain, 16_385, 10), OPS)
    with pytest.raises(ImageTooLarge):  # a real file over smaller limits
        render(grid, OPS, Limits(max_pixels=200 * 130 - 1))
    with pytest.raises(ImageTooLarge):  # an over-limit plan is refused before decoding too
        render(plain, parse_operations(["resize:width=20000,enlarge=true"]))
    with pytest.raises(ImageTooLarge):
        render_many(heic_claiming(plain, 100_000, 100_000), [OPS, PNG])


def test_a_header_the_decoder_disagrees_with_is_corrupt_before_pixels(plain: bytes) -> None:
    with pytest.raises(CorruptImage, match="96x64 to libheif"):
        decode(plain, Header("heic", 48, 32))


# --- decoding and rendering -------------------------------------------------------------------


def test_render_to_jpeg_is_the_right_size_and_close_to_the_source(plain: bytes) -> None:
    result = render(plain, parse_operations(["format:type=jpeg,quality=95"]))
    assert (result.format, result.width, result.height) == ("jpeg", 96, 64)
    assert psnr(pixels(result, cv2.IMREAD_COLOR), IMAGE) > 30
    resized = render(plain, OPS)  # no format op: a HEIC source becomes a JPEG
    assert (resized.format, resized.width, resized.height) == ("jpeg", 32, 21)
    exact = pixels(render(plain, PNG))
    reference = np.asarray(pillow_heif.open_heif(plain, bgr_mode=True))
    assert np.array_equal(exact, reference)  # what libheif decodes, not a copy of a copy


def test_a_grid_of_tiles_renders_whole(grid: bytes) -> None:
    assert "tiling" in pillow_heif.open_heif(grid).info  # it really is a grid
    result = render(grid, PNG)
    assert (result.width, result.height) == (200, 130)
    assert psnr(pixels(result), GRID_IMAGE) > 30


def test_alpha_gray_and_premultiplied_sources() -> None:
    bgra = np.dstack((IMAGE, np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))))
    result = render(heic(bgra, 95), PNG)
    assert result.format == "png"
    out = pixels(result)
    assert out.shape == (64, 96, 4)
    assert np.abs(out[:, :, 3].astype(int) - bgra[:, :, 3]).max() <= 8
    opaque = np.dstack((IMAGE, np.full((64, 96), 255, np.uint8)))
    assert pixels(render(heic(opaque, 95), PNG)).shape == (64, 96, 3)  # opaque alpha dropped
    gray = cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY)
    out = pixels(render(heic(gray, 95), PNG))
    assert out.shape == (64, 96) and psnr(out, gray) > 30
    # colour stored multiplied by alpha (the file says so) comes out straight
    stored = np.zeros((16, 16, 4), np.uint8)
    stored[:] = (25, 50, 100, 128)
    out = pixels(render(heic(stored, 100, premultiplied=True), PNG))
    assert np.abs(out[8, 8].astype(int) - (50, 100, 199, 128)).max() <= 6


def _ten_bit(mode: str, samples: np.ndarray) -> bytes:
    """A 10-bit HEIC from 16-bit samples (pillow-heif keeps the top 10 bits)."""
    container = pillow_heif.from_bytes(mode, (samples.shape[1], samples.shape[0]),
                                       np.ascontiguousarray(samples).tobytes())
    buffer = io.BytesIO()
    container.save(buffer, quality=95, enc_params={"x265:pools": "1"})
    data = buffer.getvalue()
    assert pillow_heif.open_heif(data, convert_hdr_to_8bit=False).info["bit_depth"] == 10
    return data


def test_ten_bit_colour_and_gray_come_out_as_eight_bit() -> None:
    deep = IMAGE[:, :, ::-1].astype(np.uint16) * 257
    out = pixels(render(_ten_bit("RGB;16", deep), PNG))
    assert out.dtype == np.uint8 and out.shape == (64, 96, 3) and psnr(out, IMAGE) > 30
    gray = cv2.cvtColor(IMAGE, cv2.COLOR_BGR2GRAY)
    # libheif hands 10-bit gray over as 16-bit samples even when asked for 8-bit
    out = pixels(render(_ten_bit("I;16", gray.astype(np.uint16) * 257), PNG))
    assert out.dtype == np.uint8 and out.shape == (64, 96) and psnr(out, gray) > 30


# --- orientation --------------------------------------------------------------------------------


def test_an_iphone_like_heic_is_turned_once(rotated: bytes) -> None:
    header = probe(rotated)
    assert (header.width, header.height) == (64, 96)  # displayed size: irot applied
    assert header.exif is None  # the EXIF Orientation 6 must not be applied on top
    assert b"Exif" in rotated  # ... though the file does carry it
    out = pixels(render(rotated, PNG))
    assert out.shape == (96, 64, 3)
    corners = [out[10, 10], out[10, -10], out[-10, 10], out[-10, -10]]
    # quadrants red|green over blue|white, turned a quarter clockwise: blue|red over white|green
    for got, want in zip(corners, [(255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 255, 0)],
                         strict=True):
        assert np.abs(got.astype(int) - want).max() < 40, corners
    jpeg = render(rotated, parse_operations(["resize:width=32"]))
    assert (jpeg.width, jpeg.height) == (32, 48)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_renders_upright(orientation: int) -> None:
    stored = quadrants(96, 64)
    data = heic(stored, 95, orientation=orientation)
    out = pixels(render(data, PNG))
    upright = apply_orientation(stored, orientation)  # what EXIF orientation means
    assert out.shape == upright.shape
    assert psnr(out, upright) > 25


def test_the_exif_orientation_alone_is_ignored(rotated: bytes) -> None:
    # the same file with irot set to 0 degrees: the EXIF block still says 6, but in HEIF the
    # transforms are the orientation (libheif, Apple, sharp): the stored pixels are upright
    unturned = patch_box(rotated, b"irot", b"\x00")
    assert probe(unturned).exif is None
    out = pixels(render(unturned, PNG))
    assert out.shape == (64, 96, 3)
    assert psnr(out, quadrants(96, 64)) > 25


def test_render_many_from_one_heic_decode(rotated: bytes, grid: bytes) -> None:
    renditions = [parse_operations(["resize:width=48"]),
                  parse_operations(["resize:width=24", "format:type=webp,lossless=true"]),
                  PNG]
    results = render_many(rotated, renditions)
    sizes = [(r.width, r.height) for r in results if isinstance(r, RenderResult)]
    assert sizes == [(48, 72), (24, 36), (64, 96)]
    for many, ops in zip(results, renditions, strict=True):
        single = render(rotated, ops)
        assert psnr(pixels(many, cv2.IMREAD_COLOR), pixels(single, cv2.IMREAD_COLOR)) > 35
    grid_results = render_many(grid, [OPS, PNG])
    assert [(r.width, r.height) for r in grid_results if isinstance(r, RenderResult)] == [
        (32, 21), (200, 130)]


async def test_heic_in_the_process_pool_under_its_memory_cap(rotated: bytes,
                                                            tmp_path: Path) -> None:
    from pixelpipe.imaging import ImagePool

    good, cut = tmp_path / "upright.heic", tmp_path / "cut.heic"
    good.write_bytes(rotated)
    cut.write_bytes(rotated[: len(rotated) // 2])
    async with ImagePool(workers=1, task_timeout_s=30, memory_limit_mb=1024) as pool:
        result = await pool.run(str(good), OPS, Limits())
        assert (result.width, result.height) == (32, 48)
        many = await pool.run_many(str(good), [OPS, PNG], Limits())
        assert [(r.width, r.height) for r in many if isinstance(r, RenderResult)] == [
            (32, 48), (64, 96)]
        with pytest.raises(CorruptImage):
            await pool.run(str(cut), OPS, Limits())


# --- hostile input -------------------------------------------------------------------------------


def test_truncated_at_many_points_is_corrupt_never_an_image(rotated: bytes, grid: bytes) -> None:
    for data in (rotated, grid):
        for cut in sorted({*range(1, 64, 7), *np.linspace(64, len(data) - 1, 40).astype(int)}):
            result = outcome(data[:cut])
            assert isinstance(result, PixelpipeError), f"cut at {cut} of {len(data)} rendered"
            assert result.code in {"corrupt_image", "unsupported_format"}, (cut, result)


def test_garbage_and_random_bytes_after_a_heic_ftyp_are_corrupt(plain: bytes) -> None:
    rng = np.random.default_rng(11)
    head = ftyp(b"heic", b"mif1", b"heic")
    for length in (0, 1, 7, 8, 64, 4096):
        for _ in range(5):
            junk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            with pytest.raises(CorruptImage):
                render(head + junk, OPS)
    # a heic ftyp and nothing but zeros (one zero-size box to the end, no meta box)
    with pytest.raises(CorruptImage, match="no meta box"):
        render(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, OPS)
    # the structure intact, the coded picture replaced by random bytes
    mdat = plain.find(b"mdat") + 4
    assert_valid_or_precise(plain[:mdat] + rng.integers(0, 256, len(plain) - mdat,
                                                        dtype=np.uint8).tobytes())
    # the picture's data missing: the file ends right after its meta box
    with pytest.raises(CorruptImage, match="truncated"):
        render(plain[: mdat - 8], OPS)


def test_bit_flips_give_valid_output_or_a_precise_code(plain: bytes, rotated: bytes,
                                                       grid: bytes) -> None:
    rng = np.random.default_rng(7)
    for data in (plain, rotated, grid):
        for _ in range(40):
            mutated = bytearray(data)
            for _ in range(int(rng.integers(1, 6))):
                mutated[int(rng.integers(0, len(mutated)))] ^= 1 << int(rng.integers(0, 8))
            assert_valid_or_precise(bytes(mutated))


def test_grid_claims_that_do_not_add_up_are_refused_before_decoding(
    grid: bytes, no_decoding: None
) -> None:
    descriptor = grid[grid.find(b"idat") + 4 : grid.find(b"idat") + 12]
    assert descriptor == struct.pack(">BBBBHH", 0, 0, 2, 3, 200, 130)  # 3 x 4 tiles
    # the grid's output far larger than its ispe: libheif would allocate the output
    with pytest.raises(CorruptImage, match="ispe"):
        render(patch_box(grid, b"idat", struct.pack(">BBBBHH", 0, 0, 2, 3, 65_535, 65_535)), OPS)
    # grid, ispe and tiles all claim it consistently: then it is simply too large
    huge = patch_box(grid, b"idat", struct.pack(">BBBBHH", 0, 0, 2, 3, 60_000, 60_000))
    huge = heic_claiming(heic_claiming(huge, 60_000, 60_000), 15_000, 20_000, nth=1)
    with pytest.raises(ImageTooLarge):
        render(huge, OPS)
    # a tile bomb: tiles that say 100,000 x 100,000 inside a 200 x 130 picture
    with pytest.raises(CorruptImage, match="pixels of tiles"):
        render(heic_claiming(grid, 100_000, 100_000, nth=1), OPS)
    # more tiles than the grid has cells, tiles that do not cover it
    with pytest.raises(CorruptImage, match="tiles for"):
        render(patch_box(grid, b"idat", struct.pack(">BBBBHH", 0, 0, 1, 3, 200, 130)), OPS)
    with pytest.raises(CorruptImage, match="do not cover"):
        render(heic_claiming(grid, 16, 16, nth=1), OPS)


def test_a_small_crop_of_a_huge_coded_picture_is_refused_before_decoding(
    no_decoding: None
) -> None:
    # the limits see the displayed (cropped) size; libheif would decode the coded one first
    odd = heic(photo_like(95, 63), 90)  # coded 96 x 64, a 'clap' crops it to 95 x 63
    assert b"clap" in odd and (probe(odd).width, probe(odd).height) == (95, 63)
    bomb = heic_claiming(odd, 100_000, 100_000)
    with pytest.raises(CorruptImage, match="coded as 100000x100000"):
        probe(bomb)  # the header parser refuses it: nothing is decoded
    with pytest.raises(CorruptImage, match="coded as 100000x100000"):
        render(bomb, OPS)


def test_what_is_not_a_decodable_heic_picture_is_unsupported(plain: bytes) -> None:
    with pytest.raises(UnsupportedFormat, match="av01"):  # an AV1 picture in a HEIF file
        render(plain.replace(b"hvc1", b"av01", 1), OPS)
    with pytest.raises(UnsupportedFormat, match="not pictures"):
        render(plain.replace(b"pict", b"vide", 1), OPS)
    sequence = ftyp(b"msf1", b"msf1", b"hevc") + bmff_box(b"moov", b"\x00" * 32)
    with pytest.raises(UnsupportedFormat, match="sequence"):
        render(sequence, OPS)


def test_structural_damage_is_corrupt(plain: bytes) -> None:
    with pytest.raises(CorruptImage, match="primary item"):
        render(plain.replace(b"pitm", b"pitx", 1), OPS)
    with pytest.raises(CorruptImage, match="ispe"):
        render(plain.replace(b"ispe", b"ispx", 1), OPS)
    with pytest.raises(CorruptImage, match="iloc"):
        render(plain.replace(b"iloc", b"ilox", 1), OPS)
    meta = plain.find(b"meta") - 4
    with pytest.raises(CorruptImage, match="past the end"):  # meta says it is huge
        render(plain[:meta] + struct.pack(">I", 1 << 30) + plain[meta + 4 :], OPS)


def test_libheif_errors_are_translated() -> None:
    cases = {
        "Memory allocation error: cannot allocate": WorkerCrashed,
        "Memory allocation error: Security limit exceeded: Image size 1653637654x64 exceeds "
        "the maximum image size 1073741824": ImageTooLarge,  # what libheif really says
        "Unsupported feature: Unsupported codec": UnsupportedFormat,
        "Invalid input: Unexpected end of file": CorruptImage,
        "Decoder plugin generated an error: Unspecified": CorruptImage,
    }
    for text, kind in cases.items():
        translated = translate_heif_error(ValueError(text))
        assert isinstance(translated, kind), (text, translated)
        assert isinstance(translated, PixelpipeError) and translated.processor == "decode"
    assert isinstance(translate_heif_error(MemoryError()), WorkerCrashed)


# --- camera files, when a folder of them is given -------------------------------------------------


def _camera_files() -> list[Path]:
    root = os.environ.get("PIXELPIPE_HEIC_SAMPLES")
    if not root:
        return []
    return sorted(p for p in Path(root).rglob("*")
                  if p.suffix.lower() in (".heic", ".heif", ".hif"))


@pytest.mark.skipif(not _camera_files(), reason="PIXELPIPE_HEIC_SAMPLES names no HEIC files")
@pytest.mark.parametrize("path", _camera_files(), ids=lambda p: p.name)
def test_camera_files_match_libheif_or_get_a_precise_code(path: Path) -> None:
    data = path.read_bytes()
    result = outcome(data)
    if isinstance(result, PixelpipeError):
        assert result.code in INPUT_CODES, result
        return
    header = probe(data)
    libheif = pillow_heif.open_heif(data)
    assert (header.width, header.height) == libheif[libheif.primary_index].size
