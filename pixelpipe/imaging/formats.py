"""Magic-byte allow-list and header parsers: what a source is and how big, before decoding.

Each parser reads only the container structure (markers, chunks, boxes, IFDs), never pixel
data, and fails with ``corrupt_image`` when the structure is cut short: OpenCV decodes a
truncated JPEG as grey with only a warning, so truncation is caught here. The returned
:class:`Header` also carries the raw EXIF block when the container has one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from pixelpipe.errors import CorruptImage, ImageTooLarge, UnsupportedFormat
from pixelpipe.imaging.limits import Limits

__all__ = [
    "FORMAT_ALIASES",
    "IMAGE_SUFFIXES",
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "SOURCE_FORMATS",
    "SOURCE_SUFFIXES",
    "Header",
    "SourceFormat",
    "check_limits",
    "content_type_of",
    "output_extension",
    "probe",
    "sniff",
]

# The format tables, the one place they are written: which formats we read and write, their
# file suffixes and media types (the CLI, the client API and the store import them from here).
SourceFormat = Literal["jpeg", "png", "webp", "avif", "tiff", "gif", "bmp"]
SOURCE_FORMATS: Final = ("jpeg", "png", "webp", "avif", "tiff", "gif", "bmp")
OUTPUT_FORMATS: Final = ("jpeg", "png", "webp", "avif")
#: other names accepted for a format (``format:type=jpg``)
FORMAT_ALIASES: Final = {"jpg": "jpeg"}
#: file suffix (lower case) -> the source format it names
SOURCE_SUFFIXES: Final[dict[str, SourceFormat]] = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".avif": "avif",
    ".tif": "tiff", ".tiff": "tiff", ".gif": "gif", ".bmp": "bmp",
}
#: the suffixes of image files (``pixelpipe publish DIR`` picks these)
IMAGE_SUFFIXES: Final = frozenset(SOURCE_SUFFIXES)
#: output format -> the suffix its files get (and OpenCV's encoder is chosen by)
OUTPUT_SUFFIXES: Final = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}
_OCTET_STREAM: Final = "application/octet-stream"


def content_type_of(suffix: str) -> str:
    """The media type of a file by its suffix (``.JPG`` -> ``image/jpeg``); anything that is
    not an image suffix is ``application/octet-stream``."""
    fmt = SOURCE_SUFFIXES.get(suffix.lower())
    return f"image/{fmt}" if fmt else _OCTET_STREAM


def output_extension(fmt: str) -> str:
    """The file extension (no dot) of an output format: ``jpeg`` -> ``jpg``."""
    return OUTPUT_SUFFIXES.get(fmt, f".{fmt}")[1:]

_AVIF_BRANDS: Final = (b"avif", b"avis")
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class Header:
    """What the container says: format, stored (pre-orientation) size and hints."""

    format: SourceFormat
    width: int
    height: int
    #: colour components (JPEG: 1 gray, 3 YCbCr, 4 CMYK/YCCK); 0 when not known
    components: int = 0
    #: the raw TIFF-structured EXIF block, if the container carries one
    exif: bytes | None = None
    #: the container says it holds more than one frame (only the first is rendered)
    animated: bool = False


def sniff(data: bytes) -> SourceFormat:
    """Identify ``data`` by its magic bytes; anything off the allow-list is refused."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and _is_avif_ftyp(data):
        return "avif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    raise UnsupportedFormat("unrecognised or disallowed image format", processor="decode")


def _is_avif_ftyp(data: bytes) -> bool:
    size = int.from_bytes(data[:4], "big")
    if size < 16 or size > len(data) or size > 4096:
        return False
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, size - 3, 4)]
    return any(brand in _AVIF_BRANDS for brand in brands)


def probe(data: bytes) -> Header:
    """Sniff ``data`` and parse its header; ``corrupt_image`` if the structure is broken."""
    fmt = sniff(data)
    try:
        header = _PARSERS[fmt](data)
    except (struct.error, IndexError, ValueError) as exc:
        raise CorruptImage(f"broken {fmt} header: {exc}", processor="decode") from exc
    if header.width <= 0 or header.height <= 0:
        raise CorruptImage(f"{fmt} header has no usable size", processor="decode")
    return header


def check_limits(width: int, height: int, limits: Limits, *, processor: str = "decode") -> None:
    """Refuse a size over ``limits`` (pixels or either side) with ``image_too_large``."""
    if width > limits.max_side or height > limits.max_side:
        raise ImageTooLarge(
            f"{width}x{height} exceeds {limits.max_side} px a side", processor=processor
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} exceeds {limits.max_pixels} pixels", processor=processor
        )


def _corrupt(message: str) -> CorruptImage:
    return CorruptImage(message, processor="decode")


# --- JPEG ------------------------------------------------------------------------------------

