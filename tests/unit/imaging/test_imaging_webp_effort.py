"""``format:type=webp,effort=N``: libwebp's ``method`` through Pillow when it is not the
default. The default keeps OpenCV's path, its canonical spec and its bytes."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_samples import encode, photo_like

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging import parse_operations, render
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.spec import canonical_spec, parse_operation

SOURCE = encode(photo_like(320, 240), ".png")


def _webp(*args: str) -> bytes:
    spec = ",".join(("type=webp", *args))
    return render(SOURCE, parse_operations([f"format:{spec}"])).data


def _pixels(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_the_default_effort_is_left_out_of_the_spec_so_keys_stay() -> None:
    plain = parse_operations(["format:type=webp,quality=80"])
    explicit = parse_operations(["format:type=webp,quality=80,effort=4"])
    assert canonical_spec(plain) == canonical_spec(explicit)
    assert "effort" not in canonical_spec(plain)
    assert "effort=2" in canonical_spec(parse_operations(["format:type=webp,effort=2"]))
    # jpeg ignores a webp-only knob, as it ignores lossless
    assert "effort" not in parse_operation("format:type=jpeg,effort=2").spec


def test_the_default_effort_writes_opencvs_bytes() -> None:
    image = cv2.imdecode(np.frombuffer(SOURCE, np.uint8), cv2.IMREAD_COLOR)
    ok, expected = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok
    assert _webp("quality=80") == _webp("quality=80", "effort=4") == expected.tobytes()


@pytest.mark.parametrize("effort", [0, 2, 6])
def test_another_effort_is_a_different_encode_of_the_same_picture(effort: int) -> None:
    default, other = _webp("quality=80"), _webp("quality=80", f"effort={effort}")
    assert other != default and other[:4] == b"RIFF" and other[8:12] == b"WEBP"
    assert _pixels(other).shape == _pixels(default).shape == (240, 320, 3)
    original = cv2.imdecode(np.frombuffer(SOURCE, np.uint8), cv2.IMREAD_COLOR)
    # same quality setting, so the same fidelity give or take a dB
    assert abs(cv2.PSNR(original, _pixels(other)) - cv2.PSNR(original, _pixels(default))) < 1.5


def test_a_lossless_webp_at_low_effort_keeps_every_pixel_and_alpha() -> None:
    bgra = cv2.cvtColor(photo_like(64, 48), cv2.COLOR_BGR2BGRA)
    bgra[:16, :16, 3] = 0
    bgra[16:32, :16, 3] = 128
    data = render(encode(bgra, ".png"),
                  parse_operations(["format:type=webp,lossless=true,effort=1"])).data
    decoded = _pixels(data)
    visible = bgra[:, :, 3] > 0  # libwebp (OpenCV's path too) may zero fully transparent RGB
    assert np.array_equal(decoded[:, :, 3], bgra[:, :, 3])
    assert np.array_equal(decoded[visible], bgra[visible])


def test_effort_is_bounded() -> None:
    with pytest.raises(InvalidOperation, match="effort"):
        parse_operation("format:type=webp,effort=7")
