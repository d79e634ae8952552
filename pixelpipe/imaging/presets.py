"""Named presets: a rendition by name instead of an operation list.

``PRESETS`` is the built-in configuration; :func:`resolve_rendition` turns an event's
``preset`` or ``operations`` (exactly one of them) into validated operations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging.spec import Operation, parse_operations

__all__ = ["PRESETS", "PRESET_SPECS", "resolve_rendition"]

#: preset name -> operations in the CLI grammar
PRESET_SPECS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # square crop for listings and grids
        "thumbnail": (
            "resize:width=200,height=200,fit=cover,gravity=center",
            "format:type=jpeg,quality=80",
        ),
        # the main image on a page: large, progressive so it paints early
        "web-large": (
            "resize:width=1600,height=1600,fit=inside",
            "format:type=jpeg,quality=82,progressive=true",
        ),
        # small square profile picture, WebP keeps any transparency
        "avatar": (
            "resize:width=128,height=128,fit=cover,gravity=center",
            "format:type=webp,quality=80",
        ),
        # the web-large geometry as WebP, served to browsers that accept it
        "webp-fallback": (
            "resize:width=1600,height=1600,fit=inside",
            "format:type=webp,quality=80",
        ),
    }
)

PRESETS: Mapping[str, tuple[Operation, ...]] = MappingProxyType(
    {name: parse_operations(specs) for name, specs in PRESET_SPECS.items()}
)


def resolve_rendition(
    preset: str | None,
    operations: Sequence[str | Mapping[str, Any] | Operation] | None,
    presets: Mapping[str, tuple[Operation, ...]] = PRESETS,
) -> tuple[Operation, ...]:
    """The operations for a rendition given by a ``preset`` name or an ``operations`` list.

    Exactly one must be given (``invalid_operation`` otherwise, and for an unknown preset or
    an invalid operation). ``presets`` defaults to :data:`PRESETS`.
    """
    if preset is not None and operations is not None:
        raise InvalidOperation("give a preset or operations, not both")
    if preset is not None:
        found = presets.get(preset)
        if found is None:
            raise InvalidOperation(
                f"unknown preset {preset!r} (known: {', '.join(presets) or 'none'})"
            )
        return found
    if operations is None:
        raise InvalidOperation("give a preset or operations")
    return parse_operations(operations)
