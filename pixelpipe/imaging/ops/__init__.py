"""The operation registry: every processor by name (how presets, specs and the CLI find them).

Processors: resize, crop, rotate, auto-orient, flip, blur, sharpen, grayscale, watermark,
format, strip (and ``debug-sleep``, refused unless ``PIXELPIPE_ENABLE_DEBUG_OPS=1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pixelpipe.imaging.ops.base import OpDef
from pixelpipe.imaging.ops.debug import DEBUG_SLEEP
from pixelpipe.imaging.ops.filters import BLUR, GRAYSCALE, SHARPEN
from pixelpipe.imaging.ops.geometry import AUTO_ORIENT, CROP, FLIP, ROTATE
from pixelpipe.imaging.ops.output import FORMAT, STRIP
from pixelpipe.imaging.ops.resize import RESIZE
from pixelpipe.imaging.ops.watermark import WATERMARK

__all__ = ["ALIASES", "REGISTRY", "OpDef"]

REGISTRY: Mapping[str, OpDef] = MappingProxyType(
    {
        op.name: op
        for op in (
            RESIZE, CROP, ROTATE, AUTO_ORIENT, FLIP, BLUR, SHARPEN, GRAYSCALE, WATERMARK,
            FORMAT, STRIP, DEBUG_SLEEP,
        )
    }
)

#: accepted spellings of operation names
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "greyscale": "grayscale",
        "autoorient": "auto-orient",
        "auto_orient": "auto-orient",
        "rotation": "rotate",
    }
)
