"""Keep an image process's freed buffers for its next upload (glibc's malloc settings).

An image process allocates the same large buffers for every upload: the decoded image (18 MB
for a 6 MP photo), its resized copies, the encoders' scratch. With glibc's defaults each such
buffer either comes from ``mmap`` (above the mmap threshold, 128 KiB at start, raised
dynamically only after a free) or lands at the top of the heap, which ``free`` hands back to
the kernel once more than the trim threshold is free there. Either way the next upload gets
fresh pages from the kernel: a page fault and a page of zeroes per 4 KiB. Measured on the 6 MP
sample photo, that was 8 of the 25 ms its decode took inside a three-rendition render
(``benchmarks/engine/RESULTS.md``, "malloc" section).

:func:`keep_freed_buffers` fixes both thresholds: buffers under 32 MiB (the ceiling of glibc's
own dynamic mmap threshold on 64-bit) come from the heap, and up to 64 MiB of free heap top stays with
the process. So a process's RSS stays up to about 64 MiB above what it holds live, which the
pool's per-process memory cap and its recycling after ``max_tasks_per_child`` already bound.
Other C libraries (musl, macOS) have no such knobs: there it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Final

__all__ = ["KEPT_FREE_BYTES", "LARGE_FROM_HEAP_BYTES", "keep_freed_buffers"]

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

#: allocations below this come from the heap, larger ones are mapped (and unmapped on free)
LARGE_FROM_HEAP_BYTES: Final = 32 * 1024 * 1024
#: free memory at the top of the heap kept by the process rather than returned to the kernel
KEPT_FREE_BYTES: Final = 64 * 1024 * 1024


def keep_freed_buffers(
    kept_free_bytes: int = KEPT_FREE_BYTES, large_from_heap_bytes: int = LARGE_FROM_HEAP_BYTES
) -> bool:
    """Set glibc's trim and mmap thresholds for this process; True if glibc took both.

    Call it once, early, in a process that renders images (the pool's children do). Setting a
    threshold also turns off glibc's dynamic adjustment of both, so the values stay put.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trimmed: bool = mallopt(_M_TRIM_THRESHOLD, kept_free_bytes) == 1
    mapped: bool = mallopt(_M_MMAP_THRESHOLD, large_from_heap_bytes) == 1
    return trimmed and mapped
