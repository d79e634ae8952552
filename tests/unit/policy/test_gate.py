"""The rendition gate's degraded-output rules, with the engine's own operations.

What must hold: when a breaker refuses, an operation the rendition lists as optional is left
out, the encoder is swapped for the ``fallback_format`` (keeping only the quality), both mark
the output ``degraded="basic"``; anything else (a required operation, decode, store, an
encoder with no usable fallback) raises ``BreakerOpen`` naming the processor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from pixelpipe.errors import BreakerOpen
from pixelpipe.imaging import Operation, parse_operation, parse_operations
from pixelpipe.policy.gate import GatedPlan, gate, processors_of
from pixelpipe.schemas import RenditionRequest

OPS = parse_operations([
    "resize:width=800,fit=inside",
    "sharpen",
    "format:type=avif,quality=55",
])


def refusing(*names: str) -> Callable[[str], str]:
    def decide(processor: str) -> str:
        return "refuse" if processor in names else "allow"

    return decide


def rendition(optional: Iterable[str] = (), fallback: str | None = None) -> RenditionRequest:
    return RenditionRequest(name="hero", operations=("unused",), optional=tuple(optional),
                            fallback_format=fallback)


def run(request: RenditionRequest, decide: Callable[[str], str],
        ops: tuple[Operation, ...] = OPS) -> GatedPlan[Operation]:
    return gate(request, ops, decide, parse_operation)


def names(plan: GatedPlan[Operation]) -> list[str]:
    return [op.name for op in plan.operations]


def test_the_processors_of_a_rendition_are_decode_ops_encoder_and_store() -> None:
    assert processors_of(OPS) == ["decode", "resize", "sharpen", "avif", "store"]


def test_nothing_refused_leaves_the_plan_whole() -> None:
    asked: list[str] = []

    def decide(processor: str) -> str:
        asked.append(processor)
        return "allow"

    plan = run(rendition(optional=["sharpen"], fallback="webp"), decide)
    assert plan.operations == OPS
    assert plan.skipped == () and plan.degraded is None
    assert asked == ["decode", "resize", "sharpen", "avif", "store"]  # every breaker asked


def test_an_optional_operation_whose_breaker_refuses_is_skipped_and_degrades() -> None:
    plan = run(rendition(optional=["sharpen"]), refusing("sharpen"))
    assert names(plan) == ["resize", "format"]
    assert plan.operations[0] == OPS[0] and plan.operations[1] == OPS[2]
    assert plan.skipped == ("sharpen",)
    assert plan.degraded == "basic"


def test_a_required_operation_whose_breaker_refuses_defers_the_upload() -> None:
    with pytest.raises(BreakerOpen) as raised:
        run(rendition(optional=["sharpen"]), refusing("resize"))
    assert raised.value.processor == "resize"


def test_an_optional_name_not_in_the_plan_does_not_excuse_another_processor() -> None:
    with pytest.raises(BreakerOpen) as raised:
        run(rendition(optional=["blur"]), refusing("sharpen"))
    assert raised.value.processor == "sharpen"


def test_a_refused_encoder_is_swapped_for_the_fallback_keeping_the_quality() -> None:
    ops = parse_operations(["resize:width=800", "format:type=jpeg,quality=67,progressive=true"])
    plan = run(rendition(fallback="webp"), refusing("jpeg"), ops)
    assert names(plan) == ["resize", "format"]
    assert plan.operations[0] == ops[0]
    swapped = plan.operations[1]
    assert swapped == parse_operation({"op": "format", "type": "webp", "quality": 67})
    assert swapped.arguments["type"] == "webp" and swapped.arguments["quality"] == 67
    assert plan.skipped == ("jpeg",)
    assert plan.degraded == "basic"


def test_avif_falls_back_to_webp() -> None:
    plan = run(rendition(fallback="webp"), refusing("avif"))
    assert plan.operations[-1] == parse_operation({"op": "format", "type": "webp",
                                                   "quality": 55})
    assert plan.degraded == "basic" and plan.skipped == ("avif",)


def test_both_degradations_at_once() -> None:
    plan = run(rendition(optional=["sharpen"], fallback="webp"), refusing("sharpen", "avif"))
    assert names(plan) == ["resize", "format"]
    assert plan.operations[-1].arguments["type"] == "webp"
    assert plan.skipped == ("sharpen", "avif")
    assert plan.degraded == "basic"


@pytest.mark.parametrize(("request_", "refused", "processor"), [
    (rendition(), ("avif",), "avif"),  # no fallback named
    (rendition(fallback="webp"), ("avif", "webp"), "avif"),  # the fallback refuses too
    (rendition(fallback="avif"), ("avif",), "avif"),  # the fallback is the refused encoder
    (rendition(optional=["sharpen"], fallback="webp"), ("decode",), "decode"),
    (rendition(optional=["sharpen"], fallback="webp"), ("store",), "store"),
])
def test_anything_else_refused_raises_breaker_open(
    request_: RenditionRequest, refused: tuple[str, ...], processor: str
) -> None:
    with pytest.raises(BreakerOpen) as raised:
        run(request_, refusing(*refused))
    assert raised.value.processor == processor
    assert raised.value.code == "breaker_open" and raised.value.retryable


@pytest.mark.parametrize(("encoder", "spec"), [
    ("format:type=jpeg,quality=67,progressive=true,optimize=true",
     {"op": "format", "type": "webp", "quality": 67}),
    ("format:type=png,compression=9", {"op": "format", "type": "webp"}),  # no quality to keep
])
def test_the_fallback_is_built_from_the_quality_alone(encoder: str, spec: dict[str, object]) -> None:
    built: list[dict[str, object]] = []

    def make_operation(given: dict[str, object]) -> Operation:
        built.append(dict(given))
        return parse_operation(given)

    ops = parse_operations(["resize:width=800", encoder])
    refused = str(ops[-1].arguments["type"])
    plan = gate(rendition(fallback="webp"), ops, refusing(refused), make_operation)
    assert built == [spec]
    assert plan.operations[-1] == parse_operation(spec)
