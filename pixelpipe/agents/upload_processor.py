"""The processing path of one upload: decode, check the source (``source_check``), render,
store, decide.

``UploadProcessor.process`` never raises for anything an event can cause: it returns either a
``Processed`` (the processed-image event to publish) or a ``DeadLettered`` (the dead letter).
Only a bug in this module itself could escape, and the agent treats that as fatal for the
worker (the event stays unacked and is redelivered), never as a reason to drop the event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelpipe.agents import stages
from pixelpipe.agents.degraded_outputs import (
    find_cached,
    original_as_rendition,
    stored_rendition,
)
from pixelpipe.agents.faults import FaultInjector
from pixelpipe.agents.source_check import OpenedSource, SourceChecker
from pixelpipe.agents.telemetry import TelemetryReporter
from pixelpipe.errors import (
    INPUT_ERROR_CODES,
    BreakerOpen,
    ChecksumMismatch,
    InternalError,
    OperationalError,
    Overloaded,
    PixelpipeError,
)
from pixelpipe.imaging import (
    ImagePool,
    Limits,
    Operation,
    RenderResult,
    canonical_spec,
    parse_operation,
)
from pixelpipe.imaging import resolve_rendition as resolve_operations
from pixelpipe.imaging.formats import output_extension
from pixelpipe.policy.degradation import (
    DEFER,
    QUALITY_CAP,
    Level,
    for_priority,
    plan_for_level,
    worse_of,
)
from pixelpipe.policy.gate import NOT_PROCESSORS, gate, processors_of
from pixelpipe.schemas import (
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    UploadEvent,
    decode_upload,
    original_of,
    utc_now_iso,
)
from pixelpipe.storage.base import BlobStore, StoredInfo
from pixelpipe.storage.local import output_key
from pixelpipe.streams.breaker_view import BreakerView
from pixelpipe.streams.control import ControlView

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Processed:
    event: ProcessedEvent
    #: where the time went (``agents.stages``), for the log line; not part of the event
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    """An attempt failed with ``error``; ``routing`` decides retry or dead letter."""

    error: PixelpipeError
    upload: UploadEvent | None
    original: dict[str, Any]
    event_id: str


AttemptResult = Processed | Failed


@dataclass(frozen=True, slots=True)
class _Job:
    """A rendition to render: its final operations, its ``degraded`` mark and what was left
    out (by the level or an open breaker)."""

    rendition: RenditionRequest
    operations: tuple[Operation, ...]
    degraded: str | None
    skipped: tuple[str, ...]


class UploadProcessor:
    """Runs uploads through the image pool and the blob store. One per worker process."""

    def __init__(
        self, store: BlobStore, pool: ImagePool, limits: Limits,
        faults: FaultInjector | None = None, breakers: BreakerView | None = None,
        reporter: TelemetryReporter | None = None,
        levels: Callable[[], tuple[Level, bool]] | None = None, quality_cap: int = QUALITY_CAP,
        control: ControlView | None = None, max_deferrals: int = 3,
    ) -> None:
        """``levels``: the service level to serve at now, and whether an operator forced it
        (``ServiceLevel.current``); None: always ``full``."""
        self.store = store
        self.pool = pool
        self.limits = limits
        self.faults = faults or FaultInjector()
        self.breakers = breakers
        self.reporter = reporter or TelemetryReporter(None)
        self.levels = levels
        self.quality_cap = quality_cap
        self.control = control
        self.max_deferrals = max_deferrals
        self.sources = SourceChecker(store, limits, self.faults)
        self._started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Warm the pool and catch up with the breakers, once; the agents await it."""
        async with self._starting:
            if self._started:
                return
            await self.pool.warm_up()
            if self.breakers is not None:
                await self.breakers.start()
            if self.control is not None:  # an operator's override holds from the first upload
                await self.control.start()
            self._started = True

    async def process(self, raw: bytes | None, origin: Origin, *, attempts: int = 1,
                      deferrals: int = 0) -> AttemptResult:
        """The outcome of one attempt at the upload in ``raw`` read from ``origin``.

        ``attempts``: the number of this attempt (1 on the uploads topic), reported in the
        processed event. ``deferrals``: how many times the degradation ladder (or an open
        breaker) already deferred it; from ``max_deferrals`` on, an automatic level serves
        it (``emergency``: the original, or ``basic`` if the pool has room) instead of
        deferring it again, so a sustained overload cannot keep an upload waiting for ever.
        """
        started = time.perf_counter()
        timings = stages.begin()
        upload: UploadEvent | None = None
        try:
            upload = decode_upload(raw)
            # Validate every rendition (cheap, pure) before touching the source or the CPU.
            plans = [(r, resolve_operations(r.preset, _operations(r))) for r in upload.renditions]
            spent = deferrals >= self.max_deferrals
            level, forced = self._level_for(upload, spent)
            if level == "cached_only" and not forced and spent:
                level = "emergency"  # deferred enough: served now, degraded and marked
            if level == "cached_only" and not forced and not self.pool.has_room():
                # the store may have every rendition; if not, defer without reading the source
                results = await self._cached_all(upload, plans)
            else:
                with stages.timed("source"):
                    source = await self.sources.open(upload)
                try:
                    results = await self._render_all(upload, source, plans, level, forced,
                                                     attempts)
                finally:  # an S3 store's downloaded copy may be evicted from now on
                    self.store.release_source(source.path)
        except OperationalError:
            raise  # the worker cannot process anything (a broken pool): stop, settle nothing
        except PixelpipeError as error:
            return self._failed(raw, upload, error, origin)
        except Exception as exc:  # a bug below us: route it (retryable) with the evidence
            log.exception(
                "unexpected error processing %s at %s[%d]@%d",
                upload.event_id if upload else "?", origin.topic, origin.partition, origin.offset,
            )
            bug = InternalError(f"{type(exc).__name__}: {exc}")
            return self._failed(raw, upload, bug, origin)
        processing_ms = round((time.perf_counter() - started) * 1000, 3)
        # the rest: the event loop's own steps and its delays between them
        timings["rest"] = processing_ms - sum(timings.get(name, 0.0)
                                              for name in ("source", "pool", "store"))
        return Processed(
            ProcessedEvent(
                event_id=upload.event_id,
                image_id=upload.image_id,
                source_sha256=upload.source.sha256,
                renditions=tuple(results),
                attempts=attempts,
                processing_ms=processing_ms,
                completed_at=utc_now_iso(),
                attributes=upload.attributes,
                level=level,
                supersedes=upload.supersedes,
            ),
            stages=timings,
        )

    def _level_for(self, upload: UploadEvent, spent: bool = False) -> tuple[Level, bool]:
        """The level this upload is served at and whether an operator forced it; ``Overloaded``
        (a deferral) for a ``low`` priority upload from ``basic`` on while the pool is busy,
        unless its deferrals are ``spent`` (then ``emergency``)."""
        if self.levels is None:
            return "full", False
        level, forced = self.levels()
        served = for_priority(level, upload.priority, forced=forced)
        if served == DEFER:
            if not forced and self.pool.has_room():
                return "basic", forced  # work-conserving: see _plan_one
            if not forced and spent:
                return "emergency", forced
            raise Overloaded(f"deferred at service level {level} (priority {upload.priority})",
                             processor="degrade")
        return served, forced  # type: ignore[return-value]

    # ----------------------------------------------------------------- steps

    async def _cached_all(
        self, upload: UploadEvent, plans: Sequence[tuple[RenditionRequest, Sequence[Operation]]],
    ) -> list[RenditionResult]:
        """Every rendition from the store, or ``Overloaded`` (defer) as soon as one is missing."""
        results = []
        for rendition, operations in plans:
            cached = await asyncio.to_thread(
                find_cached, self.store, upload, rendition, operations, self.quality_cap)
            if cached is None:
                raise Overloaded(f"service level cached_only: no stored output of rendition "
                                 f"{rendition.name!r} yet", processor="degrade")
            results.append(cached)
        return results

    async def _render_all(
        self, upload: UploadEvent, source: OpenedSource,
        plans: Sequence[tuple[RenditionRequest, Sequence[Operation]]], level: Level = "full",
        forced: bool = False, attempts: int = 1,
    ) -> list[RenditionResult]:
        """Every rendition of the upload; the renders in **one pool task from one decode**.

        A rendition that fails does not lose the others: they are rendered and stored (and
        counted as successes), then the upload fails with the first failing rendition's own
        error. Its retry serves the stored ones from the store (``attempts`` > 1) and renders
        only what is missing.
        """
        served: list[RenditionResult | _Job] = [
            await self._plan_one(upload, source.path, rendition, operations, level, forced,
                                 attempts)
            for rendition, operations in plans
        ]
        jobs = [(i, job) for i, job in enumerate(served) if isinstance(job, _Job)]
        expected = None if source.verified else upload.source.sha256
        outcomes, checked = await self._run_jobs(source.path, [job for _, job in jobs],
                                                 expected)
        if checked:
            self.sources.verified_by_render(upload, source)
        elif not source.verified:
            # nothing read it to render (or the task failed without saying whether it had
            # checked it: a corrupt image, a timeout): check it before serving or failing
            await self.sources.verify_here(upload, source)
        errors: dict[int, PixelpipeError] = {}  # by rendition: the first one is the upload's
        rendered: list[tuple[int, _Job, RenderResult]] = []
        for (i, job), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, PixelpipeError):
                await self._report_failure(outcome)
                errors[i] = outcome
                continue
            await self._report_success(outcome)
            rendered.append((i, job, outcome))
        stored = await self._store_all(upload, [(job, result) for _, job, result in rendered])
        for (i, _, _), result in zip(rendered, stored, strict=True):
            if isinstance(result, PixelpipeError):
                errors[i] = result
            else:
                served[i] = result
        if errors:
            raise errors[min(errors)]
        return [r for r in served if isinstance(r, RenditionResult)]

    async def _plan_one(
        self, upload: UploadEvent, source: Path, rendition: RenditionRequest,
        operations: Sequence[Operation], level: Level = "full", forced: bool = False,
        attempts: int = 1,
    ) -> RenditionResult | _Job:
        """How one rendition is served at ``level``: a result made without rendering (cached,
        original, already stored by an earlier attempt) or a render job; ``Overloaded``
        defers the upload.

        Work-conserving: at an automatic ``cached_only`` or ``emergency``, a rendition the
        pool has room for *now* is rendered at ``basic`` instead of deferred or served as the
        original. The ladder sheds the work beyond capacity, never the capacity itself (an
        idle image process while uploads are deferred would cut throughput, not load). An
        operator's forced level is obeyed as it is: forcing is for when rendering itself is
        the problem.
        """
        at_level = plan_for_level(level, rendition, operations, parse_operation,
                                  quality_cap=self.quality_cap)
        if at_level.action == "cached_or_defer":
            cached = await asyncio.to_thread(
                find_cached, self.store, upload, rendition, operations, self.quality_cap)
            if cached is not None:
                return cached
        if at_level.action != "render" and not forced and self.pool.has_room():
            at_level = plan_for_level("basic", rendition, operations, parse_operation,
                                      quality_cap=self.quality_cap)
        if at_level.action == "original":
            return await asyncio.to_thread(original_as_rendition, upload, source, rendition)
        if at_level.action == "cached_or_defer":
            raise Overloaded(f"service level {level}: no stored output of rendition "
                             f"{rendition.name!r} yet", processor="degrade")
        plan = gate(rendition, at_level.operations, self._decide, parse_operation)
        job = _Job(rendition, tuple(plan.operations), worse_of(at_level.degraded, plan.degraded),
                   tuple(at_level.skipped) + tuple(plan.skipped))
        if attempts > 1:  # an earlier attempt may have stored it before another one failed
            stored = await asyncio.to_thread(
                stored_rendition, self.store, self._key(upload, job), rendition, job.degraded,
                job.skipped)
            if stored is not None:
                return stored
        return job

    async def _run_jobs(
        self, source: Path, jobs: Sequence[_Job], expected_sha256: str | None = None,
    ) -> tuple[list[RenderResult | PixelpipeError], bool]:
        """Render every job: one pool task for all of them (``ImagePool.run_many``); and
        whether that task checked the source against ``expected_sha256`` (it raises
        ``ChecksumMismatch`` for the upload if the source does not match)."""
        outcomes: list[RenderResult | PixelpipeError | None] = [None] * len(jobs)
        checked = False
        to_run: list[int] = []
        for k, job in enumerate(jobs):
            try:
                if self.faults.active:
                    for name in processors_of(job.operations)[:-1]:  # store is checked below
                        self.faults.check(name)
                    for operation in job.operations:
                        self.faults.check(operation.name)
            except PixelpipeError as error:
                outcomes[k] = error
                continue
            to_run.append(k)
        if to_run:
            results: list[RenderResult | PixelpipeError]
            fault = self.faults.process_fault(
                [op.name for k in to_run for op in jobs[k].operations]
            ) if self.faults.active else None
            stages.add("ahead", self.pool.pending)
            try:
                with stages.timed("pool"):
                    if len(to_run) == 1:
                        results = [await self.pool.run(
                            str(source), jobs[to_run[0]].operations, self.limits, fault=fault,
                            expected_sha256=expected_sha256)]
                    else:
                        results = await self.pool.run_many(
                            str(source), [jobs[k].operations for k in to_run], self.limits,
                            fault=fault, expected_sha256=expected_sha256)
                checked = expected_sha256 is not None
            except (OperationalError, ChecksumMismatch):
                raise  # the worker cannot render / the upload's source is not its own
            except PixelpipeError as error:  # the source, a timeout, a dead process: all
                results = [error] * len(to_run)
            for k, result in zip(to_run, results, strict=True):
                outcomes[k] = result
                if isinstance(result, RenderResult):
                    stages.add("render", sum(result.timings_ms.values()))
        return [o if o is not None else InternalError("not rendered") for o in outcomes], checked

    def _key(self, upload: UploadEvent, job: _Job) -> str:
        return output_key(upload.source.sha256, canonical_spec(job.operations), job.degraded)

    async def _store_all(
        self, upload: UploadEvent, rendered: Sequence[tuple[_Job, RenderResult]],
    ) -> list[RenditionResult | PixelpipeError]:
        """Write every rendered output, in **one** thread hop for the upload (each hop costs
        this process more CPU than a small write; ``benchmarks/pipeline/RESULTS.md``): per
        output its stored result or its own error, so one failed write loses no other."""
        writes: list[tuple[str, str, bytes] | PixelpipeError] = []
        for job, result in rendered:
            try:
                self.faults.check("store")
            except PixelpipeError as error:
                writes.append(error)
                continue
            writes.append((self._key(upload, job), output_extension(result.format), result.data))

        def put_all() -> list[tuple[StoredInfo | PixelpipeError, float]]:
            done: list[tuple[StoredInfo | PixelpipeError, float]] = []
            for write in writes:
                if isinstance(write, PixelpipeError):
                    done.append((write, 0.0))
                    continue
                began = time.perf_counter()
                try:
                    done.append((self.store.put_output(*write),
                                 (time.perf_counter() - began) * 1000))
                except PixelpipeError as error:
                    done.append((error, 0.0))
            return done

        written = await asyncio.to_thread(put_all) if rendered else []
        results: list[RenditionResult | PixelpipeError] = []
        for (job, result), (stored, elapsed_ms) in zip(rendered, written, strict=True):
            if isinstance(stored, PixelpipeError):
                await self._report_failure(stored)
                results.append(stored)
                continue
            stages.add("store", elapsed_ms)
            await self.reporter.report("store", ok=True, duration_ms=elapsed_ms)
            results.append(RenditionResult(
                name=job.rendition.name,
                uri=stored.uri,
                sha256=stored.sha256,
                size=stored.size,
                width=result.width,
                height=result.height,
                format=result.format,
                degraded=job.degraded,
                skipped=job.skipped + tuple(result.skipped),
            ))
        return results

    def _decide(self, processor: str) -> str:
        return "allow" if self.breakers is None else self.breakers.decide(processor)

    async def _report_success(self, result: RenderResult) -> None:
        for name, ms in result.timings_ms.items():
            if name in NOT_PROCESSORS:
                continue
            processor = result.format if name == "encode" else name
            await self.reporter.report(processor, ok=True, duration_ms=ms)

    async def _report_failure(self, error: PixelpipeError) -> None:
        if isinstance(error, BreakerOpen) or error.code in INPUT_ERROR_CODES:
            return  # not the processor's fault
        await self.reporter.report(error.processor or "render", ok=False, code=error.code)

    # ----------------------------------------------------------------- failure

    def _failed(
        self, raw: bytes | None, upload: UploadEvent | None, error: PixelpipeError,
        origin: Origin,
    ) -> Failed:
        original = original_of(raw)
        event_id = upload.event_id if upload else _event_id_of(original, origin)
        return Failed(error=error, upload=upload, original=original, event_id=event_id)


def _operations(rendition: RenditionRequest) -> list[str | dict[str, object]] | None:
    return None if rendition.operations is None else list(rendition.operations)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _event_id_of(original: dict[str, object], origin: Origin) -> str:
    """A malformed event's own event_id when it has one, else one derived from where it was
    read (``schemas.malformed_event_id``)."""
    given = _str_or_none(original.get("event_id"))
    if given:
        return given
    return origin.malformed_event_id
