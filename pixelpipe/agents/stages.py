"""Where an upload's time went: per-stage figures for the ``processed`` log line.

Issue 15 (the latency tail) needed to know, for the slowest uploads, which stage took the
time. These are ``time.perf_counter`` / wall-clock differences taken at stage boundaries,
a few dictionary writes per upload: cheap enough to keep on for every upload.

Each upload runs in its own asyncio task (``agents.process``), so the current upload's
figures live in a context variable: the steps of ``UploadProcessor`` add to it without
threading a collector through every signature. Outside an upload (a unit test calling a
step directly) nothing is recorded.

The stages, in milliseconds unless said otherwise:

- ``kafka``: the upload record's timestamp (the producer's create time) -> the feed read it;
- ``handoff``: the feed read it -> the agent started it;
- ``source``: opening and checking the source (size, sha256);
- ``pool``: waiting for an image process and rendering there (submit -> result);
- ``render``: the part of ``pool`` the image process spent rendering (its own timings);
- ``ahead``: renders already running or queued when this one was submitted (a count);
- ``store``: writing the outputs (durably) to the blob store;
- ``rest``: the rest of ``processing_ms`` (decoding the event, planning, the event loop's
  delays between the steps above);
- ``ack``: the processed event's send -> the broker's acknowledgement.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import perf_counter

_CURRENT: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "pixelpipe_stages", default=None)

#: the order of the log line
ORDER = ("kafka", "handoff", "source", "pool", "render", "ahead", "store", "rest", "ack")


def begin() -> dict[str, float]:
    """Start collecting for the upload of the current task; returns its (live) figures."""
    stages: dict[str, float] = {}
    _CURRENT.set(stages)
    return stages


def add(name: str, value: float) -> None:
    """Add ``value`` to stage ``name`` of the current upload (nothing outside one)."""
    stages = _CURRENT.get()
    if stages is not None:
        stages[name] = stages.get(name, 0.0) + value


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time the block into stage ``name`` (milliseconds)."""
    began = perf_counter()
    try:
        yield
    finally:
        add(name, (perf_counter() - began) * 1000.0)


def describe(stages: Mapping[str, float]) -> str:
    """``kafka 3, handoff 0, source 2, pool 31, render 25, ahead 1, store 2, rest 1, ack 4``."""
    known = [f"{name} {stages[name]:.0f}" for name in ORDER if name in stages]
    extra = [f"{name} {value:.0f}" for name, value in sorted(stages.items())
             if name not in ORDER]
    return ", ".join(known + extra)
