"""The codec libraries this process decodes and encodes with, and their versions.

The OpenCV wheel bundles its own libjpeg-turbo, libpng, libwebp, libavif, libtiff and
OpenJPEG; their versions decide which published vulnerabilities apply, and they are not in
any lock file. ``pixelpipe version --verbose`` prints them and the worker logs them at start.
"""

from __future__ import annotations

import re
from importlib import metadata

from pixelpipe.imaging._cv import cv2

__all__ = ["codec_versions", "library_versions"]

#: "Media I/O" rows of ``cv2.getBuildInformation()`` worth reporting, by label
_CODECS = ("ZLib", "JPEG", "WEBP", "AVIF", "PNG", "TIFF", "JPEG 2000", "OpenEXR", "GIF")
_ROW = re.compile(r"^\s{4}(?P<label>[A-Za-z0-9 ]+?):\s+(?P<value>.+?)\s*$")


def codec_versions(build_information: str | None = None) -> dict[str, str]:
    """``{"JPEG": "build-libjpeg-turbo (ver 3.1.2-70)", ...}`` from OpenCV's build report
    (its own, or the text given); ``opencv`` is OpenCV's version."""
    text = cv2.getBuildInformation() if build_information is None else build_information
    out = {"opencv": str(cv2.__version__)}
    section = text.split("Media I/O:", 1)[1] if "Media I/O:" in text else ""
    for line in section.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break  # the next section
        match = _ROW.match(line)
        if match and match["label"] in _CODECS:
            out[match["label"]] = match["value"]
    try:
        import pillow_heif  # type: ignore[import-not-found,unused-ignore]

        info = pillow_heif.libheif_info()
        decoders = ", ".join(str(v) for v in dict(info.get("decoders", {})).values())
        out["HEIF"] = (f"pillow-heif {metadata.version('pillow-heif')}, libheif "
                       f"{info.get('libheif', '?')} ({decoders or 'no decoder'})")
    except (ImportError, metadata.PackageNotFoundError):
        pass
    return out


def library_versions(names: tuple[str, ...] = (
        "faust-streaming", "aiokafka", "opencv-python-headless", "numpy", "orjson", "pebble",
        "prometheus-client", "click", "rich", "psutil")) -> dict[str, str]:
    """Installed versions of the Python distributions pixelpipe runs on."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
