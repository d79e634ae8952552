"""pixelpipe's imaging engine: safe decode, operations, encode, verify, and a process pool.

Pure: no Kafka, no Faust, no schemas (an import-linter contract holds it). Public API::

    ops = resolve_rendition("thumbnail", None)            # or parse_operations([...])
    result = render("/path/photo.jpg", ops)               # synchronous, in-process
    async with ImagePool() as pool:                       # one process per core
        result = await pool.run("/path/photo.jpg", ops, Limits())

OpenCV reads its decoder caps from the environment once, at ``import cv2``; importing this
package imports cv2 through :mod:`pixelpipe.imaging._cv`, which sets them first.
"""

from __future__ import annotations

from pixelpipe.imaging import _cv  # noqa: F401  (sets OpenCV's env caps before cv2 loads)
from pixelpipe.imaging.engine import RenderResult, render
from pixelpipe.imaging.formats import OUTPUT_FORMATS, SOURCE_FORMATS
from pixelpipe.imaging.limits import DEFAULT_LIMITS, Limits
from pixelpipe.imaging.ops import REGISTRY
from pixelpipe.imaging.pool import ImagePool
from pixelpipe.imaging.presets import PRESETS, resolve_rendition
from pixelpipe.imaging.spec import (
    Operation,
    canonical_spec,
    parse_operation,
    parse_operations,
)

__all__ = [
    "DEFAULT_LIMITS",
    "OUTPUT_FORMATS",
    "PRESETS",
    "REGISTRY",
    "SOURCE_FORMATS",
    "ImagePool",
    "Limits",
    "Operation",
    "RenderResult",
    "canonical_spec",
    "parse_operation",
    "parse_operations",
    "render",
    "resolve_rendition",
]
