"""Safe reading and decoding: byte cap, then OpenCV, then normalisation to 8-bit gray/BGR/BGRA.

The header has already been checked against the limits (see :mod:`formats`); this module
only ever decodes what was allowed. JPEGs may be decoded at 1/2, 1/4 or 1/8 scale
("shrink on load", ``IMREAD_REDUCED_*``), which costs a fraction of a full decode.

HEIC is decoded by libheif (libde265) through pillow-heif, the primary image only, with
libheif's ``clap``/``irot``/``imir`` transforms applied: that is HEIF's orientation, and the
EXIF Orientation tag is ignored for it (see :func:`pixelpipe.imaging.formats._heic`). libheif
is asked for the size first and must agree with the header that was checked against the
limits, before a pixel is decoded; 10/12-bit samples come out as 8-bit.

Normalisation: 16-bit samples become 8-bit, float samples are clipped to 0-1 and scaled,
gray+alpha becomes BGRA, an alpha channel that is fully opaque is dropped, CMYK JPEGs are
converted to BGR by the decoder, palette images are expanded by the decoder. Animated GIF,
WebP, PNG (APNG) and AVIF sources render their first frame only; a HEIC burst or sequence
renders its primary image.
"""

from __future__ import annotations

import functools
import os
import stat
from types import ModuleType
from typing import Any, Final

import numpy as np

from pixelpipe.errors import (
    CorruptImage,
    ForbiddenSource,
    ImageTooLarge,
    PixelpipeError,
    SourceMissing,
    UnsupportedFormat,
    WorkerCrashed,
)
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import Header
from pixelpipe.imaging.limits import Limits
from pixelpipe.imaging.ops.base import Image

__all__ = ["decode", "read_source", "translate_cv_error", "translate_heif_error"]

