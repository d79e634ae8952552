"""Safe reading and decoding: byte cap, then OpenCV, then normalisation to 8-bit gray/BGR/BGRA.

The header has already been checked against the limits (see :mod:`formats`); this module
only ever decodes what was allowed. JPEGs may be decoded at 1/2, 1/4 or 1/8 scale
("shrink on load", ``IMREAD_REDUCED_*``), which costs a fraction of a full decode.

Normalisation: 16-bit samples become 8-bit, float samples are clipped to 0-1 and scaled,
gray+alpha becomes BGRA, an alpha channel that is fully opaque is dropped, CMYK JPEGs are
converted to BGR by the decoder, palette images are expanded by the decoder. Animated GIF,
WebP, PNG (APNG) and AVIF sources render their first frame only.
"""

from __future__ import annotations

import os
import stat
from typing import Final

import numpy as np

from pixelpipe.errors import (
    CorruptImage,
    ForbiddenSource,
    ImageTooLarge,
    SourceMissing,
    UnsupportedFormat,
    WorkerCrashed,
)
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.formats import Header
from pixelpipe.imaging.limits import Limits
from pixelpipe.imaging.ops.base import Image

__all__ = ["decode", "read_source", "translate_cv_error"]

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


def decode(data: bytes, header: Header, shrink: int = 1) -> Image:
    """Decode ``data`` (already probed as ``header``) to a normalised uint8 image.

    ``shrink`` (1, 2, 4, 8) asks a JPEG to decode at that fraction of its size; other
    formats ignore it. EXIF orientation is *not* applied here (see :mod:`exif`).
    """
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
