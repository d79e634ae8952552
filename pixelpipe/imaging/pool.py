"""``ImagePool``: renders in a pool of worker processes, with hard timeouts and memory caps.

Why pebble's ``ProcessPool`` and not ``concurrent.futures.ProcessPoolExecutor``: the standard
executor cannot time out a running task (``Future.result(timeout)`` only stops *waiting*,
the process keeps burning CPU), and one child dying marks the whole executor broken
(``BrokenProcessPool``) so every later task fails. pebble kills the process of a task past
its timeout and starts a new one, reports a dead child as ``ProcessExpired`` for that task
only, recycles workers after ``max_tasks``, and is small and maintained.

Every child starts with ``spawn`` (a fork of a parent that runs an event loop and Kafka
client threads can inherit held locks), sets OpenCV's decoder caps in the environment before
``import cv2`` (see :mod:`pixelpipe.imaging._cv`), uses one OpenCV thread, keeps its freed
buffers for the next upload (see :mod:`pixelpipe.imaging.memory`), and caps its address space
(``RLIMIT_AS``) so a runaway allocation fails inside the child.

Error mapping: a task past ``task_timeout_s`` -> ``ProcessingTimeout`` (the process is killed
and replaced); a child that dies (signal, OOM killer) or runs out of memory under its cap ->
``WorkerCrashed``; a :class:`PixelpipeError` raised in the child arrives as the same class
with the same ``processor``; a source without the ``expected_sha256`` a task was given ->
``ChecksumMismatch`` (processor ``fetch``), raised before anything is decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from typing import Any, Final

import pebble

from pixelpipe.errors import (
    ChecksumMismatch,
    InternalError,
    PixelpipeError,
    PoolBroken,
    ProcessingTimeout,
    WorkerCrashed,
)
from pixelpipe.imaging._cv import raise_ceiling
from pixelpipe.imaging.engine import RenderResult
from pixelpipe.imaging.limits import DEFAULT_LIMITS, Limits
from pixelpipe.imaging.spec import Operation

__all__ = ["OUT_OF_MEMORY_EXIT", "PROCESS_FAULTS", "ImagePool"]

#: exit status of a child that ran out of memory under its cap: it leaves rather than keep a
#: heap that may be fragmented or half-initialised, and pebble starts a fresh one
OUT_OF_MEMORY_EXIT: Final = 86


def _default_workers() -> int:
    # the CPUs this process may run on (a container's cpuset), not the host's count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_child(memory_limit_mb: int | None) -> None:
    # Runs first in every child. Importing _cv sets the OpenCV env caps before cv2 loads.
    from pixelpipe.imaging._cv import single_thread
    from pixelpipe.imaging.memory import keep_freed_buffers

    single_thread()
    keep_freed_buffers()  # the next upload reuses this one's pages (see imaging.memory)
    # the parent handles Ctrl-C and shuts the pool down; children must not die mid-task on it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb is not None:
        import resource

        cap = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


#: faults a drill can inject *inside* the image process (``PIXELPIPE_FAULTS``
#: ``resize:crash:1``): what a codec bug, an endless loop or a runaway allocation would do
PROCESS_FAULTS: Final = ("crash", "hang", "oom")


def _misbehave(fault: str | None) -> None:
    if fault is None:
        return
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)  # as a segfault in a decoder would
    elif fault == "hang":
        import time

        time.sleep(24 * 3600)  # never returns in time: only the task timeout ends it
    elif fault == "oom":
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:  # no cap: do not really take 10 GB of the host
            raise MemoryError("injected oom (no address-space cap to hit)")
        hog = bytearray(10 * 1024**3)  # 10 GB: over the address-space cap -> MemoryError
        del hog


def _checked_source(
    source_path: str, limits: Limits, expected_sha256: str | None,
) -> tuple[str | bytes, float]:
    """What the engine renders from: the path, or, when ``expected_sha256`` is given, the
    bytes read once (under the byte cap) and found to have that sha256; and the ms it took.
    A mismatch raises ``ChecksumMismatch`` (processor ``fetch``) before anything is decoded."""
    if expected_sha256 is None:
        return source_path, 0.0
    from pixelpipe.imaging.decode import read_source

    began = time.perf_counter()
    data = read_source(source_path, limits)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ChecksumMismatch.of_source(actual, expected_sha256)
    return data, (time.perf_counter() - began) * 1000.0


def _run_in_child(
    source_path: str, operations: tuple[Operation, ...], limits: Limits,
    fault: str | None = None, expected_sha256: str | None = None,
) -> RenderResult:
    from pixelpipe.imaging.engine import render

    try:
        _misbehave(fault)
        source, checked_ms = _checked_source(source_path, limits, expected_sha256)
        result = render(source, operations, limits)
        _count_as_decode(result, checked_ms)
        return result
    except WorkerCrashed:
        os._exit(OUT_OF_MEMORY_EXIT)  # see OUT_OF_MEMORY_EXIT
    except MemoryError:
        os._exit(OUT_OF_MEMORY_EXIT)


def _run_many_in_child(
    source_path: str, renditions: tuple[tuple[Operation, ...], ...], limits: Limits,
    fault: str | None = None, expected_sha256: str | None = None,
) -> list[RenderResult | PixelpipeError]:
    from pixelpipe.imaging.engine import render_many

    try:
        _misbehave(fault)
        source, checked_ms = _checked_source(source_path, limits, expected_sha256)
        results = render_many(source, renditions, limits)
        first = next((r for r in results if isinstance(r, RenderResult)), None)
        if first is not None:
            _count_as_decode(first, checked_ms)
        return results
    except WorkerCrashed:
        os._exit(OUT_OF_MEMORY_EXIT)
    except MemoryError:
        os._exit(OUT_OF_MEMORY_EXIT)


def _count_as_decode(result: RenderResult, checked_ms: float) -> None:
    # reading the source was always part of ``decode``; checking its sha256 on the way is too
    if checked_ms:
        result.timings_ms["decode"] = result.timings_ms.get("decode", 0.0) + checked_ms


class ImagePool:
    """A pool of render processes.

    ``workers``: processes (default: the CPUs this process may use). ``task_timeout_s``
    (default 60): hard limit per task, past it the process is killed. ``max_tasks_per_child``
    (default 10,000; 0: never): a process is replaced after that many tasks, a backstop
    against a slow leak. Not more often: a replacement renders nothing for its spawn and
    ``import cv2`` (0.2-0.3 s), and the uploads queued behind it wait (issue 15: at the old
    200, both processes were replaced every ~10 s at 70 % load; a process's RSS stays flat
    over 600 renders of the sample photos). ``memory_limit_mb`` (default 2048, ``None`` for
    no cap): address-space cap per process.
    """

    def __init__(
        self,
        workers: int | None = None,
        task_timeout_s: float = 60,
        max_tasks_per_child: int = 10_000,
        memory_limit_mb: int | None = 2048,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """``limits``: the largest limits tasks will be given; OpenCV's own decoder ceiling in
        the children is raised to let them through (it is read once, at ``import cv2``)."""
        if task_timeout_s <= 0:
            raise ValueError("task_timeout_s must be positive")
        if max_tasks_per_child < 0:
            raise ValueError("max_tasks_per_child must not be negative")
        raise_ceiling(limits)
        #: renders submitted through ``run`` and not finished (running or queued): the
        #: worker's pool-saturation signal
        self.pending = 0
        #: image processes replaced after a timeout kill or a death (heartbeats report it)
        self.restarts = 0
        self.workers = workers or _default_workers()
        self.task_timeout_s = task_timeout_s
        #: times pebble's pool broke and was replaced (see ``submit``)
        self.rebuilds = 0
        self._options: dict[str, Any] = {
            "max_workers": self.workers, "max_tasks": max_tasks_per_child,
            "initializer": _init_child, "initargs": (memory_limit_mb,),
            "context": multiprocessing.get_context("spawn"),
        }
        self._pool = pebble.ProcessPool(**self._options)
        self._broken_at: float | None = None
        self._closed = False

    def has_room(self) -> bool:
        """Whether a render submitted now would start within about one render: fewer than
        two renders per process are running or queued (one queued each keeps a process busy
        across the gap before the next submission)."""
        return self.pending < 2 * self.workers

    def submit(
        self,
        source_path: str,
        operations: Sequence[Operation],
        limits: Limits = DEFAULT_LIMITS,
        fault: str | None = None,
        expected_sha256: str | None = None,
    ) -> concurrent.futures.Future[RenderResult]:
        """Schedule a render; the returned future raises pebble's raw errors (see :meth:`run`).
        ``fault``: one of ``PROCESS_FAULTS``, for drills."""
        # the child opens the file itself, so megabytes of source never cross a pipe
        future: concurrent.futures.Future[RenderResult] = self._schedule(
            _run_in_child,
            (os.fspath(source_path), tuple(operations), limits, fault, expected_sha256),
            self.task_timeout_s)
        return future

    def _schedule(self, function: Any, args: tuple[Any, ...], timeout: float) -> Any:
        if self._closed:
            raise InternalError("image pool is closed", processor="pool")
        try:
            return self._pool.schedule(function, args=args, timeout=timeout)
        except RuntimeError as exc:
            # pebble's pool manager died (e.g. a replacement process could not even start:
            # seen when the package was reinstalled under a running worker). Every later
            # schedule would fail the same way, so each upload would be dead-lettered as an
            # internal error: replace the pool once; if it breaks again soon, stop the worker.
            self._rebuild(exc)
            try:
                return self._pool.schedule(function, args=args, timeout=timeout)
            except RuntimeError as again:
                raise PoolBroken(f"image pool broken again right after a rebuild: {again}",
                                 processor="pool") from again

    def _rebuild(self, cause: BaseException) -> None:
        import logging
        import time

        now = time.monotonic()
        if self._broken_at is not None and now - self._broken_at < 60.0:
            raise PoolBroken(f"image pool broke twice within 60 s ({cause}); stopping",
                             processor="pool") from cause
        self._broken_at = now
        logging.getLogger(__name__).error(
            "image pool broken (%s); replacing it with a new one", cause)
        with contextlib.suppress(Exception):
            self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool = pebble.ProcessPool(**self._options)
        self.rebuilds += 1

    async def run(
        self,
        source_path: str,
        operations: Sequence[Operation],
        limits: Limits = DEFAULT_LIMITS,
        fault: str | None = None,
        expected_sha256: str | None = None,
    ) -> RenderResult:
        """Render in a worker process; raises only :class:`PixelpipeError` subclasses.

        ``expected_sha256``: the image process reads the source once and checks it has this
        sha256 before decoding (``ChecksumMismatch`` otherwise), so the bytes rendered are the
        bytes checked and the file is read once. Cancelling the awaiting task cancels the
        render (pebble stops its process).
        """
        result: RenderResult = await self._await(
            self.submit(source_path, operations, limits, fault, expected_sha256),
            self.task_timeout_s)
        return result

    async def run_many(
        self,
        source_path: str,
        renditions: Sequence[Sequence[Operation]],
        limits: Limits = DEFAULT_LIMITS,
        fault: str | None = None,
        expected_sha256: str | None = None,
    ) -> list[RenderResult | PixelpipeError]:
        """Every rendition of one upload in one task from one decode (``engine.render_many``):
        one result or error per rendition. The timeout grows with the renditions; a source
        that cannot be decoded or does not have ``expected_sha256`` (see :meth:`run`), a
        timeout or a dead process raise for them all."""
        timeout = self.task_timeout_s * max(1, len(renditions))
        args = (os.fspath(source_path), tuple(tuple(ops) for ops in renditions), limits, fault,
                expected_sha256)
        results: list[RenderResult | PixelpipeError] = await self._await(
            self._schedule(_run_many_in_child, args, timeout), timeout)
        return results

    async def _await(self, future: Any, timeout: float) -> Any:
        self.pending += 1
        try:
            return await asyncio.wrap_future(future)
        except PixelpipeError:
            raise
        except (TimeoutError, concurrent.futures.TimeoutError) as exc:
            self.restarts += 1
            raise ProcessingTimeout(
                f"render took longer than {timeout:g} s; worker killed",
                processor="pool",
            ) from exc
        except pebble.ProcessExpired as exc:
            self.restarts += 1
            raise WorkerCrashed(_death_reason(exc), processor="pool") from exc
        except MemoryError as exc:
            raise WorkerCrashed("worker ran out of memory", processor="pool") from exc
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            raise InternalError(f"pool: {type(exc).__name__}: {exc}", processor="pool") from exc
        finally:
            self.pending -= 1

    async def warm_up(self) -> None:
        """Start the processes now (spawn, initializer, ``import cv2``: about a second each),
        so the first uploads do not pay for it. pebble starts them on the first schedule."""
        futures = [self._pool.schedule(os.getpid) for _ in range(self.workers)]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, let running tasks finish for up to ``timeout`` seconds
        (default: the task timeout), then stop the workers."""
        if self._closed:
            return
        self._closed = True
        # pebble is untyped
        self._pool.close()  # type: ignore[no-untyped-call]
        try:
            self._pool.join(timeout if timeout is not None else self.task_timeout_s)
        except TimeoutError:
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join()

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> ImagePool:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


def _death_reason(exc: pebble.ProcessExpired) -> str:
    code = getattr(exc, "exitcode", None)
    if code == OUT_OF_MEMORY_EXIT:
        return "worker ran out of memory (address-space cap) and was replaced"
    if isinstance(code, int) and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker killed by {name} (OOM killer?) and replaced"
    return f"worker died (exit status {code}) and was replaced"