_COLOR_FLAGS: Final = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_GRAY_FLAGS: Final = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def read_source(source: bytes | bytearray | memoryview | str | os.PathLike[str], limits: Limits) -> bytes:
    """The source's bytes, refusing more than ``limits.max_bytes`` without reading them all.

    A path must name a regular file (a FIFO or device could block or never end).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise ImageTooLarge(
                f"source is {len(data)} bytes, over {limits.max_bytes}", processor="decode"
            )
    else:
        data = _read_file(os.fspath(source), limits.max_bytes)
    if not data:
        raise CorruptImage("source is empty", processor="decode")
    return data


def _read_file(path: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK so opening a FIFO cannot hang; regular files ignore it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise SourceMissing(f"no such file: {path}", processor="decode") from exc
    except (PermissionError, IsADirectoryError) as exc:
        raise ForbiddenSource(f"cannot read {path}: {exc.strerror}", processor="decode") from exc
    except OSError as exc:
        raise SourceMissing(f"cannot open {path}: {exc.strerror}", processor="decode") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ForbiddenSource(f"not a regular file: {path}", processor="decode")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise ImageTooLarge(
                f"source is {info.st_size} bytes, over {max_bytes}", processor="decode"
            )
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise SourceMissing(f"cannot read {path}: {exc.strerror}", processor="decode") from exc
    if len(data) > max_bytes:  # the file grew while we read it
        raise ImageTooLarge(f"source is over {max_bytes} bytes", processor="decode")
    return data


def translate_cv_error(exc: cv2.error, processor: str) -> Exception:
    """Map a ``cv2.error`` to our tree: allocation failures are the process's, not the input's."""
    text = str(exc)
    if "allocate" in text or "Insufficient memory" in text or "OutOfMemory" in text:
        return WorkerCrashed(f"out of memory in {processor}", processor=processor)
    return CorruptImage(f"{processor} failed: {text.strip().splitlines()[-1]}", processor=processor)


def translate_heif_error(exc: Exception, processor: str = "decode") -> Exception:
    """Map a libheif error (pillow-heif raises ``ValueError``/``RuntimeError`` carrying
    libheif's message) to our tree, like :func:`translate_cv_error`."""
    text = str(exc).strip()
    detail = text.splitlines()[-1] if text else type(exc).__name__
    if "Security limit" in text:  # libheif's own ceiling (its code says "Memory allocation")
        return ImageTooLarge(f"heic exceeds libheif's limits: {detail}", processor=processor)
    if isinstance(exc, MemoryError) or "Memory allocation" in text:
        return WorkerCrashed(f"out of memory in {processor}", processor=processor)
    if "Unsupported" in text or "No decoding plugin" in text or "No decoder" in text:
        return UnsupportedFormat(f"heic feature not supported: {detail}", processor=processor)
    return CorruptImage(f"heic data could not be decoded: {detail}", processor=processor)


@functools.cache
def _pillow_heif() -> ModuleType:
    """pillow-heif, imported on the first HEIC (processes that never see one do not load
    libheif) and set up once: one decoding thread per process like everything else here, and
    no thumbnail, depth or auxiliary image handles (only the primary image is decoded)."""
    import pillow_heif

    pillow_heif.options.DECODE_THREADS = 1
    pillow_heif.options.THUMBNAILS = False
    pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    return pillow_heif


#: pillow-heif's modes (``bgr_mode``): channels, premultiplied alpha, RGB order, sample type;
#: colour comes out 8-bit (``convert_hdr_to_8bit``) but 10/12-bit gray as 16-bit ``I;16``
_HEIF_MODES: Final[dict[str, tuple[int, bool, bool, type[np.unsignedinteger[Any]]]]] = {
    "L": (1, False, False, np.uint8), "BGR": (3, False, False, np.uint8),
    "BGRA": (4, False, False, np.uint8), "BGRa": (4, True, False, np.uint8),
    "RGB": (3, False, True, np.uint8), "RGBA": (4, False, True, np.uint8),
    "RGBa": (4, True, True, np.uint8), "I;16": (1, False, False, np.uint16),
    "I;16L": (1, False, False, np.uint16), "BGR;16": (3, False, False, np.uint16),
    "BGRA;16": (4, False, False, np.uint16), "RGB;16": (3, False, True, np.uint16),
    "RGBA;16": (4, False, True, np.uint16),
}
_HEIF_ERRORS: Final = (ValueError, RuntimeError, OSError, EOFError, SyntaxError, IndexError,
                       KeyError, TypeError)


def _decode_heic(data: bytes, header: Header) -> Image:
    heif = _pillow_heif()
    expected = (header.width, header.height)
    try:
        container = heif.open_heif(data, convert_hdr_to_8bit=True, bgr_mode=True)
        primary = container[container.primary_index]
        # libheif parsed the container (no pixels yet): its size must be the one the limits
        # were checked against, or the header lied or the two parsers disagree
        if tuple(primary.size) != expected:
            raise CorruptImage(f"heic primary image is {primary.size[0]}x{primary.size[1]} "
                               f"to libheif, {expected[0]}x{expected[1]} in its header",
                               processor="decode")
        mode = primary.mode
        primary.load()
        raw, stride, size = primary.data, primary.stride, tuple(primary.size)
    except PixelpipeError:
        raise
    except MemoryError as exc:
        raise WorkerCrashed("out of memory in decode", processor="decode") from exc
    except _HEIF_ERRORS as exc:
        raise translate_heif_error(exc) from exc
    del container, primary  # libheif's copy of the file and its decoder state
    if mode not in _HEIF_MODES:
        raise UnsupportedFormat(f"unsupported heic pixel mode {mode}", processor="decode")
    channels, premultiplied, rgb, sample = _HEIF_MODES[mode]
    itemsize = np.dtype(sample).itemsize
    row_bytes = size[0] * channels * itemsize
    if (size != expected or stride < row_bytes or stride % itemsize
            or len(raw) < stride * size[1]):
        raise CorruptImage(f"heic decoded to {size[0]}x{size[1]}, expected "
                           f"{expected[0]}x{expected[1]}", processor="decode")
    # the decoded bytes become the array without a copy (read-only: operations never paint
    # into their input); 16-bit samples are little-endian
    rows = np.frombuffer(raw, np.dtype(sample).newbyteorder("<"), count=stride // itemsize
                         * size[1]).reshape(size[1], stride // itemsize)
    image: Image = rows[:, : size[0] * channels]
    image = image.reshape(size[1], size[0], channels) if channels > 1 else image
    if not image.dtype.isnative:  # only on a big-endian machine
        image = image.astype(sample)
    if premultiplied:
        image = _unpremultiply(image)
    if rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    return _normalise(image)


def _unpremultiply(image: Image) -> Image:
    alpha = image[:, :, 3:4].astype(np.float32)
    colour = image[:, :, :3].astype(np.float32) * 255.0 / np.maximum(alpha, 1.0)
    colour = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
    return np.concatenate((colour, image[:, :, 3:4]), axis=2)


def decode(data: bytes, header: Header, shrink: int = 1) -> Image:
    """Decode ``data`` (already probed as ``header``) to a normalised uint8 image.

    ``shrink`` (1, 2, 4, 8) asks a JPEG to decode at that fraction of its size; other
    formats ignore it. EXIF orientation is *not* applied here (see :mod:`exif`); a HEIC
    comes out upright, its own transforms applied by libheif.
    """
    if header.format == "heic":
        return _decode_heic(data, header)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if header.format == "jpeg":
        table = _GRAY_FLAGS if header.components == 1 else _COLOR_FLAGS
        flags = table[shrink] | cv2.IMREAD_IGNORE_ORIENTATION
    else:
        flags = cv2.IMREAD_UNCHANGED  # keeps alpha and 16-bit; never applies orientation
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise translate_cv_error(exc, "decode") from exc
    except MemoryError as exc:
        raise WorkerCrashed("out of memory in decode", processor="decode") from exc
    if image is None or image.size == 0:
        raise CorruptImage(f"{header.format} data could not be decoded", processor="decode")
    return _normalise(image)


def _normalise(image: np.ndarray) -> Image:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UnsupportedFormat(f"unsupported sample type {image.dtype}", processor="decode")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 2:  # gray + alpha
            gray, alpha = image[:, :, 0], image[:, :, 1]
            image = cv2.merge((gray, gray, gray, alpha))
        elif channels == 4 and bool(np.all(image[:, :, 3] == 255)):
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        elif channels not in (3, 4):
            raise UnsupportedFormat(f"unsupported channel count {channels}", processor="decode")
    elif image.ndim != 2:
        raise UnsupportedFormat("unsupported image layout", processor="decode")
    return image
