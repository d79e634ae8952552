"""``render``: one source and a list of operations in, one verified encoded image out.

Pure and synchronous (run it in :class:`pixelpipe.imaging.pool.ImagePool`, never on an
event loop). The steps, each timed under its processor name:

1. ``decode``: read (byte cap), sniff the magic bytes, parse the header, check the limits,
   plan every operation's output size from the header (so an over-limit intermediate is
   refused before decoding too), pick a JPEG shrink-on-load factor, decode, orient upright;
2. each operation under its own name (``resize``, ``crop``, ...);
3. ``encode`` in the chosen format; 4. ``verify`` the encoded bytes.

Every failure is a :class:`pixelpipe.errors.PixelpipeError` with a code and the processor
that failed; anything unexpected becomes ``InternalError`` (a bug, not the input's fault).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from pixelpipe.errors import InternalError, PixelpipeError, WorkerCrashed
from pixelpipe.imaging._cv import cv2
from pixelpipe.imaging.decode import decode, read_source, translate_cv_error
from pixelpipe.imaging.encode import encode, output_format
from pixelpipe.imaging.exif import apply_orientation, oriented_size, read_orientation
from pixelpipe.imaging.formats import Header, check_limits, probe
from pixelpipe.imaging.limits import DEFAULT_LIMITS, Limits
from pixelpipe.imaging.ops import REGISTRY
from pixelpipe.imaging.ops.base import Image, Size
from pixelpipe.imaging.ops.pixels import channels
from pixelpipe.imaging.spec import Operation, canonical_spec, parse_operation
from pixelpipe.imaging.verify import verify

__all__ = ["CASCADE_HEADROOM", "SHRINK_HEADROOM", "RenderResult", "plan_sizes", "render",
           "render_many", "shrink_factor"]

#: a JPEG is shrunk on load (1/2, 1/4, 1/8) while the decoded image stays at least this many
#: times the size the following resize needs. libjpeg's scaled IDCT is itself a proper
#: low-pass filter, so like libvips we only require the decoded image to cover the target
#: (1.0) rather than 2x it: on the sample photos an 800 px thumbnail then decodes at 1/4
#: instead of 1/2, about 8 ms less single-core, at the same PSNR against a full decode as a
#: bilinear finish (see benchmarks/engine/RESULTS.md). Raise it for more conservative output.
SHRINK_HEADROOM: Final = 1.0

#: in one upload, a rendition is resized from a larger one's result (instead of from the
#: decoded image) only when that result is at least this many times its size on both sides:
#: resampling twice from twice the size or more is indistinguishable from resampling once
#: (tests/unit/imaging/test_imaging_render_many.py holds it to a PSNR bound)
CASCADE_HEADROOM: Final = 2.0


@dataclass(frozen=True, slots=True)
class RenderResult:
    """A verified output: encoded ``data`` in ``format`` of ``width`` x ``height``.

    ``timings_ms`` has one entry per processor name (``decode``, each operation, ``encode``,
    ``verify``); ``skipped`` names processors that were not applied (empty for now).
    """

    data: bytes
    format: str
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, processor: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except PixelpipeError:
            raise
        except cv2.error as exc:
            raise translate_cv_error(exc, processor) from exc
        except MemoryError as exc:
            raise WorkerCrashed(f"out of memory in {processor}", processor=processor) from exc
        except Exception as exc:
            raise InternalError(f"{processor}: {type(exc).__name__}: {exc}",
                                processor=processor) from exc
        finally:
            elapsed = (time.perf_counter() - start) * 1000.0
            self.timings[processor] = self.timings.get(processor, 0.0) + elapsed


def plan_sizes(
    operations: Sequence[Operation], width: int, height: int, limits: Limits
) -> list[Size]:
    """Each operation's output size from a ``width`` x ``height`` input, all within limits."""
    sizes: list[Size] = []
    for op in operations:
        width, height = REGISTRY[op.name].size(op.arguments, width, height)
        check_limits(width, height, limits, processor=op.name)
        sizes.append((width, height))
    return sizes


