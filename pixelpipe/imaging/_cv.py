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

from pixelpipe.imaging.limits import DEFAULT_LIMITS

# A decoder hard ceiling a little above the default policy: the policy itself is enforced
# from headers, this only stops a header/decoder disagreement from allocating gigabytes.
_CV_ENV = {
    "OPENCV_IO_MAX_IMAGE_PIXELS": str(DEFAULT_LIMITS.max_pixels + 1),
    "OPENCV_IO_MAX_IMAGE_WIDTH": str(DEFAULT_LIMITS.max_side),
    "OPENCV_IO_MAX_IMAGE_HEIGHT": str(DEFAULT_LIMITS.max_side),
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

__all__ = ["cv2", "single_thread"]


def single_thread() -> None:
    """Make OpenCV use one thread in this process (the pool runs one process per core)."""
    cv2.setNumThreads(1)
