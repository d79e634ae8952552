"""Each operation's geometry: sizes per fit mode, gravity, no-enlarge, crops, rotations."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_samples import BLUE, GREEN, RED, WHITE, encode, quadrants

from pixelpipe.errors import ImageTooLarge, InvalidOperation
from pixelpipe.imaging import Limits, parse_operations, render
from pixelpipe.imaging._cv import cv2


def _png_of(image: np.ndarray) -> bytes:
    return encode(image, ".png")


def _render_pixels(source: bytes, *specs: str) -> np.ndarray:
    result = render(source, parse_operations([*specs, "format:type=png"]))
    image = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert (image.shape[1], image.shape[0]) == (result.width, result.height)
    return image


def _size(source: bytes, spec: str) -> tuple[int, int]:
    result = render(source, parse_operations([spec]))
    return (result.width, result.height)


SOURCE_400x200 = _png_of(quadrants(400, 200))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resize:width=100,height=100,fit=inside", (100, 50)),
        ("resize:width=100,height=100,fit=cover", (100, 100)),
        ("resize:width=100,height=100,fit=contain", (100, 100)),
        ("resize:width=100,height=100,fit=exact", (100, 100)),
        ("resize:width=100", (100, 50)),
        ("resize:height=50", (100, 50)),
        ("resize:width=100,fit=cover", (100, 50)),
        # never enlarge unless asked
        ("resize:width=800,height=800,fit=inside", (400, 200)),
        ("resize:width=800,height=800,fit=cover", (400, 200)),
        ("resize:width=300,height=300,fit=cover", (300, 200)),
        ("resize:width=800,height=800,fit=contain", (800, 800)),
        ("resize:width=800,height=100,fit=exact", (400, 100)),
        ("resize:width=800,height=800,fit=inside,enlarge=true", (800, 400)),
        ("resize:width=800,height=800,fit=cover,enlarge=true", (800, 800)),
        ("resize:width=800,height=100,fit=exact,enlarge=true", (800, 100)),
    ],
)
def test_resize_sizes_per_fit_mode(spec: str, expected: tuple[int, int]) -> None:
    assert _size(SOURCE_400x200, spec) == expected


@pytest.mark.parametrize(
    ("gravity", "expected_colours"),
    [
        # the 400x200 source cropped to a 200x200 square: which half survives
        ("west", (RED, BLUE)),
        ("east", (GREEN, WHITE)),
    ],
)
def test_cover_crops_the_overflow_at_the_gravity(
    gravity: str, expected_colours: tuple[tuple[int, int, int], ...]
) -> None:
    image = _render_pixels(
        SOURCE_400x200, f"resize:width=100,height=100,fit=cover,gravity={gravity}"
    )
    top, bottom = expected_colours
    assert np.abs(image[25, 50].astype(int) - top).max() <= 2
    assert np.abs(image[75, 50].astype(int) - bottom).max() <= 2


def test_cover_center_keeps_the_middle() -> None:
    image = _render_pixels(SOURCE_400x200, "resize:width=100,height=100,fit=cover")
    # the middle of the source: left half red/blue, right half green/white
    assert np.abs(image[25, 10].astype(int) - RED).max() <= 2
    assert np.abs(image[25, 90].astype(int) - GREEN).max() <= 2


def test_contain_pads_with_the_background_at_the_gravity() -> None:
    image = _render_pixels(
        SOURCE_400x200, "resize:width=100,height=100,fit=contain,gravity=north,background=000000"
    )
    assert image.shape[:2] == (100, 100)
    assert np.abs(image[10, 10].astype(int) - RED).max() <= 2  # image at the top
    assert image[90, 50].tolist() == [0, 0, 0]  # padding below


def test_contain_with_transparent_background_adds_alpha() -> None:
    image = _render_pixels(
        SOURCE_400x200, "resize:width=100,height=100,fit=contain,background=transparent"
    )
    assert image.shape == (100, 100, 4)
    assert image[5, 50, 3] == 0 and image[50, 50, 3] == 255


@pytest.mark.parametrize(
    ("spec", "expected", "colour"),
    [
        ("crop:x=0,y=0,width=100,height=50", (100, 50), RED),
        ("crop:x=300,y=150,width=100,height=50", (100, 50), WHITE),
        ("crop:x=350,y=0,width=100,height=100", (50, 100), GREEN),  # clipped to the image
        ("crop:width=100,height=50,gravity=southwest", (100, 50), BLUE),
        ("crop:width=100,height=50,gravity=northeast", (100, 50), GREEN),
        ("crop:width=1000,height=1000", (400, 200), None),
    ],
)
def test_crop_boxes(spec: str, expected: tuple[int, int], colour: tuple[int, int, int] | None) -> None:
    image = _render_pixels(SOURCE_400x200, spec)
    assert (image.shape[1], image.shape[0]) == expected
    if colour is not None:
        assert np.abs(image[image.shape[0] // 2, image.shape[1] // 2].astype(int) - colour).max() <= 2


def test_crop_starting_outside_the_image_is_invalid() -> None:
    with pytest.raises(InvalidOperation) as info:
        render(SOURCE_400x200, parse_operations(["crop:x=400,y=0,width=10,height=10"]))
    assert info.value.processor == "crop"


@pytest.mark.parametrize(
    ("angle", "expected_size", "top_left"),
    [
        (90, (200, 400), BLUE),  # clockwise: the bottom-left comes to the top-left
        (180, (400, 200), WHITE),
        (270, (200, 400), GREEN),
        (-90, (200, 400), GREEN),
        (360, (400, 200), RED),
    ],
)
def test_rotate_right_angles_are_exact(
    angle: int, expected_size: tuple[int, int], top_left: tuple[int, int, int]
) -> None:
    image = _render_pixels(SOURCE_400x200, f"rotate:angle={angle}")
    assert (image.shape[1], image.shape[0]) == expected_size
    assert image[2, 2].tolist() == list(top_left)


def test_rotate_arbitrary_angle_grows_the_canvas_and_fills_corners() -> None:
    image = _render_pixels(SOURCE_400x200, "rotate:angle=30,background=ff00ff")
    w = round(400 * np.cos(np.radians(30)) + 200 * np.sin(np.radians(30)))
    h = round(400 * np.sin(np.radians(30)) + 200 * np.cos(np.radians(30)))
    assert (image.shape[1], image.shape[0]) == (w, h)
    assert image[0, 0].tolist() == [255, 0, 255]  # corner is background (BGR magenta)


@pytest.mark.parametrize(
    ("axis", "top_left"), [("horizontal", GREEN), ("vertical", BLUE), ("both", WHITE)]
)
def test_flip_axes(axis: str, top_left: tuple[int, int, int]) -> None:
    image = _render_pixels(SOURCE_400x200, f"flip:axis={axis}")
    assert image[2, 2].tolist() == list(top_left)


def test_grayscale_gives_equal_channels_or_one() -> None:
    image = _render_pixels(SOURCE_400x200, "grayscale")
    assert image.ndim == 2 or (image[..., 0] == image[..., 1]).all()


def test_blur_and_sharpen_keep_the_size_and_change_pixels() -> None:
    blurred = _render_pixels(SOURCE_400x200, "blur:sigma=4")
    sharpened = _render_pixels(_png_of(blurred), "sharpen:amount=2,sigma=2")
    assert blurred.shape == sharpened.shape == (200, 400, 3)
    # blur softens the red/green edge; sharpening steepens it again
    edge = slice(190, 210)
    assert np.abs(np.diff(sharpened[50, edge, 2].astype(int))).max() > np.abs(
        np.diff(blurred[50, edge, 2].astype(int))
    ).max()


def test_enlarging_past_the_limits_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as info:
        render(
            SOURCE_400x200,
            parse_operations(["resize:width=20000,height=20000,enlarge=true"]),
            Limits(),
        )
    assert info.value.processor == "resize"


def test_watermark_lands_at_its_gravity(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    logo = np.zeros((20, 40, 4), np.uint8)
    logo[..., 0] = 255  # blue, opaque
    logo[..., 3] = 255
    cv2.imwrite(str(tmp_path / "logo.png"), logo)
    monkeypatch.setenv("PIXELPIPE_WATERMARK_DIR", str(tmp_path))
    white = _png_of(np.full((200, 400, 3), 255, np.uint8))
    image = _render_pixels(white, "watermark:image=logo.png,gravity=southeast,margin=10,opacity=1,scale=0.1")
    # 10% of 400 = 40 px wide, 20 high, 10 px from the bottom-right corner
    assert image[200 - 10 - 10, 400 - 10 - 20].tolist() == [255, 0, 0]
    assert image[200 - 5, 400 - 5].tolist() == [255, 255, 255]
    assert image[10, 10].tolist() == [255, 255, 255]


def test_unknown_watermark_is_invalid(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PIXELPIPE_WATERMARK_DIR", str(tmp_path))
    with pytest.raises(InvalidOperation):
        render(SOURCE_400x200, parse_operations(["watermark:image=missing.png"]))
