"""Magic-byte allow-list and header parsers: what a source is and how big, before decoding.

Each parser reads only the container structure (markers, chunks, boxes, IFDs), never pixel
data, and fails with ``corrupt_image`` when the structure is cut short: OpenCV decodes a
truncated JPEG as grey with only a warning, so truncation is caught here. The returned
:class:`Header` also carries the raw EXIF block when the container has one (never for HEIC:
see :func:`_heic` for why).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
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
# HEIC (HEVC-coded HEIF, what iPhones write) is read through pillow-heif (libheif), never written.
SourceFormat = Literal["jpeg", "png", "webp", "avif", "heic", "tiff", "gif", "bmp"]
SOURCE_FORMATS: Final = ("jpeg", "png", "webp", "avif", "heic", "tiff", "gif", "bmp")
OUTPUT_FORMATS: Final = ("jpeg", "png", "webp", "avif")
#: other names accepted for a format (``format:type=jpg``)
FORMAT_ALIASES: Final = {"jpg": "jpeg"}
#: file suffix (lower case) -> the source format it names
SOURCE_SUFFIXES: Final[dict[str, SourceFormat]] = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".avif": "avif",
    ".heic": "heic", ".heif": "heic", ".tif": "tiff", ".tiff": "tiff", ".gif": "gif",
    ".bmp": "bmp",
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

#: ISO BMFF ``ftyp`` brands: AV1-coded HEIF (AVIF) and HEVC-coded HEIF (HEIC); ``mif1`` and
#: ``msf1`` say only "some HEIF" and count as HEIC when no brand says AVIF
_AVIF_BRANDS: Final = (b"avif", b"avis")
_HEIC_BRANDS: Final = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
_HEIF_BRANDS: Final = (b"mif1", b"msf1")
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class Header:
    """What the container says: format, stored (pre-orientation) size and hints.

    For HEIC the size is the one libheif decodes to, its ``clap``/``irot``/``imir`` transforms
    applied (the decoder applies them; there is no EXIF orientation left to undo).
    """

    format: SourceFormat
    width: int
    height: int
    #: colour components (JPEG: 1 gray, 3 YCbCr, 4 CMYK/YCCK); 0 when not known
    components: int = 0
    #: the raw TIFF-structured EXIF block, if the container carries one (None for HEIC)
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
    if data[4:8] == b"ftyp":
        brand = _ftyp_format(data)
        if brand is not None:
            return brand
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    raise UnsupportedFormat("unrecognised or disallowed image format", processor="decode")


def _ftyp_format(data: bytes) -> Literal["avif", "heic"] | None:
    """The format an ISO BMFF ``ftyp`` box names: the major brand first, then the compatible
    brands in their order; the first AVIF or HEIC brand decides, and the generic HEIF brands
    (``mif1``, ``msf1``) mean HEIC only when no brand names either."""
    size = int.from_bytes(data[:4], "big")
    if size < 16 or size > len(data) or size > 4096:
        return None
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, size - 3, 4)]
    for brand in brands:
        if brand in _AVIF_BRANDS:
            return "avif"
        if brand in _HEIC_BRANDS:
            return "heic"
    if any(brand in _HEIF_BRANDS for brand in brands):
        return "heic"
    return None


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


# --- ISO BMFF: AVIF and HEIC ------------------------------------------------------------------

#: at most this many boxes in one box (real files have a handful), and at most this many items
#: in a HEIF file (libheif's default limits refuse more): a hostile count cannot make the
#: parser loop for long
_MAX_CHILD_BOXES: Final = 65_536
_MAX_ITEMS: Final = 1_000
#: references (a 256 x 256 grid's tiles and then some) and data extents of one item
_MAX_REFERENCES: Final = 256 * 256 + _MAX_ITEMS
_MAX_EXTENTS: Final = 256


def _boxes(data: bytes, start: int, end: int, fmt: str) -> Iterator[tuple[bytes, int, int]]:
    """``(type, body start, body end)`` of each box in ``data[start:end]``; a box that runs
    past ``end`` is ``corrupt_image`` (a file cut short). Bytes too few for a box header at
    the end are ignored, as every reader does."""
    pos, count = start, 0
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header_len = 8
        if size == 1:
            if pos + 16 > end:
                raise _corrupt(f"{fmt} box {kind!r} runs past the end of the data")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header_len = 16
        elif size == 0:
            size = end - pos
        if size < header_len or pos + size > end:
            raise _corrupt(f"{fmt} box {kind!r} runs past the end of the data")
        count += 1
        if count > _MAX_CHILD_BOXES:
            raise _corrupt(f"{fmt} has more than {_MAX_CHILD_BOXES} boxes in one box")
        yield kind, pos + header_len, pos + size
        pos += size


def _top_level(data: bytes, fmt: str) -> tuple[tuple[int, int] | None, bool]:
    """The body of the file-level ``meta`` box (the first one), and whether a ``moov`` box
    (an image sequence's tracks) is present; every top-level box must fit in the data."""
    meta: tuple[int, int] | None = None
    moov = False
    for kind, start, end in _boxes(data, 0, len(data), fmt):
        if kind == b"meta" and meta is None:
            meta = (start, end)
        elif kind == b"moov":
            moov = True
    return meta, moov


def _avif(data: bytes) -> Header:
    meta_at, _moov = _top_level(data, "avif")
    if meta_at is None:
        raise _corrupt("avif has no meta box")
    meta = data[meta_at[0] : meta_at[1]]
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


class _Cursor:
    """Big-endian reads inside one box body; reading past its end is ``corrupt_image``."""

    __slots__ = ("data", "end", "name", "pos")

    def __init__(self, data: bytes, start: int, end: int, name: str) -> None:
        self.data, self.pos, self.end, self.name = data, start, end, name

    def uint(self, size: int) -> int:
        if self.pos + size > self.end:
            raise _corrupt(f"heic {self.name} box is cut short")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big")
        self.pos += size
        return value

    def full_box(self) -> tuple[int, int]:
        """A FullBox's version and flags."""
        word = self.uint(4)
        return word >> 24, word & 0xFFFFFF


@dataclass(slots=True)
class _HeifMeta:
    """What a HEIF ``meta`` box says about its items (only what sizing and checks need)."""

    primary: int | None = None
    types: dict[int, bytes] = field(default_factory=dict)
    hidden: set[int] = field(default_factory=set)
    #: reference type (``dimg``, ``auxl``, ``thmb``, ...) -> [(from item, [to items])]
    refs: dict[bytes, list[tuple[int, list[int]]]] = field(default_factory=dict)
    #: the ``ipco`` properties in order, as (type, body start, body end); ipma indexes are 1-based
    properties: list[tuple[bytes, int, int]] = field(default_factory=list)
    #: item -> its property indexes, in the order ``ipma`` lists them (transforms apply so)
    associations: dict[int, list[int]] = field(default_factory=dict)
    #: item -> (construction method, [(offset, length)]), offsets absolute for method 0
    locations: dict[int, tuple[int, list[tuple[int, int]]]] = field(default_factory=dict)
    idat: tuple[int, int] | None = None

    def props(self, item: int) -> Iterator[tuple[bytes, int, int]]:
        for index in self.associations.get(item, ()):
            if index > len(self.properties):
                raise _corrupt(f"heic item {item} refers to a missing property {index}")
            yield self.properties[index - 1]

    def ispe(self, data: bytes, item: int) -> tuple[int, int]:
        for kind, start, end in self.props(item):
            if kind == b"ispe":
                cursor = _Cursor(data, start, end, "ispe")
                cursor.full_box()
                return cursor.uint(4), cursor.uint(4)
        raise _corrupt(f"heic item {item} has no size (ispe property)")

    def targets(self, kind: bytes, item: int) -> list[int]:
        """The items ``item`` refers to with references of ``kind``, in order."""
        return [to for src, tos in self.refs.get(kind, ()) if src == item for to in tos]


def _heif_meta(data: bytes, start: int, end: int) -> _HeifMeta:
    meta = _HeifMeta()
    cursor = _Cursor(data, start, end, "meta")
    cursor.full_box()
    for kind, s, e in _boxes(data, cursor.pos, end, "heic"):
        if kind == b"hdlr":
            c = _Cursor(data, s, e, "hdlr")
            c.full_box()
            c.uint(4)  # pre_defined
            handler = c.uint(4).to_bytes(4, "big")
            if handler != b"pict":
                raise UnsupportedFormat(f"heif meta box holds {handler!r}, not pictures",
                                        processor="decode")
        elif kind == b"pitm":
            c = _Cursor(data, s, e, "pitm")
            version, _ = c.full_box()
            meta.primary = c.uint(2 if version == 0 else 4)
        elif kind == b"iinf":
            _heif_items(data, s, e, meta)
        elif kind == b"iref":
            _heif_refs(data, s, e, meta)
        elif kind == b"iprp":
            _heif_properties(data, s, e, meta)
        elif kind == b"iloc":
            _heif_locations(data, s, e, meta)
        elif kind == b"idat":
            meta.idat = (s, e)
    return meta


def _heif_items(data: bytes, start: int, end: int, meta: _HeifMeta) -> None:
    c = _Cursor(data, start, end, "iinf")
    version, _ = c.full_box()
    count = c.uint(2 if version == 0 else 4)
    if count > _MAX_ITEMS:
        raise _corrupt(f"heic declares {count} items, more than {_MAX_ITEMS}")
    for kind, s, e in _boxes(data, c.pos, end, "heic"):
        if kind != b"infe":
            continue
        entry = _Cursor(data, s, e, "infe")
        version, flags = entry.full_box()
        if version < 2:  # no item type before version 2: nothing a picture reader uses
            continue
        item = entry.uint(2 if version == 2 else 4)
        entry.uint(2)  # protection index
        meta.types[item] = entry.uint(4).to_bytes(4, "big")
        if flags & 1:
            meta.hidden.add(item)
        if len(meta.types) > _MAX_ITEMS:
            raise _corrupt(f"heic declares more than {_MAX_ITEMS} items")


def _heif_refs(data: bytes, start: int, end: int, meta: _HeifMeta) -> None:
    c = _Cursor(data, start, end, "iref")
    version, _ = c.full_box()
    width = 2 if version == 0 else 4
    total = 0
    for kind, s, e in _boxes(data, c.pos, end, "heic"):
        ref = _Cursor(data, s, e, kind.decode("latin-1"))
        source = ref.uint(width)
        count = ref.uint(2)
        total += count
        if total > _MAX_REFERENCES:
            raise _corrupt(f"heic has more than {_MAX_REFERENCES} item references")
        meta.refs.setdefault(kind, []).append((source, [ref.uint(width) for _ in range(count)]))


def _heif_properties(data: bytes, start: int, end: int, meta: _HeifMeta) -> None:
    for kind, s, e in _boxes(data, start, end, "heic"):
        if kind == b"ipco":
            meta.properties = list(_boxes(data, s, e, "heic"))
        elif kind == b"ipma":
            c = _Cursor(data, s, e, "ipma")
            version, flags = c.full_box()
            entries = c.uint(4)
            if entries > _MAX_ITEMS:
                raise _corrupt(f"heic ipma lists {entries} items, more than {_MAX_ITEMS}")
            for _ in range(entries):
                item = c.uint(2 if version < 1 else 4)
                count = c.uint(1)
                indexes = meta.associations.setdefault(item, [])
                for _ in range(count):
                    index = c.uint(2) & 0x7FFF if flags & 1 else c.uint(1) & 0x7F
                    if index:  # 0: "no property"
                        indexes.append(index)


def _heif_locations(data: bytes, start: int, end: int, meta: _HeifMeta) -> None:
    c = _Cursor(data, start, end, "iloc")
    version, _ = c.full_box()
    sizes = c.uint(1)
    offset_size, length_size = sizes >> 4, sizes & 0xF
    sizes = c.uint(1)
    base_size, index_size = sizes >> 4, (sizes & 0xF if version in (1, 2) else 0)
    if any(size not in (0, 4, 8) for size in (offset_size, length_size, base_size, index_size)):
        raise _corrupt("heic iloc box has an invalid field size")
    count = c.uint(2 if version < 2 else 4)
    if count > _MAX_ITEMS:
        raise _corrupt(f"heic iloc lists {count} items, more than {_MAX_ITEMS}")
    for _ in range(count):
        item = c.uint(2 if version < 2 else 4)
        method = c.uint(2) & 0xF if version in (1, 2) else 0
        c.uint(2)  # data reference index (0: this file)
        base = c.uint(base_size)
        extents = []
        n_extents = c.uint(2)
        if n_extents > _MAX_EXTENTS:
            raise _corrupt(f"heic item {item} has {n_extents} data extents, "
                           f"more than {_MAX_EXTENTS}")
        for _ in range(n_extents):
            c.uint(index_size)
            extents.append((base + c.uint(offset_size), c.uint(length_size)))
        meta.locations[item] = (method, extents)


#: the ``auxC`` types of an alpha plane (HEVC's and MPEG-B's names): libheif decodes it with
#: the primary image
_ALPHA_TYPES: Final = (b"urn:mpeg:hevc:2015:auxid:1\x00",
                       b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\x00")
#: the coded pictures of a HEIC (before a clean-aperture crop; its tiles; its alpha plane) may
#: hold at most twice its displayed pixels plus this (a small image is often one 512 x 512
#: tile, odd sizes are padded to the coding block): more is a decompression bomb, not a photo
_TILE_SLACK_PIXELS: Final = 4 * 1024 * 1024


def _heic(data: bytes) -> Header:
    """HEIC: the primary item's size from its ``ispe``, after the ``clap`` crop and ``irot``
    rotation that libheif applies while decoding, in the order the item lists them (the
    size the limits are checked against).

    The EXIF block is deliberately not returned: in HEIF the orientation is the ``irot`` /
    ``imir`` transform, which libheif applies (as Apple's ImageIO, sharp and libvips do), and
    the EXIF Orientation tag that iPhones also write repeats it; applying both would turn the
    picture twice. Every coded item decoded with the primary image (grid tiles, alpha) must
    be declared, sized, within the data, and not add up to far more than the image.
    """
    meta_at, moov = _top_level(data, "heic")
    if meta_at is None:
        if moov:
            raise UnsupportedFormat("heif image sequence without a still image",
                                    processor="decode")
        raise _corrupt("heic has no meta box")
    meta = _heif_meta(data, *meta_at)
    item = meta.primary
    if item is None:
        raise _corrupt("heic has no primary item (pitm box)")
    kind = meta.types.get(item)
    if kind is None:
        raise _corrupt(f"heic primary item {item} is not declared (iinf box)")
    if kind not in (b"hvc1", b"grid"):
        raise UnsupportedFormat(f"heif primary image is coded as {kind!r}, not HEVC",
                                processor="decode")
    stored_w, stored_h = meta.ispe(data, item)
    width, height = stored_w, stored_h
    for prop, start, end in meta.props(item):
        if prop == b"clap":
            width, height = _clap(data, start, end, width, height)
        elif prop == b"irot" and _Cursor(data, start, end, "irot").uint(1) & 1:
            width, height = height, width  # turned by 90 or 270 degrees
    # The limits are checked against the displayed size, so what libheif decodes to make it
    # (the coded picture before its crop, every tile, the alpha plane) must stay near it
    coded = _coded_pixels(data, meta, item, grid_allowed=True)
    for alpha in _alpha_items(data, meta, item):
        coded += _coded_pixels(data, meta, alpha, grid_allowed=True)
    if coded > 2 * width * height + _TILE_SLACK_PIXELS:
        raise _corrupt(f"heic decodes {coded} pixels of tiles and planes for a "
                       f"{width}x{height} image (coded as {stored_w}x{stored_h})")
    return Header("heic", width, height, exif=None, animated=moov or _image_count(meta) > 1)


def _clap(data: bytes, start: int, end: int, width: int, height: int) -> tuple[int, int]:
    """The size after a clean-aperture crop (libheif rounds the fractions half up)."""
    c = _Cursor(data, start, end, "clap")
    w_num, w_den, h_num, h_den = (c.uint(4) for _ in range(4))
    if not w_den or not h_den:
        raise _corrupt("heic clean aperture has a zero denominator")
    clean_w, clean_h = (w_num + w_den // 2) // w_den, (h_num + h_den // 2) // h_den
    if clean_w <= 0 or clean_h <= 0:
        raise _corrupt("heic clean aperture is empty")
    return min(clean_w, width), min(clean_h, height)


def _alpha_items(data: bytes, meta: _HeifMeta, item: int) -> list[int]:
    alphas = []
    for source, targets in meta.refs.get(b"auxl", ()):
        if item not in targets:
            continue
        for prop, start, end in meta.props(source):
            if prop == b"auxC" and data[start + 4 : end].startswith(_ALPHA_TYPES):
                alphas.append(source)
    return alphas


def _coded_pixels(data: bytes, meta: _HeifMeta, item: int, *, grid_allowed: bool) -> int:
    """The pixels libheif decodes for ``item``: an HEVC image, or a grid's tiles."""
    kind = meta.types.get(item)
    if kind == b"hvc1":
        _item_data(data, meta, item)  # present and within the data
        w, h = meta.ispe(data, item)
        return w * h
    if kind != b"grid" or not grid_allowed:
        raise UnsupportedFormat(f"heif image tile {item} is coded as {kind!r}, not HEVC",
                                processor="decode")
    descriptor = _item_data(data, meta, item, limit=12)
    c = _Cursor(descriptor, 0, len(descriptor), "grid")
    c.uint(1)  # version
    flags = c.uint(1)
    rows, columns = c.uint(1) + 1, c.uint(1) + 1
    out_w, out_h = c.uint(4 if flags & 1 else 2), c.uint(4 if flags & 1 else 2)
    if (out_w, out_h) != meta.ispe(data, item):
        raise _corrupt(f"heic grid {item} is {out_w}x{out_h}, its ispe says otherwise")
    tiles = meta.targets(b"dimg", item)
    if len(tiles) != rows * columns:
        raise _corrupt(f"heic grid {item} has {len(tiles)} tiles for {rows}x{columns}")
    tile_w, tile_h = meta.ispe(data, tiles[0])
    if tile_w * columns < out_w or tile_h * rows < out_h:
        raise _corrupt(f"heic grid {item} tiles do not cover its {out_w}x{out_h}")
    sizes = {tile: _coded_pixels(data, meta, tile, grid_allowed=False) for tile in set(tiles)}
    return sum(sizes[tile] for tile in tiles)


def _item_data(data: bytes, meta: _HeifMeta, item: int, limit: int = 0) -> bytes:
    """Check that ``item``'s extents lie within the data (a cut file fails here, not in the
    decoder); returns up to ``limit`` of its first bytes."""
    location = meta.locations.get(item)
    if location is None or not location[1]:
        raise _corrupt(f"heic item {item} has no data (iloc box)")
    method, extents = location
    if method == 0:
        base, end = 0, len(data)
    elif method == 1:
        if meta.idat is None:
            raise _corrupt(f"heic item {item} is in a missing idat box")
        base, end = meta.idat
    else:
        raise UnsupportedFormat(f"heif item {item} uses iloc construction method {method}",
                                processor="decode")
    head = b""
    for offset, length in extents:
        start = base + offset
        stop = end if length == 0 else start + length  # length 0: to the end
        if start > end or stop > end:
            raise _corrupt(f"heic is truncated (item {item} runs past the end of the data)")
        if len(head) < limit:
            head += data[start : min(stop, start + limit - len(head))]
    return head


def _image_count(meta: _HeifMeta) -> int:
    """Top-level images: not hidden, not a tile, thumbnail or auxiliary image, not metadata."""
    parts = {to for _src, tos in meta.refs.get(b"dimg", ()) for to in tos}
    parts |= {src for kind in (b"thmb", b"auxl") for src, _tos in meta.refs.get(kind, ())}
    return sum(1 for item, kind in meta.types.items()
               if kind in (b"hvc1", b"grid") and item not in meta.hidden and item not in parts)


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
    "heic": _heic,
    "tiff": _tiff,
    "gif": _gif,
    "bmp": _bmp,
}
