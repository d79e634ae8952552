"""``pixelpipe version [--verbose] [--json]``: the codec versions the OpenCV wheel bundles."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from pixelpipe import __version__
from pixelpipe.cli import main
from pixelpipe.imaging.codecs import codec_versions

REPORT = """General configuration for OpenCV 5.0.0 =====================================
  Media I/O:
    ZLib:                        /usr/lib64/libz.so (ver 1.2.11)
    JPEG:                        build-libjpeg-turbo (ver 3.1.2-70)
      SIMD Support Request:      YES
    PNG:                         /usr/local/lib/libpng.so (ver 1.6.58)
    HDR:                         YES

  Video I/O:
    JPEG:                        not this one
"""


def test_codec_versions_are_read_from_the_media_io_section_only() -> None:
    found = codec_versions(REPORT)
    assert found["JPEG"] == "build-libjpeg-turbo (ver 3.1.2-70)"
    assert found["PNG"] == "/usr/local/lib/libpng.so (ver 1.6.58)"
    assert "HDR" not in found and "SIMD Support Request" not in found
    assert found["opencv"]


def test_version_verbose_json_names_the_bundled_codecs(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version", "--verbose", "--json"])
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    assert body["pixelpipe"] == __version__
    assert {"opencv", "JPEG", "PNG", "WEBP"} <= set(body["codecs"])
    assert "ver" in body["codecs"]["JPEG"]  # the real build report of this wheel
    assert body["libraries"]["aiokafka"] != "not installed"


def test_version_plain(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version"])
    assert result.exit_code == 0 and result.stdout.startswith(f"pixelpipe {__version__} (Python")
