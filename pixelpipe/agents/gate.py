"""Before a rendition runs: ask each of its processors' breakers, and degrade where allowed.

The processors of a rendition are ``decode``, each operation (``resize``, ``sharpen``, ...),
the encoder named by the output format (``jpeg``, ``png``, ``webp``, ``avif``) and ``store``.
When a breaker refuses:

- an operation the rendition lists as ``optional`` is left out (``skipped``);
- the encoder, when the rendition names a ``fallback_format``, is swapped for it
  (AVIF -> WebP, say), keeping only the quality;
- anything else defers the whole upload (``BreakerOpen``: to the retry tiers, no attempt
  spent).

Either degradation marks the output ``degraded="basic"`` (ARCHITECTURE.md section 8's level
for "optional operations skipped, AVIF -> WebP").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pixelpipe.errors import BreakerOpen
from pixelpipe.imaging import Operation, parse_operation
from pixelpipe.schemas import RenditionRequest

#: operations that are not processors of their own (they only set encoder options)
NOT_PROCESSORS = frozenset({"format", "strip", "auto-orient"})
DEGRADED_LEVEL = "basic"


@dataclass(frozen=True, slots=True)
class GatedPlan:
    operations: tuple[Operation, ...]
    skipped: tuple[str, ...] = ()
    degraded: str | None = None


def encoder_of(operations: Sequence[Operation]) -> str | None:
    for operation in operations:
        if operation.name == "format":
            kind = operation.arguments.get("type")
            return str(kind) if kind else None
    return None


def processors_of(operations: Sequence[Operation]) -> list[str]:
    names = ["decode"]
    names += [op.name for op in operations if op.name not in NOT_PROCESSORS]
    encoder = encoder_of(operations)
    if encoder:
        names.append(encoder)
    names.append("store")
    return names


def gate(
    rendition: RenditionRequest, operations: Sequence[Operation],
    decide: Callable[[str], str],
) -> GatedPlan:
    """Apply the breakers' decisions to one rendition's plan; raise ``BreakerOpen`` to defer."""
    ops = list(operations)
    skipped: list[str] = []
    for name in processors_of(ops):
        if decide(name) == "allow":
            continue
        if name in rendition.optional and any(op.name == name for op in ops):
            ops = [op for op in ops if op.name != name]
            skipped.append(name)
            continue
        fallback = rendition.fallback_format
        if name == encoder_of(ops) and fallback and fallback != name and decide(fallback) == "allow":
            ops = [_swap_format(op, fallback) if op.name == "format" else op for op in ops]
            skipped.append(name)
            continue
        raise BreakerOpen(f"the circuit breaker of {name} is open", processor=name)
    return GatedPlan(
        operations=tuple(ops), skipped=tuple(skipped),
        degraded=DEGRADED_LEVEL if skipped else None,
    )


def _swap_format(operation: Operation, fallback: str) -> Operation:
    quality = operation.arguments.get("quality")
    spec: dict[str, object] = {"op": "format", "type": fallback}
    if quality is not None:
        spec["quality"] = quality
    return parse_operation(spec)
