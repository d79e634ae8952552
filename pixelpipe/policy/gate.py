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

Pure: operations are anything with a ``name`` and ``arguments`` (the engine's ``Operation``),
and the caller says how to build the swapped ``format`` operation, so this layer needs no
imaging code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pixelpipe.errors import BreakerOpen
from pixelpipe.schemas import RenditionRequest


class OperationLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> Mapping[str, Any]: ...


Op = TypeVar("Op", bound=OperationLike)
#: builds an operation from its spec dict (``{"op": "format", "type": "webp", ...}``)
MakeOperation = Callable[[dict[str, object]], Op]

#: operations that are not processors of their own (they only set encoder options)
NOT_PROCESSORS = frozenset({"format", "strip", "auto-orient"})
DEGRADED_LEVEL = "basic"


@dataclass(frozen=True, slots=True)
class GatedPlan(Generic[Op]):
    operations: tuple[Op, ...]
    skipped: tuple[str, ...] = ()
    degraded: str | None = None


def encoder_of(operations: Sequence[OperationLike]) -> str | None:
    for operation in operations:
        if operation.name == "format":
            kind = operation.arguments.get("type")
            return str(kind) if kind else None
    return None


def processors_of(operations: Sequence[OperationLike]) -> list[str]:
    names = ["decode"]
    names += [op.name for op in operations if op.name not in NOT_PROCESSORS]
    encoder = encoder_of(operations)
    if encoder:
        names.append(encoder)
    names.append("store")
    return names


def gate(
    rendition: RenditionRequest, operations: Sequence[Op],
    decide: Callable[[str], str], make_operation: MakeOperation[Op],
) -> GatedPlan[Op]:
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
            ops = [_swap_format(op, fallback, make_operation) if op.name == "format" else op
                   for op in ops]
            skipped.append(name)
            continue
        raise BreakerOpen(f"the circuit breaker of {name} is open", processor=name)
    return GatedPlan(
        operations=tuple(ops), skipped=tuple(skipped),
        degraded=DEGRADED_LEVEL if skipped else None,
    )


def _swap_format(operation: Op, fallback: str, make_operation: MakeOperation[Op]) -> Op:
    quality = operation.arguments.get("quality")
    spec: dict[str, object] = {"op": "format", "type": fallback}
    if quality is not None:
        spec["quality"] = quality
    return make_operation(spec)
