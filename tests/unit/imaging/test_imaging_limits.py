"""An over-limit image is refused from its header, without allocating its pixels."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from imaging_samples import png_bomb

from pixelpipe.errors import ImageTooLarge
from pixelpipe.imaging import decode as decode_module
from pixelpipe.imaging import parse_operations, render


def test_decoder_is_never_called_for_an_over_limit_header(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("imdecode called for an over-limit image")

    monkeypatch.setattr(decode_module.cv2, "imdecode", refuse)
    with pytest.raises(ImageTooLarge):
        render(png_bomb(8_000, 8_000), parse_operations(["resize:width=100"]))


def test_over_limit_image_does_not_raise_peak_memory(tmp_path: Path) -> None:
    # 8000 x 8000 RGB: 192 MB of pixels behind a ~190 KB file
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(8_000, 8_000))
    script = textwrap.dedent(
        f"""
        import resource
        from pixelpipe.errors import ImageTooLarge
        from pixelpipe.imaging import parse_operations, render
        ops = parse_operations(["resize:width=100"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            render({str(bomb)!r}, ops)
        except ImageTooLarge:
            pass
        else:
            raise SystemExit("not refused")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(after - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    grown_kib = int(out.stdout.strip())
    assert grown_kib < 8 * 1024, f"peak RSS grew {grown_kib} KiB"
