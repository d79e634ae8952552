"""The one place that imports OpenCV, after setting its decoder caps in the environment.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS``, ``OPENCV_IO_MAX_IMAGE_WIDTH`` and
``OPENCV_IO_MAX_IMAGE_HEIGHT`` exactly once, at ``import cv2``: set later they are ignored.
Every imaging module imports ``cv2`` through here, so whichever process touches the engine
first (the parent, a pool child, a test, a benchmark) gets the caps. They are a backstop
only: :mod:`pixelpipe.imaging.formats` checks the header against :class:`Limits` before any
decoder runs. Values already in the environment win (``setdefault``), so an operator can
raise them.
"""

from __future__ import annotations

import os

from pixelpipe.imaging.limits import DEFAULT_LIMITS, Limits


def ceiling_env(limits: Limits) -> dict[str, str]:
    """OpenCV's decoder hard ceiling for ``limits``: a little above the policy, which itself is
    enforced from headers; this only stops a header/decoder disagreement from allocating
    gigabytes. The pool puts it in the environment its (spawned) children start with, so a
    raised ``PIXELPIPE_MAX_PIXELS`` raises OpenCV's ceiling too."""
    return {
        "OPENCV_IO_MAX_IMAGE_PIXELS": str(limits.max_pixels + 1),
        "OPENCV_IO_MAX_IMAGE_WIDTH": str(limits.max_side),
        "OPENCV_IO_MAX_IMAGE_HEIGHT": str(limits.max_side),
    }


def raise_ceiling(limits: Limits) -> None:
    """Make sure processes started from now on let ``limits`` through OpenCV's ceiling
    (never lowers a ceiling an operator or an earlier call set higher)."""
    for key, value in ceiling_env(limits).items():
        current = os.environ.get(key, "")
        if not current.isdigit() or int(current) < int(value):
            os.environ[key] = value


_CV_ENV = {
    **ceiling_env(DEFAULT_LIMITS),
    # no OpenEXR / JPEG 2000 via Jasper: we never allow them, keep their parsers shut
    "OPENCV_IO_ENABLE_OPENEXR": "0",
    "OPENCV_IO_ENABLE_JASPER": "0",
    # libjpeg's "Corrupt JPEG data" warnings go to stderr otherwise; we detect truncation
    # ourselves and report through errors
    "OPENCV_LOG_LEVEL": "FATAL",
    # OpenCL device probing costs start-up time and memory in every pool process
    "OPENCV_OPENCL_RUNTIME": "disabled",
    # cv2 links OpenBLAS; one thread per process like everything else here
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}

for _key, _value in _CV_ENV.items():
    os.environ.setdefault(_key, _value)

import cv2  # noqa: E402  (must follow the environment set-up above)

# in case cv2 was imported before us (then the env above came too late for the log level)
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)

__all__ = ["ceiling_env", "cv2", "raise_ceiling", "single_thread"]


def single_thread() -> None:
    """Make OpenCV use one thread in this process (the pool runs one process per core)."""
    cv2.setNumThreads(1)
