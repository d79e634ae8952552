"""Operation specs: one grammar for CLI and JSON, canonical strings, presets."""

from __future__ import annotations

import pytest

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging import (
    PRESETS,
    REGISTRY,
    Operation,
    canonical_spec,
    parse_operation,
    parse_operations,
    resolve_rendition,
)


def test_cli_and_json_forms_give_the_same_canonical_spec() -> None:
    cli = parse_operation("resize:width=800,height=600,fit=inside")
    json_form = parse_operation({"op": "resize", "width": 800, "height": 600, "fit": "inside"})
    assert cli == json_form
    assert cli.spec == "resize:enlarge=false,fit=inside,height=600,width=800"
    assert hash(cli) == hash(json_form)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("resize:width=800,height=600", "resize:height=600,width=800,fit=inside,enlarge=0"),
        ("resize:width=800,height=600,gravity=north", "resize:width=800,height=600"),
        ("resize:width=800", "resize:width=800,fit=cover"),
        ("format:type=jpg", "format:type=jpeg,quality=82"),
        ("format:type=webp,lossless=true,quality=10", "format:type=webp,lossless=true"),
        ("rotate:angle=-90", "rotate:angle=270,background=black"),
        ("blur:sigma=2", "blur:sigma=2.0"),
        ("greyscale", "grayscale"),
        ("crop:x=1,y=2,width=3,height=4,gravity=north", "crop:x=1,y=2,width=3,height=4"),
    ],
)
def test_equivalent_specs_canonicalise_equal(left: str, right: str) -> None:
    assert parse_operation(left).spec == parse_operation(right).spec


def test_canonical_spec_joins_operations_with_a_bar() -> None:
    ops = parse_operations(["resize:width=10", "format:type=png"])
    assert canonical_spec(ops) == (
        "resize:enlarge=false,fit=inside,width=10|format:compression=6,type=png"
    )


def test_spec_round_trips_through_the_parser() -> None:
    for ops in PRESETS.values():
        for op in ops:
            assert parse_operation(op.spec) == op


@pytest.mark.parametrize(
    "item",
    [
        "explode",
        "resize",  # needs width or height
        "resize:width=0",
        "resize:width=abc",
        "resize:width=10,fit=squash",
        "resize:width=10,colour=red",
        "resize:width=10,width=20",
        "resize:width",
        "format",
        "format:type=gif",
        "format:type=jpeg,quality=101",
        "crop:x=1,width=3,height=4",
        "rotate",
        "blur:sigma=nan",
        "watermark:image=../etc/passwd",
        "watermark:image=/etc/passwd",
        "debug-sleep:seconds=1",  # refused without the debug env flag
        {"op": "resize", "width": True},
        {"op": "resize", "width": 10.5},
        {"width": 10},
    ],
)
def test_invalid_operations_are_refused(item: object) -> None:
    with pytest.raises(InvalidOperation) as info:
        parse_operation(item)  # type: ignore[arg-type]
    assert info.value.code == "invalid_operation"


def test_every_registered_processor_parses_by_name() -> None:
    samples = {
        "resize": "resize:width=10",
        "crop": "crop:width=10,height=10",
        "rotate": "rotate:angle=10",
        "watermark": "watermark:image=logo.png",
        "format": "format:type=png",
    }
    for name in REGISTRY:
        if name.startswith("debug-"):
            continue
        op = parse_operation(samples.get(name, name))
        assert op.name == name


def test_resolve_rendition_by_preset_or_operations() -> None:
    assert resolve_rendition("thumbnail", None) == PRESETS["thumbnail"]
    ops = resolve_rendition(None, [{"op": "resize", "width": 5}])
    assert ops == (Operation("resize", (("enlarge", False), ("fit", "inside"), ("width", 5))),)


@pytest.mark.parametrize(
    ("preset", "operations"),
    [("nope", None), ("thumbnail", ["grayscale"]), (None, None), (None, "resize:width=1")],
)
def test_resolve_rendition_refuses_bad_requests(preset: str | None, operations: object) -> None:
    with pytest.raises(InvalidOperation):
        resolve_rendition(preset, operations)  # type: ignore[arg-type]


def test_required_presets_exist() -> None:
    assert {"thumbnail", "web-large", "avatar", "webp-fallback"} <= set(PRESETS)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("resize:width=10,fit=sideways",
         "resize: bad value 'sideways' for fit (choice expected: one of inside, cover, contain, "
         "exact)"),
        ("flip:axis=diagonal",
         "flip: bad value 'diagonal' for axis (choice expected: one of horizontal, vertical, "
         "both)"),
        ("resize:width=abc", "resize: bad value 'abc' for width (int expected: 1..65535)"),
        ("resize:width=0", "resize: width=0 is below 1 (int expected: 1..65535)"),
        ("format:type=jpeg,quality=101",
         "format: quality=101 is above 100 (int expected: 1..100)"),
        ("resize:width=10,enlarge=maybe",
         "resize: bad value 'maybe' for enlarge (bool expected: true or false)"),
        ("resize:width=10,colour=red",
         "resize: unknown parameter(s) colour (known: width, height, fit, gravity, enlarge, "
         "background)"),
        ("grayscale:amount=1", "grayscale: unknown parameter(s) amount (it takes none)"),
        ("explode", "unknown operation 'explode' (known: resize, crop, rotate, auto-orient, "
                    "flip, blur, sharpen, grayscale, watermark, format, strip)"),
    ],
)
def test_refusals_name_the_valid_values(item: str, message: str) -> None:
    """Issue 12 point 5: an error says what would have been accepted; the code is unchanged."""
    with pytest.raises(InvalidOperation) as info:
        parse_operation(item)
    assert str(info.value) == message
    assert info.value.code == "invalid_operation"


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(InvalidOperation) as info:
        resolve_rendition("nope", None)
    assert str(info.value) == "unknown preset 'nope' (known: " + ", ".join(PRESETS) + ")"
    assert info.value.code == "invalid_operation"
    with pytest.raises(InvalidOperation, match=r"unknown preset 'x' \(known: mine\)"):
        resolve_rendition("x", None, {"mine": ()})
