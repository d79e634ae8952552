"""Operation specs: one grammar for events (JSON) and the command line, canonicalised.

CLI form: ``resize:width=800,height=600,fit=cover`` or a bare name (``grayscale``).
JSON form: ``{"op": "resize", "width": 800, "height": 600, "fit": "cover"}``.
Both parse to the same :class:`Operation`, whose :attr:`Operation.spec` is canonical: values
typed and normalised, defaults filled in, parameters that cannot change the result dropped,
keys sorted. Equal specs therefore give equal strings, and equal output keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging.ops import ALIASES, REGISTRY, OpDef
from pixelpipe.imaging.ops.debug import debug_ops_enabled

__all__ = [
    "Operation",
    "aliases_of",
    "available_operations",
    "canonical_spec",
    "format_value",
    "operation_def",
    "parse_operation",
    "parse_operations",
]


def format_value(value: Any) -> str:
    """The canonical text of a parameter value (``true``, ``80``, ``1.5``, ``ffffffff``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Operation:
    """A validated operation: its ``name`` and sorted ``(key, value)`` ``params``. Hashable."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> str:
        """Canonical text, e.g. ``resize:enlarge=false,fit=inside,height=600,width=800``."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in self.params)

    @property
    def arguments(self) -> dict[str, Any]:
        """``params`` as a dict."""
        return dict(self.params)

    def __str__(self) -> str:
        return self.spec


def _offered(opdef: OpDef) -> bool:
    return not opdef.name.startswith("debug-") or debug_ops_enabled()


def available_operations() -> tuple[OpDef, ...]:
    """The operations an event or ``--op`` may name, in registry order (``debug-*`` only with
    ``PIXELPIPE_ENABLE_DEBUG_OPS=1``): what ``pixelpipe ops`` lists."""
    return tuple(opdef for opdef in REGISTRY.values() if _offered(opdef))


def aliases_of(name: str) -> tuple[str, ...]:
    """The other accepted spellings of operation ``name`` (``greyscale`` for ``grayscale``)."""
    return tuple(alias for alias, target in ALIASES.items() if target == name)


def operation_def(name: str) -> OpDef:
    """The definition of operation ``name`` (an alias works); ``InvalidOperation`` naming the
    known operations otherwise."""
    return _opdef(name)


def _opdef(name: str) -> OpDef:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    opdef = REGISTRY.get(key)
    if opdef is None or not _offered(opdef):
        known = ", ".join(op.name for op in available_operations())
        raise InvalidOperation(f"unknown operation {name!r} (known: {known})",
                               processor=key or None)
    return opdef


def _split_cli(item: str) -> tuple[str, dict[str, str]]:
    name, _, rest = item.strip().partition(":")
    raw: dict[str, str] = {}
    if rest.strip():
        for part in rest.split(","):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or not key:
                raise InvalidOperation(
                    f"{name}: expected key=value, got {part!r}", processor=name.strip() or None
                )
            if key in raw:
                raise InvalidOperation(f"{name}: {key} given twice", processor=name.strip())
            raw[key] = value.strip()
    return name, raw


def parse_operation(item: str | Mapping[str, Any] | Operation) -> Operation:
    """Parse and validate one operation from CLI text or a JSON object.

    Raises ``InvalidOperation`` (``invalid_operation``) for an unknown operation, an unknown
    parameter, a value of the wrong type or out of range, or missing required parameters.
    """
    if isinstance(item, Operation):
        name, raw = item.name, dict(item.params)
    elif isinstance(item, str):
        name, raw = _split_cli(item)
    elif isinstance(item, Mapping):
        fields = dict(item)
        name = fields.pop("op", None)
        if not isinstance(name, str):
            raise InvalidOperation("operation object needs an \"op\" name")
        raw = {str(k).lower(): v for k, v in fields.items()}
    else:
        raise InvalidOperation(f"cannot parse an operation from {type(item).__name__}")
    opdef = _opdef(name)
    known = {p.name: p for p in opdef.params}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        takes = (f"known: {', '.join(p.name for p in opdef.params)}" if opdef.params
                 else "it takes none")
        raise InvalidOperation(
            f"{opdef.name}: unknown parameter(s) {', '.join(unknown)} ({takes})",
            processor=opdef.name,
        )
    values: dict[str, Any] = {}
    for param in opdef.params:
        if param.name in raw and raw[param.name] is not None:
            values[param.name] = param.coerce(opdef.name, raw[param.name])
        elif param.default is not None:
            values[param.name] = param.default
    if opdef.validate is not None:
        opdef.validate(values)
    if opdef.relevant is not None:
        values = dict(opdef.relevant(values))
    params = tuple(sorted((k, v) for k, v in values.items() if v is not None))
    return Operation(opdef.name, params)


def parse_operations(items: Iterable[str | Mapping[str, Any] | Operation]) -> tuple[Operation, ...]:
    """Parse a sequence of operations (CLI strings, JSON objects or Operations)."""
    if isinstance(items, str | bytes | Mapping):
        raise InvalidOperation("operations must be a list")
    return tuple(parse_operation(item) for item in items)


def canonical_spec(operations: Iterable[Operation]) -> str:
    """The canonical text of a whole rendition: each op's spec joined with ``|``."""
    return "|".join(op.spec for op in operations)
