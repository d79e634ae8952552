"""Source limits checked before any decoding."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What a source may be, checked from its header before decoding.

    Defaults: 50 megapixels, 16,384 px a side, 50 MiB of encoded bytes. The same pixel and
    side limits apply to every planned intermediate and output size, so a resize with
    ``enlarge=true`` cannot ask for a gigapixel image either.
    """

    max_pixels: int = 50_000_000
    max_side: int = 16_384
    max_bytes: int = 50 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_pixels <= 0 or self.max_side <= 0 or self.max_bytes <= 0:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = Limits()
