"""What an operation is: a named processor with typed, validated parameters.

An :class:`OpDef` declares its parameters (:class:`Param`), how it changes the image size
(``size``: used to plan and check every intermediate size against the limits *before*
decoding, and to verify the output), and how it changes pixels (``apply``, which must produce
exactly the planned size). Parameters reach ``apply`` as a plain dict with defaults filled in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pixelpipe.errors import InvalidOperation

__all__ = [
    "GRAVITIES",
    "Color",
    "Image",
    "OpDef",
    "Param",
    "Params",
    "Size",
    "gravity_offset",
    "parse_color",
    "same_size",
]

#: a decoded image: 2-D (gray), 3 channels (BGR) or 4 (BGRA); always uint8 after decoding
#: (``Any`` because OpenCV's stubs type every result as a generic ``MatLike``)
Image = npt.NDArray[Any]
Params = Mapping[str, Any]
Size = tuple[int, int]
#: (blue, green, red, alpha), each 0-255
Color = tuple[int, int, int, int]

GRAVITIES: Final = (
    "center",
    "north",
    "south",
    "east",
    "west",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
)

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_NAMED_COLORS: Final = {
    "white": "ffffffff",
    "black": "000000ff",
    "transparent": "00000000",
}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: ``kind`` is int, float, bool, choice, color or str.

    ``default=None`` makes it optional (absent from the canonical spec when not given).
    ``aliases`` maps accepted spellings to canonical choices (``jpg`` -> ``jpeg``).
    """

    name: str
    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)

    def coerce(self, op: str, raw: Any) -> Any:
        """Turn a CLI string or JSON value into the canonical typed value, or refuse it."""
        try:
            value = self._coerce(raw)
        except (TypeError, ValueError, OverflowError) as exc:  # a huge int is no float
            raise InvalidOperation(
                f"{op}: bad value {raw!r} for {self.name} ({self.expected()})", processor=op
            ) from exc
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise InvalidOperation(
                    f"{op}: {self.name}={value} is below {_num(self.minimum)} "
                    f"({self.expected()})", processor=op
                )
            if self.maximum is not None and value > self.maximum:
                raise InvalidOperation(
                    f"{op}: {self.name}={value} is above {_num(self.maximum)} "
                    f"({self.expected()})", processor=op
                )
        return value

    def values_text(self) -> str:
        """The accepted values in words: ``1..65535``, ``inside, cover, contain, exact``,
        ``true or false``, ... (what ``pixelpipe ops`` and the error messages show)."""
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "color":
            return "rrggbb or rrggbbaa hex (# optional), " + ", ".join(_NAMED_COLORS)
        if self.kind == "str":
            return "a non-empty string"
        low = "" if self.minimum is None else _num(self.minimum)
        high = "" if self.maximum is None else _num(self.maximum)
        return f"{low}..{high}" if low or high else f"any {self.kind}"

    def expected(self) -> str:
        """What an error message says was expected: ``choice expected: one of inside, ...``."""
        if self.kind == "choice":
            return f"choice expected: one of {self.values_text()}"
        return f"{self.kind} expected: {self.values_text()}"

    def describe(self) -> dict[str, Any]:
        """This parameter as data (``pixelpipe ops --json``): name, type, default (None: none,
        the parameter is absent unless given), minimum, maximum, choices, aliases."""
        return {
            "name": self.name,
            "type": self.kind,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) or None,
            "aliases": dict(self.aliases) or None,
            "values": self.values_text(),
        }

    def _coerce(self, raw: Any) -> Any:
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(raw)
        if self.kind == "int":
            if isinstance(raw, bool):
                raise TypeError(raw)
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError(raw)
                return int(raw)
            return int(str(raw).strip())
        if self.kind == "float":
            if isinstance(raw, bool):
                raise TypeError(raw)
            value = float(raw if isinstance(raw, int | float) else str(raw).strip())
            if not np.isfinite(value):
                raise ValueError(raw)
            return value
        if self.kind == "choice":
            text = str(raw).strip().lower()
            text = self.aliases.get(text, text)
            if text not in self.choices:
                raise ValueError(f"one of {', '.join(self.choices)}")
            return text
        if self.kind == "color":
            return format_color(parse_color(raw))
        if self.kind == "str":
            if not isinstance(raw, str) or not raw:
                raise TypeError(raw)
            return raw
        raise AssertionError(f"unknown parameter kind {self.kind}")


def _num(value: float) -> str:
    """``65535.0`` -> ``65535``, ``0.3`` -> ``0.3``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_color(raw: Any) -> Color:
    """``#rrggbb``, ``rrggbb``, ``#rrggbbaa`` or white/black/transparent -> (b, g, r, a)."""
    text = str(raw).strip().lower().lstrip("#")
    text = _NAMED_COLORS.get(text, text)
    if len(text) == 6:
        text += "ff"
    if len(text) != 8:
        raise ValueError(raw)
    r, g, b, a = (int(text[i : i + 2], 16) for i in range(0, 8, 2))
    return (b, g, r, a)


def format_color(color: Color) -> str:
    """The canonical spelling of ``color``: ``rrggbbaa`` lower-case hex."""
    b, g, r, a = color
    return f"{r:02x}{g:02x}{b:02x}{a:02x}"


def same_size(params: Params, width: int, height: int) -> Size:
    """``size`` of an operation that keeps the image size."""
    return (width, height)


def gravity_offset(gravity: str, free_x: int, free_y: int) -> tuple[int, int]:
    """Where a box lands in ``free_x`` x ``free_y`` of slack for a gravity word."""
    x = free_x // 2
    y = free_y // 2
    if "west" in gravity:
        x = 0
    elif "east" in gravity:
        x = free_x
    if "north" in gravity:
        y = 0
    elif "south" in gravity:
        y = free_y
    return (x, y)


@dataclass(frozen=True, slots=True)
class OpDef:
    """A named processor: its parameters, its size plan and its pixel work."""

    name: str
    params: tuple[Param, ...]
    apply: Callable[[Image, Params, Size], Image]
    size: Callable[[Params, int, int], Size] = same_size
    #: cross-parameter checks after coercion; raise InvalidOperation
    validate: Callable[[Params], None] | None = None
    #: drop parameters that cannot change the result (so equal outputs share a spec)
    relevant: Callable[[Params], Params] | None = None
    #: pixels do not depend on the input's scale: a JPEG may be shrunk on load across it
    scale_invariant: bool = False
    #: the scale this op applies to a ``width`` x ``height`` input (resize only)
    scale: Callable[[Params, int, int], float] | None = None
    doc: str = ""