def shrink_factor(header: Header, operations: Sequence[Operation], width: int, height: int) -> int:
    """The JPEG shrink-on-load factor (1, 2, 4 or 8) for the first resize, if one comes
    before any operation whose result depends on the pixel scale."""
    if header.format != "jpeg":
        return 1
    for op in operations:
        opdef = REGISTRY[op.name]
        if opdef.scale is not None:
            scale = opdef.scale(op.arguments, width, height)
            for factor in (8, 4, 2):
                if scale * factor * SHRINK_HEADROOM <= 1.0:
                    return factor
            return 1
        if not opdef.scale_invariant:
            return 1
    return 1


def render(
    source: bytes | str | os.PathLike[str],
    operations: Sequence[Operation],
    limits: Limits = DEFAULT_LIMITS,
) -> RenderResult:
    """Render ``operations`` on ``source`` (bytes or a file path) within ``limits``."""
    clock = _Clock()
    with clock.stage("decode"):
        ops = tuple(parse_operation(op) for op in operations)
        data = read_source(source, limits)
        header = probe(data)
        check_limits(header.width, header.height, limits)
        orientation = read_orientation(header.exif)
        width, height = oriented_size(header.width, header.height, orientation)
        sizes = plan_sizes(ops, width, height, limits)
        image = decode(data, header, shrink_factor(header, ops, width, height))
        del data  # the encoded source is not needed past this point
        image = apply_orientation(image, orientation)
        got_h, got_w = image.shape[:2]
        check_limits(got_w, got_h, limits)  # a header that lied about its size
    for op, target in zip(ops, sizes, strict=True):
        with clock.stage(op.name):
            image = REGISTRY[op.name].apply(image, op.arguments, target)
    final_w, final_h = sizes[-1] if sizes else (image.shape[1], image.shape[0])
    kind, options = output_format(ops, header.format, channels(image) == 4)
    with clock.stage("encode"):
        out = encode(image, kind, options)
    with clock.stage("verify"):
        verify(out, kind, final_w, final_h, image)
    return RenderResult(out, kind, final_w, final_h, clock.timings)


# --------------------------------------------------------------------------- decode once


@dataclass(slots=True)
class _Member:
    """One rendition of a ``render_many`` call: its operations and their planned sizes."""

    index: int
    ops: tuple[Operation, ...]
    sizes: list[Size]
    #: index of its first resize when only scale-invariant operations come before it
    resize_at: int | None
    clock: _Clock = field(default_factory=_Clock)


def _first_resize(ops: Sequence[Operation]) -> int | None:
    for i, op in enumerate(ops):
        opdef = REGISTRY[op.name]
        if opdef.scale is not None:
            return i
        if not opdef.scale_invariant:
            return None
    return None


def _full_frame(op: Operation) -> bool:
    """Whether a resize's result is the whole picture, aspect kept, never enlarged (``inside``,
    or one side given): usable as the input of a smaller resize of the same picture."""
    args = op.arguments
    one_side = args.get("width") is None or args.get("height") is None
    return not args.get("enlarge") and (one_side or args.get("fit", "inside") == "inside")


