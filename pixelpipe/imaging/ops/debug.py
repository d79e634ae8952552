"""``debug-sleep``: a test-only processor that blocks, to exercise the pool's hard timeout.

Refused (``invalid_operation``) at parse time and again when applied unless the environment
variable ``PIXELPIPE_ENABLE_DEBUG_OPS`` is ``1`` in that process, so a production event can
never ask for it.
"""

from __future__ import annotations

import os
import time

from pixelpipe.errors import InvalidOperation
from pixelpipe.imaging.ops.base import Image, OpDef, Param, Params, Size

__all__ = ["DEBUG_ENV", "DEBUG_SLEEP", "debug_ops_enabled"]

DEBUG_ENV = "PIXELPIPE_ENABLE_DEBUG_OPS"


def debug_ops_enabled() -> bool:
    """Whether debug operations are allowed in this process (reads ``PIXELPIPE_ENABLE_DEBUG_OPS``)."""
    return os.environ.get(DEBUG_ENV) == "1"


def _check(params: Params) -> None:
    if not debug_ops_enabled():
        raise InvalidOperation("unknown operation 'debug-sleep'", processor="debug-sleep")


def _apply(image: Image, params: Params, target: Size) -> Image:
    _check(params)
    time.sleep(params["seconds"])
    return image


DEBUG_SLEEP = OpDef(
    name="debug-sleep",
    params=(Param("seconds", "float", 1.0, minimum=0, maximum=3600),),
    apply=_apply,
    validate=_check,
    doc=__doc__ or "",
)