_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> Header:
    pos = 2
    exif: bytes | None = None
    size: tuple[int, int, int] | None = None
    end = len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise _corrupt(f"jpeg marker expected at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if marker == 0xD9:
            raise _corrupt("jpeg ends before its image data")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > end:
            raise _corrupt("jpeg segment runs past the end of the data")
        body = data[pos + 2 : pos + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and exif is None:
            exif = body[6:]
        elif marker in _SOF_MARKERS:
            _precision, height, width, components = struct.unpack_from(">BHHB", body, 0)
            size = (width, height, components)
        elif marker == 0xDA:
            if size is None:
                raise _corrupt("jpeg scan before its frame header")
            _check_jpeg_complete(data, pos + length)
            return Header("jpeg", size[0], size[1], components=size[2], exif=exif)
        pos += length
    raise _corrupt("jpeg has no image data")


def _check_jpeg_complete(data: bytes, scan_start: int) -> None:
    # A complete JPEG ends with EOI (FFD9). Cameras and editors may append trailers after it
    # (padding, maker data), so EOI anywhere after the first scan counts; without one the
    # file was cut and libjpeg would paint the missing rows grey.
    if data.rfind(b"\xff\xd9", scan_start) < 0:
        raise _corrupt("jpeg is truncated (no end-of-image marker)")


# --- PNG -------------------------------------------------------------------------------------


def _png(data: bytes) -> Header:
    pos = 8
    end = len(data)
    width = height = 0
    exif: bytes | None = None
    animated = False
    first = True
    while True:
        if pos + 12 > end:
            raise _corrupt("png is truncated (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > end:
            raise _corrupt(f"png chunk {kind!r} runs past the end of the data")
        body_at = pos + 8
        if first:
            if kind != b"IHDR" or length != 13:
                raise _corrupt("png does not start with IHDR")
            width, height = struct.unpack_from(">II", data, body_at)
            first = False
        elif kind == b"eXIf" and exif is None:
            exif = data[body_at : body_at + length]
        elif kind == b"acTL":
            animated = True
        elif kind == b"IEND":
            return Header("png", width, height, exif=exif, animated=animated)
        pos += 12 + length


# --- WebP ------------------------------------------------------------------------------------


def _webp(data: bytes) -> Header:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        raise _corrupt("webp is truncated (RIFF size past the end of the data)")
    end = riff_size + 8
    pos = 12
    width = height = 0
    exif: bytes | None = None
    animated = False
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        body_at = pos + 8
        if body_at + length > end:
            raise _corrupt(f"webp chunk {kind!r} runs past the end of the data")
        if kind == b"VP8X":
            flags = data[body_at]
            animated = bool(flags & 0x02)
            width = 1 + int.from_bytes(data[body_at + 4 : body_at + 7], "little")
            height = 1 + int.from_bytes(data[body_at + 7 : body_at + 10], "little")
        elif kind == b"VP8 " and not width:
            if data[body_at + 3 : body_at + 6] != b"\x9d\x01\x2a":
                raise _corrupt("webp VP8 frame has a bad start code")
            w, h = struct.unpack_from("<HH", data, body_at + 6)
            width, height = w & 0x3FFF, h & 0x3FFF
        elif kind == b"VP8L" and not width:
            if data[body_at] != 0x2F:
                raise _corrupt("webp VP8L frame has a bad signature")
            bits = int.from_bytes(data[body_at + 1 : body_at + 5], "little")
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif kind == b"EXIF" and exif is None:
            exif = data[body_at : body_at + length]
            if exif.startswith(b"Exif\x00\x00"):  # some writers keep the JPEG prefix
                exif = exif[6:]
        pos = body_at + length + (length & 1)
    return Header("webp", width, height, exif=exif, animated=animated)


# --- AVIF (ISO BMFF) -------------------------------------------------------------------------


def _avif(data: bytes) -> Header:
    pos = 0
    end = len(data)
    meta: bytes | None = None
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header_len = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header_len = 16
        elif size == 0:
            size = end - pos
        if size < header_len or pos + size > end:
            raise _corrupt(f"avif box {kind!r} runs past the end of the data")
        if kind == b"meta":
            meta = data[pos + header_len : pos + size]
        pos += size
    if meta is None:
        raise _corrupt("avif has no meta box")
    # Every image item (primary, alpha, grid tiles) declares its size in an 'ispe' property;
    # the largest bounds what a decoder may allocate.
    width = height = 0
    at = meta.find(b"ispe")
    while at >= 0:
        w, h = struct.unpack_from(">II", meta, at + 8)
        width, height = max(width, w), max(height, h)
        at = meta.find(b"ispe", at + 4)
    animated = data[8:12] == b"avis"
    return Header("avif", width, height, animated=animated)


# --- TIFF ------------------------------------------------------------------------------------


def _tiff(data: bytes) -> Header:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    width = height = 0
    for i in range(count):
        tag, kind, _n, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * i)
        if tag in (256, 257):
            number = (
                struct.unpack_from(order + "H", value)[0]
                if kind == 3
                else struct.unpack_from(order + "I", value)[0]
            )
            if tag == 256:
                width = number
            else:
                height = number
    # a TIFF is its own EXIF structure: the orientation tag lives in IFD0
    return Header("tiff", width, height, exif=data)


# --- GIF, BMP --------------------------------------------------------------------------------


def _gif(data: bytes) -> Header:
    width, height = struct.unpack_from("<HH", data, 6)
    if len(data) < 14:
        raise _corrupt("gif is truncated")
    # Counting frames would mean walking every LZW sub-block: an approximation is enough for
    # the "first frame only" note, so look for a second image descriptor's extension marker.
    animated = data.count(b"\x21\xf9\x04") > 1
    return Header("gif", width, height, animated=animated)


def _bmp(data: bytes) -> Header:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib_size >= 40:
        width, height = struct.unpack_from("<ii", data, 18)
        height = abs(height)  # negative height means rows stored top-down
    else:
        raise _corrupt(f"bmp has an unknown header size {dib_size}")
    return Header("bmp", width, height)


_PARSERS = {
    "jpeg": _jpeg,
    "png": _png,
    "webp": _webp,
    "avif": _avif,
    "tiff": _tiff,
    "gif": _gif,
    "bmp": _bmp,
}
