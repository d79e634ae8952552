"""Renditions served without rendering, for the ``cached_only`` and ``emergency`` levels.

- ``find_cached``: an output already stored for the same source and rendition, at ``full``,
  ``reduced_quality`` or ``basic`` (the best found wins), found by the same content-addressed
  key the render would have written. Its ``degraded`` mark is the level it was made at.
- ``original_as_rendition``: the source itself, marked ``emergency`` (no pixels touched).

Both run in a thread (file reads); neither decodes an image, only reads its header.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pixelpipe.imaging import Operation, canonical_spec, parse_operation
from pixelpipe.imaging.formats import probe
from pixelpipe.policy.degradation import Level, plan_for_level
from pixelpipe.schemas import RenditionRequest, RenditionResult, UploadEvent
from pixelpipe.storage.base import BlobStore
from pixelpipe.storage.local import output_key, sha256_bytes

#: levels whose stored outputs ``cached_only`` may serve, best first
SERVABLE: tuple[Level, ...] = ("full", "reduced_quality", "basic")


def find_cached(
    store: BlobStore, upload: UploadEvent, rendition: RenditionRequest,
    operations: Sequence[Operation], quality_cap: int,
) -> RenditionResult | None:
    for level in SERVABLE:
        plan = plan_for_level(level, rendition, operations, parse_operation,
                              quality_cap=quality_cap)
        key = output_key(upload.source.sha256, canonical_spec(plan.operations), plan.degraded)
        found = stored_rendition(store, key, rendition, plan.degraded, plan.skipped)
        if found is not None:
            return found
    return None


def stored_rendition(
    store: BlobStore, key: str, rendition: RenditionRequest, degraded: str | None,
    skipped: tuple[str, ...],
) -> RenditionResult | None:
    """The output stored under ``key`` as a rendition result, or None when there is none.
    Its size, checksum and dimensions are read from the file, never assumed."""
    found = store.find_output(key)
    if found is None:
        return None
    uri, path = found
    data = path.read_bytes()  # once: its header and its checksum
    header = probe(data)
    return RenditionResult(
        name=rendition.name, uri=uri, sha256=sha256_bytes(data), size=len(data),
        width=header.width, height=header.height, format=header.format,
        degraded=degraded, skipped=skipped,
    )


def original_as_rendition(
    upload: UploadEvent, source: Path, rendition: RenditionRequest,
) -> RenditionResult:
    header = probe(source.read_bytes())
    return RenditionResult(
        name=rendition.name, uri=upload.source.uri, sha256=upload.source.sha256,
        size=upload.source.size, width=header.width, height=header.height,
        format=header.format, degraded="emergency",
        skipped=tuple(str(op) for op in rendition.operations or ()) or (rendition.preset or "",),
    )