def render_many(
    source: bytes | str | os.PathLike[str],
    renditions: Sequence[Sequence[Operation]],
    limits: Limits = DEFAULT_LIMITS,
) -> list[RenderResult | PixelpipeError]:
    """Every rendition of one upload from **one decode**: one result (or error) per rendition,
    in order.

    The source is read, checked and decoded once, at the shrink-on-load factor the largest
    rendition needs. Renditions that start with the same scale-invariant operations (e.g. a
    ``rotate``) share them; each is then resized from the smallest already-made rendition at
    least ``CASCADE_HEADROOM`` times its size, else from the decoded image. A rendition that
    fails (its plan is over a limit, its encoder fails) is returned as its error and the
    others are unaffected. A source that cannot be decoded raises, as ``render`` does: no
    rendition can be made. One rendition: exactly ``render`` (same bytes, same timings).
    """
    if len(renditions) == 1:  # its failure is the upload's: raised, as render raises it
        return [render(source, renditions[0], limits)]
    shared = _Clock()
    members: list[_Member] = []
    results: list[RenderResult | PixelpipeError | None] = [None] * len(renditions)
    with shared.stage("decode"):
        data = read_source(source, limits)
        header = probe(data)
        check_limits(header.width, header.height, limits)
        orientation = read_orientation(header.exif)
        width, height = oriented_size(header.width, header.height, orientation)
    for index, operations in enumerate(renditions):
        try:
            ops = tuple(parse_operation(op) for op in operations)
            sizes = plan_sizes(ops, width, height, limits)
        except PixelpipeError as error:
            results[index] = error
            continue
        members.append(_Member(index, ops, sizes, _first_resize(ops)))
    if members:
        with shared.stage("decode"):
            factor = min(shrink_factor(header, m.ops, width, height) for m in members)
            image = decode(data, header, factor)
            del data
            image = apply_orientation(image, orientation)
            got_h, got_w = image.shape[:2]
            check_limits(got_w, got_h, limits)
        _render_members(image, members, results, header.format)
        first = min(members, key=lambda m: m.index)
        outcome = results[first.index]
        if isinstance(outcome, RenderResult):  # the shared decode is counted once
            results[first.index] = RenderResult(
                outcome.data, outcome.format, outcome.width, outcome.height,
                {**shared.timings, **outcome.timings_ms}, outcome.skipped)
    return [r if r is not None else InternalError("rendition not rendered") for r in results]


def _render_members(
    image: Image, members: list[_Member], results: list[RenderResult | PixelpipeError | None],
    source_format: str,
) -> None:
    groups: dict[str, list[_Member]] = {}
    for member in members:
        if member.resize_at is None:
            _finish(image, member, 0, results, source_format)
            continue
        key = canonical_spec(member.ops[: member.resize_at])
        groups.setdefault(key, []).append(member)
    for group in groups.values():
        lead = group[0]
        prefix_image = image
        try:
            for op, target in zip(lead.ops[: lead.resize_at], lead.sizes, strict=False):
                with lead.clock.stage(op.name):
                    prefix_image = REGISTRY[op.name].apply(prefix_image, op.arguments, target)
        except PixelpipeError as error:
            for member in group:
                results[member.index] = error
            continue
        made: list[tuple[Size, Image]] = []  # full-frame resizes, to resize smaller ones from
        for member in sorted(group, key=lambda m: -_area(m.sizes[m.resize_at or 0])):
            at = member.resize_at or 0
            target = member.sizes[at]
            start = prefix_image
            for (w, h), candidate in reversed(made):  # smallest first
                if w >= target[0] * CASCADE_HEADROOM and h >= target[1] * CASCADE_HEADROOM:
                    start = candidate
                    break
            op = member.ops[at]
            try:
                with member.clock.stage(op.name):
                    resized = REGISTRY[op.name].apply(start, op.arguments, target)
            except PixelpipeError as error:
                results[member.index] = error
                continue
            if _full_frame(op):
                made.append((target, resized))
                made.sort(key=lambda item: -_area(item[0]))
            _finish(resized, member, at + 1, results, source_format)


def _area(size: Size) -> int:
    return size[0] * size[1]


def _finish(image: Image, member: _Member, start: int,
            results: list[RenderResult | PixelpipeError | None], source_format: str) -> None:
    """The rest of one member's operations from ``start``, then encode and verify."""
    clock = member.clock
    try:
        for op, target in zip(member.ops[start:], member.sizes[start:], strict=True):
            with clock.stage(op.name):
                image = REGISTRY[op.name].apply(image, op.arguments, target)
        final_w, final_h = member.sizes[-1] if member.sizes else (image.shape[1],
                                                                  image.shape[0])
        kind, options = output_format(member.ops, source_format, channels(image) == 4)
        with clock.stage("encode"):
            out = encode(image, kind, options)
        with clock.stage("verify"):
            verify(out, kind, final_w, final_h, image)
    except WorkerCrashed:
        raise  # out of memory: the process leaves (see pool)
    except PixelpipeError as error:
        results[member.index] = error
        return
    results[member.index] = RenderResult(out, kind, final_w, final_h, clock.timings)
