"""Latency under load (issue 15): open-loop Poisson arrivals at 30/50/70/90 % of capacity.

One real ``pixelpipe worker`` subprocess (``--image-processes`` image processes, default the
machine's cores, as the worker's own default) on a real broker, with
``PIXELPIPE_DEGRADE=off`` everywhere, so the degradation ladder never changes the service:

1. bare: the same renditions of the same photographs rendered in this process on one core
   (``pixelpipe.imaging.engine.render``, or ``render_many`` for ``--renditions three``), no
   Kafka, no store, no hashing: median and p99 per render (the processing-time floor).
2. capacity: a backlog of ``--capacity-uploads`` uploads waits for a fresh worker;
   completed/s between its first and last processed event (skipped with ``--capacity``).
3. each load in ``--loads``: a fresh ``PipelineEnv`` (topic prefix, group, store) and a fresh
   worker, a warm-up outside the clock, then an **open-loop Poisson** arrival process at
   ``load x capacity`` uploads/s for ``--seconds``: exponential inter-arrival times from a
   seeded RNG, each upload published at its scheduled instant whether or not earlier ones were
   acknowledged or processed; then a bounded wait for every upload's outcome.

Measured from outside the worker: ``submitted_at`` of each upload -> ``completed_at`` of its
processed event (wall-clock ISO times with milliseconds, same machine) p50/p95/p99/max, and
the instant an outside consumer saw the processed event (so the outcome send shows too); the
achieved arrival rate and the generator's lag behind its schedule; completed/s inside the
window; the worker's ``processing_ms``; CPU per completed upload of the worker's main process
(psutil user+sys of that process only, not its image processes; raw and net of its idle rate
measured just before the window), of its image processes, and of this load generator (which
shares the machine); peak RSS of the worker and its children. Sources and outputs of settled
uploads are deleted as their outcomes are read, and each load's data dir after it.

Uploads: the photographs of ``../shared/data/photos`` in turn, each made unique (a JPEG comment
with its number: same pixels, new sha256), with one rendition (800 px JPEG q85) or, with
``--renditions three``, three (200 px JPEG q80, 800 px WebP q80, 1600 px JPEG q85).

Sources (``--sources``): ``staged`` (the default) writes every source of a load into the store
before its warm-up, and the generator then only publishes each upload event at its instant
(``Publisher.publish_stored``), as a service that stored the file earlier, on its own machine,
would. ``inline`` stores each source at its instant (``publish_bytes``: build the unique copy,
sha256 it, write and fsync it, then publish), so that work shares the worker's two cores
during the window; runs before 2026-12-01 16:00 UTC used ``inline``.

Goal (issue 15), at 70 % load: p99 (submitted -> completed) <= 2 x bare p99 + 100 ms.

Usage (needs a broker; ``infra/kafka.sh up`` starts one on 127.0.0.1:9092; an otherwise idle
machine, since the load generator, the worker and the bare loop share its cores):

    .venv/bin/python benchmarks/latency/bench_latency.py --bootstrap 127.0.0.1:9092 \
        --seconds 120 --out benchmarks/latency/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks" / "degradation"))

import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402
from harness import PipelineEnv, WorkerProcess  # noqa: E402
from images import PHOTOS  # noqa: E402
from load import Outcomes, RssSampler, percentile, unique_jpeg, wait_settled  # noqa: E402

from pixelpipe.schemas import decode_processed  # noqa: E402
from pixelpipe.schemas.times import parse_time  # noqa: E402
from pixelpipe.storage.local import LocalBlobStore, StoredBlob  # noqa: E402
from pixelpipe.streams.client import Publisher  # noqa: E402
from pixelpipe.streams.topics import dlq_topic, processed_topic  # noqa: E402

#: (name, long side, format, quality) of each rendition of one upload
RENDITION_SETS: dict[str, tuple[tuple[str, int, str, int], ...]] = {
    "one": (("web", 800, "jpeg", 85),),
    "three": (("small", 200, "jpeg", 80), ("web", 800, "webp", 80), ("large", 1600, "jpeg", 85)),
}
DESCRIBE = {
    "one": "one rendition: `resize:width=800,height=800`, `format:type=jpeg,quality=85`",
    "three": "three renditions: 200 px JPEG q80, 800 px WebP q80, 1600 px JPEG q85 "
             "(`resize:width=N,height=N` + `format:type=...,quality=...` each)",
}


def operations(side: int, fmt: str, quality: int) -> list[str]:
    return [f"resize:width={side},height={side}", f"format:type={fmt},quality={quality}"]


def rendition_requests(kind: str) -> list[dict[str, Any]]:
    return [{"name": name, "operations": operations(side, fmt, q)}
            for name, side, fmt, q in RENDITION_SETS[kind]]


def ms(seconds: float) -> float:
    return seconds * 1000.0


# --------------------------------------------------------------------------- bare processing


@dataclass
class Bare:
    renders: int = 0
    how: str = ""
    median_ms: float = math.nan
    p99_ms: float = math.nan
    per_photo: dict[str, float] = field(default_factory=dict)  # name -> median ms
    #: p99 of the measurements before and after the loads (this one has the lower)
    p99s_ms: tuple[float, ...] = ()


def measure_bare(paths: list[Path], kind: str, rounds: int) -> Bare:
    """Each photo rendered ``rounds`` times in this process on one OpenCV thread, with the
    malloc settings of the pool's image processes where the tree has them."""
    from pixelpipe.imaging import parse_operations, render
    from pixelpipe.imaging._cv import single_thread

    single_thread()
    try:
        from pixelpipe.imaging.memory import keep_freed_buffers
    except ImportError:  # a tree from before it: its image processes ran without it too
        pass
    else:
        keep_freed_buffers()
    ops = [parse_operations(operations(side, fmt, q)) for _n, side, fmt, q in RENDITION_SETS[kind]]
    bare = Bare()
    if len(ops) == 1:
        def job(path: str) -> None:
            render(path, ops[0])

        bare.how = "`engine.render`"
    else:
        try:
            from pixelpipe.imaging.engine import RenderResult, render_many
        except ImportError:  # a tree without decode-once: what the worker would do instead
            def job(path: str) -> None:
                for one in ops:
                    render(path, one)

            bare.how = "`engine.render` x3 (no `render_many` in this tree)"
        else:
            def job(path: str) -> None:
                out = render_many(path, ops)
                assert all(isinstance(r, RenderResult) for r in out), out

            bare.how = "`engine.render_many` (one call, three renditions)"
    for path in paths:  # warm: imports, codec tables, page cache
        job(str(path))
    times: dict[str, list[float]] = {p.name: [] for p in paths}
    for _ in range(rounds):
        for path in paths:
            began = time.perf_counter()
            job(str(path))
            times[path.name].append(ms(time.perf_counter() - began))
    every = [t for ts in times.values() for t in ts]
    bare.renders = len(every)
    bare.median_ms = statistics.median(every)
    bare.p99_ms = percentile(every, 0.99)
    bare.per_photo = {name: statistics.median(ts) for name, ts in times.items()}
    return bare


# --------------------------------------------------------------------------- observation


@dataclass
class Seen:
    """Outcomes (``load.Outcomes``: first processed event / dead letter per id, blob reclaim)
    and the wall-clock instant this process first read each processed event."""

    outcomes: Outcomes
    at: dict[str, float] = field(default_factory=dict)


async def follow(pipeline: PipelineEnv, seen: Seen, stop: asyncio.Event) -> None:
    outcomes = seen.outcomes
    processed, dead = processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)
    consumer = AIOKafkaConsumer(
        processed, dead, bootstrap_servers=pipeline.bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for record in records:
                    if record.topic == processed:
                        event = decode_processed(record.value)
                        if event.event_id not in outcomes.processed:
                            outcomes.processed[event.event_id] = event
                            seen.at[event.event_id] = now
                        outcomes._reclaim(event.event_id, [r.uri for r in event.renditions])
                    else:
                        event_id = str(orjson.loads(record.value).get("event_id"))
                        outcomes.dead.setdefault(event_id, {})
                        outcomes._reclaim(event_id, [])
    finally:
        await consumer.stop()


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds (user+sys) of the worker's main process, of its image processes (children
    alive at both readings, by pid), and of this process."""

    def __init__(self, pid: int) -> None:
        self.worker = psutil.Process(pid)
        self.me = psutil.Process()

    def read(self) -> tuple[float, dict[int, float], float]:
        kids: dict[int, float] = {}
        for child in self.worker.children(recursive=True):
            try:
                kids[child.pid] = cpu_s(child)
            except psutil.NoSuchProcess:
                continue
        return cpu_s(self.worker), kids, cpu_s(self.me)

    @staticmethod
    def delta(a: tuple[float, dict[int, float], float], b: tuple[float, dict[int, float], float],
              ) -> tuple[float, float, float]:
        kids = sum(b[1][pid] - a[1][pid] for pid in a[1] if pid in b[1])
        return b[0] - a[0], kids, b[2] - a[2]


class ProcessStarts(threading.Thread):
    """The worker's child processes (its image processes), sampled every 0.2 s: each pid with
    its start time, so image processes started during a load (recycled or replaced) show."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.started, self._halt = pid, dict[int, float](), threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                children = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                if child.pid not in self.started:
                    with contextlib.suppress(psutil.Error):
                        self.started[child.pid] = child.create_time()
            self._halt.wait(0.2)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(5)
        return sorted(self.started.values())


#: the worker's ``processed`` log line ends with its stage figures (``agents.stages``)
PROCESSED_LINE = re.compile(r"processed (\S+) \(image .*? in [0-9.]+ ms \((.*)\)\s*$")
#: stages shown for the slowest uploads, in the order of the upload's path
STAGES = ("kafka", "handoff", "source", "queue", "render", "store", "rest", "ack")


def stage_figures(log: str) -> dict[str, dict[str, float]]:
    """event id -> its stage figures (ms; ``queue`` = ``pool`` - ``render``: waiting for an
    image process, and the trip there and back) from a worker log; empty for a worker that
    logs no stages (a tree before they were added)."""
    out: dict[str, dict[str, float]] = {}
    for line in log.splitlines():
        match = PROCESSED_LINE.search(line)
        if match is None or match.group(1) in out:
            continue
        figures: dict[str, float] = {}
        for item in match.group(2).split(", "):
            name, _, value = item.rpartition(" ")
            with contextlib.suppress(ValueError):
                figures[name] = float(value)
        if "pool" in figures:
            figures["queue"] = figures["pool"] - figures.get("render", 0.0)
        out[match.group(1)] = figures
    return out


# --------------------------------------------------------------------------- load


def poisson_schedule(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Arrival offsets (s) of a Poisson process of ``rate``/s over ``[0, seconds)``."""
    times, t = [], rng.expovariate(rate)
    while t < seconds:
        times.append(t)
        t += rng.expovariate(rate)
    return times


@dataclass
class Arrivals:
    ids: list[str] = field(default_factory=list)
    scheduled: dict[str, float] = field(default_factory=dict)  # id -> wall clock (s)
    submitted: dict[str, float] = field(default_factory=dict)  # id -> submitted_at (s)
    began: float = 0.0
    ended: float = 0.0


def stage_sources(store: LocalBlobStore, photos: list[bytes], count: int,
                  tag: str) -> list[StoredBlob]:
    """The sources of ``count`` uploads, written (and fsynced) into the store up front."""
    return [store.put_source(unique_jpeg(photos[i % len(photos)], f"{tag}-{i}"))
            for i in range(count)]


async def publish_poisson(publisher: Publisher, store: LocalBlobStore, photos: list[bytes],
                          requests: list[dict[str, Any]], schedule: list[float], seconds: float,
                          tag: str, sources: dict[str, Path],
                          staged: list[StoredBlob] | None = None) -> Arrivals:
    """Publish one upload at each instant of ``schedule`` (offsets from now), never waiting
    for an earlier one's acknowledgement or outcome (open loop). With ``staged`` (one stored
    source per instant) only the upload event is published then; else the source is stored
    at its instant too."""
    arrivals = Arrivals()

    async def one(i: int, due: float) -> None:
        if staged is not None:
            upload = await publisher.publish_stored(staged[i], requests, image_id=f"{tag}-{i}")
        else:
            data = unique_jpeg(photos[i % len(photos)], f"{tag}-{i}")
            upload = await publisher.publish_bytes(data, requests, image_id=f"{tag}-{i}")
        event_id = upload.event_id
        sources[event_id] = store.resolve(upload.event.source.uri)
        arrivals.ids.append(event_id)
        arrivals.scheduled[event_id] = due
        arrivals.submitted[event_id] = parse_time(upload.event.submitted_at).timestamp()

    arrivals.began = time.time()
    origin = time.monotonic()
    tasks = []
    for i, offset in enumerate(schedule):
        delay = origin + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, arrivals.began + offset)))
    await asyncio.gather(*tasks)
    arrivals.ended = max(time.time(), arrivals.began + seconds)
    return arrivals


async def warm_up(publisher: Publisher, seen: Seen, photos: list[bytes],
                  requests: list[dict[str, Any]], count: int, tag: str) -> None:
    """A few uploads end to end outside the clock: pool, connections and metadata warm."""
    ids = []
    for i in range(count):
        data = unique_jpeg(photos[i % len(photos)], f"{tag}-warm-{i}")
        ids.append((await publisher.publish_bytes(data, requests)).event_id)
    await wait_settled(seen.outcomes, ids, 300, print)
    if seen.outcomes.settled(ids) < len(ids):
        raise SystemExit(f"{tag}: warm-up uploads not settled in 300 s")


def measure_capacity(bootstrap: str, root: Path, photos: list[bytes],
                     requests: list[dict[str, Any]], count: int, processes: int) -> float:
    pipeline = PipelineEnv(bootstrap=bootstrap, root=root / "capacity", workers=processes)
    pipeline.root.mkdir(parents=True)
    sources: dict[str, Path] = {}
    store = LocalBlobStore(pipeline.data_dir)

    async def backlog() -> list[str]:
        ids = []
        async with Publisher(pipeline.settings()) as publisher:
            for i in range(count):
                data = unique_jpeg(photos[i % len(photos)], f"cap-{i}")
                upload = await publisher.publish_bytes(data, requests)
                sources[upload.event_id] = store.resolve(upload.event.source.uri)
                ids.append(upload.event_id)
        return ids

    ids = asyncio.run(backlog())
    worker = pipeline.start_worker("capacity", PIXELPIPE_DEGRADE="off")
    try:
        async def collect() -> Outcomes:
            seen, stop = Seen(Outcomes(reclaim=sources, store=store)), asyncio.Event()
            task = asyncio.create_task(follow(pipeline, seen, stop))
            await wait_settled(seen.outcomes, ids, 900, print)
            stop.set()
            await task
            return seen.outcomes

        outcomes = asyncio.run(collect())
    finally:
        worker.stop()
        shutil.rmtree(pipeline.data_dir, ignore_errors=True)
    if outcomes.dead or len(outcomes.processed) < len(ids):
        raise SystemExit(f"capacity run incomplete: {len(outcomes.processed)} processed, "
                         f"{len(outcomes.dead)} dead-lettered of {len(ids)}")
    done = sorted(parse_time(e.completed_at).timestamp() for e in outcomes.processed.values())
    return (len(done) - 1) / (done[-1] - done[0])


@dataclass
class Result:
    load: float
    offered: float
    seconds: float
    published: int = 0
    window_s: float = 0.0
    lag_p99_ms: float = math.nan
    lag_max_ms: float = math.nan
    completed_in_window: int = 0
    latency_ms: list[float] = field(default_factory=list)  # submitted -> completed
    seen_ms: list[float] = field(default_factory=list)  # submitted -> read by a consumer
    processing_ms: list[float] = field(default_factory=list)
    completed: int = 0
    dead: int = 0
    lost: int = 0
    drain_s: float = 0.0
    worker_cpu_ms: float = math.nan  # per completed upload, main process
    worker_cpu_net_ms: float = math.nan  # the same, less its idle rate over the span
    idle_cpu_ms_per_s: float = math.nan
    image_cpu_ms: float = math.nan  # per completed upload, the image processes
    generator_cpu_ms: float = math.nan  # per completed upload, this process
    peak_rss: int = 0
    #: image processes started after the warm-up (recycled or replaced ones)
    process_starts: int = 0
    #: mean stage figures (ms) of all uploads and of the slowest 1 % (submitted -> completed)
    stages_all: dict[str, float] = field(default_factory=dict)
    stages_slow: dict[str, float] = field(default_factory=dict)
    #: of the slowest 1 %, how many completed within 1 s after an image process started
    slow_after_start: int = 0
    slow_count: int = 0


def run_load(bootstrap: str, root: Path, photos: list[bytes], requests: list[dict[str, Any]],
             load: float, capacity: float, seconds: float, processes: int, seed: int,
             drain_timeout: float, idle_s: float, staged_sources: bool = True) -> Result:
    name = f"load-{round(load * 100)}"
    result = Result(load=load, offered=load * capacity, seconds=seconds)
    schedule = poisson_schedule(result.offered, seconds, random.Random(seed))
    pipeline = PipelineEnv(bootstrap=bootstrap, root=root / name, workers=processes)
    pipeline.root.mkdir(parents=True)
    worker: WorkerProcess = pipeline.start_worker(name, PIXELPIPE_DEGRADE="off")
    sampler = RssSampler(worker.process.pid)
    sampler.start()
    starts = ProcessStarts(worker.process.pid)
    starts.start()
    meter = CpuMeter(worker.process.pid)
    try:
        async def drive() -> tuple[Arrivals, Seen, tuple[float, float, float], float, float]:
            sources: dict[str, Path] = {}
            store = LocalBlobStore(pipeline.data_dir)
            seen = Seen(Outcomes(reclaim=sources, store=store))
            stop = asyncio.Event()
            task = asyncio.create_task(follow(pipeline, seen, stop))
            staged = (await asyncio.to_thread(stage_sources, store, photos, len(schedule), name)
                      if staged_sources else None)
            async with Publisher(pipeline.settings()) as publisher:
                await warm_up(publisher, seen, photos, requests, 2 * processes, name)
                idle0, idle_t0 = meter.read(), time.monotonic()
                await asyncio.sleep(idle_s)
                before, t0 = meter.read(), time.monotonic()
                idle_rate = (before[0] - idle0[0]) / (t0 - idle_t0)
                arrivals = await publish_poisson(publisher, store, photos, requests, schedule,
                                                 seconds, name, sources, staged)
            drained = await wait_settled(seen.outcomes, arrivals.ids, drain_timeout, print)
            after, t1 = meter.read(), time.monotonic()
            await asyncio.sleep(1.0)  # duplicates and stragglers
            stop.set()
            await task
            worker_s, kids_s, me_s = CpuMeter.delta(before, after)
            result.idle_cpu_ms_per_s = ms(idle_rate)
            net = worker_s - idle_rate * (t1 - t0)
            return arrivals, seen, (worker_s, kids_s, me_s), net, drained

        arrivals, seen, (worker_s, kids_s, me_s), net_s, result.drain_s = asyncio.run(drive())
    finally:
        result.peak_rss = sampler.stop()
        started = starts.stop()
        worker.stop()
        figures = stage_figures(worker.log())
        shutil.rmtree(pipeline.data_dir, ignore_errors=True)  # a load's blobs
    outcomes = seen.outcomes
    ids = arrivals.ids
    result.published = len(ids)
    result.window_s = arrivals.ended - arrivals.began
    lags = [ms(arrivals.submitted[i] - arrivals.scheduled[i]) for i in ids]
    result.lag_p99_ms, result.lag_max_ms = percentile(lags, 0.99), max(lags, default=math.nan)
    events = [outcomes.processed[i] for i in ids if i in outcomes.processed]
    result.completed = len(events)
    for event in events:
        done = parse_time(event.completed_at).timestamp()
        result.latency_ms.append(ms(done - arrivals.submitted[event.event_id]))
        result.seen_ms.append(ms(seen.at[event.event_id] - arrivals.submitted[event.event_id]))
        result.processing_ms.append(event.processing_ms)
        if arrivals.began <= done <= arrivals.ended:
            result.completed_in_window += 1
    describe_tail(result, events, arrivals, figures, started)
    result.dead = sum(1 for i in ids if i in outcomes.dead)
    result.lost = sum(1 for i in ids if i not in outcomes.processed and i not in outcomes.dead)
    if result.completed:
        result.worker_cpu_ms = ms(worker_s) / result.completed
        result.worker_cpu_net_ms = ms(net_s) / result.completed
        result.image_cpu_ms = ms(kids_s) / result.completed
        result.generator_cpu_ms = ms(me_s) / result.completed
    return result


def describe_tail(result: Result, events: list[Any], arrivals: Arrivals,
                  figures: dict[str, dict[str, float]], started: list[float]) -> None:
    """Where the time of all uploads and of the slowest 1 % went (the worker's stage figures),
    and how many of the slowest completed within 1 s after an image process started."""
    restarts = [t for t in started if t >= arrivals.began - 1.0]
    result.process_starts = len(restarts)
    timed = [(parse_time(e.completed_at).timestamp() - arrivals.submitted[e.event_id], e)
             for e in events if e.event_id in figures]
    if not timed:
        return
    timed.sort(key=lambda pair: pair[0])
    slow = timed[min(len(timed) - 1, int(0.99 * len(timed))):]

    def means(pairs: list[tuple[float, Any]]) -> dict[str, float]:
        return {name: statistics.fmean(figures[e.event_id].get(name, 0.0) for _, e in pairs)
                for name in STAGES}

    result.stages_all, result.stages_slow = means(timed), means(slow)
    result.slow_count = len(slow)
    result.slow_after_start = sum(
        1 for _, e in slow
        if any(0.0 <= parse_time(e.completed_at).timestamp() - t <= 1.0 for t in restarts))


# --------------------------------------------------------------------------- report


def f0(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def f1(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def print_bare(when: str, bare: Bare) -> None:
    print(f"bare {when} ({bare.how}, one core, {bare.renders} renders): median "
          f"{bare.median_ms:.1f} ms, p99 {bare.p99_ms:.1f} ms; per photo "
          + ", ".join(f"{k} {v:.1f}" for k, v in bare.per_photo.items()), flush=True)


def goal_verdict(results: list[Result], bare: Bare) -> tuple[str, str]:
    """(PASS/MISS/not measured, the sentence) for the 70 % load."""
    limit = 2 * bare.p99_ms + 100
    at70 = [r for r in results if abs(r.load - 0.7) < 1e-9]
    if not at70:
        return "not measured", "70 % is not among `--loads`"
    r = at70[0]
    p99 = percentile(r.latency_ms, 0.99)
    seen = percentile(r.seen_ms, 0.99)
    verdict = "PASS" if p99 <= limit and not r.lost else "MISS"
    return verdict, (f"p99 {p99:.0f} ms vs 2 x {bare.p99_ms:.1f} + 100 = {limit:.0f} ms"
                     f"{f', {r.lost} upload(s) lost' if r.lost else ''}; seen by a consumer: "
                     f"p99 {seen:.0f} ms ({'within' if seen <= limit else 'over'} the limit)")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{model}, {psutil.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} "
            f"{platform.release()}, {platform.python_implementation()} {platform.python_version()}")


def revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}{' with uncommitted changes' if dirty else ''}"


def table(results: list[Result]) -> str:
    rows = [
        "| load | offered /s | achieved /s | generator lag p99 / max ms | completed /s in window "
        "| p50 ms | p95 ms | p99 ms | max ms | seen p99 ms | processing_ms p50 / p99 "
        "| worker CPU ms/upload (net of idle) | image processes CPU ms/upload "
        "| generator CPU ms/upload | peak RSS MiB | uploads | dead | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat, pr = r.latency_ms, r.processing_ms
        rows.append(
            f"| {r.load:.0%} | {r.offered:.2f} | {r.published / r.seconds:.2f} "
            f"| {f0(r.lag_p99_ms)} / {f0(r.lag_max_ms)} "
            f"| {r.completed_in_window / r.window_s:.2f} "
            f"| {f0(percentile(lat, 0.5))} | {f0(percentile(lat, 0.95))} "
            f"| {f0(percentile(lat, 0.99))} | {f0(max(lat, default=math.nan))} "
            f"| {f0(percentile(r.seen_ms, 0.99))} "
            f"| {f0(percentile(pr, 0.5))} / {f0(percentile(pr, 0.99))} "
            f"| {f1(r.worker_cpu_ms)} ({f1(r.worker_cpu_net_ms)}) | {f1(r.image_cpu_ms)} "
            f"| {f1(r.generator_cpu_ms)} | {r.peak_rss / 2**20:.0f} | {r.published} "
            f"| {r.dead} | {r.lost} |")
    return "\n".join(rows)


def stage_table(results: list[Result]) -> str:
    """Mean stage figures of all uploads and of the slowest 1 % of each load."""
    if not any(r.stages_all for r in results):
        return "(no stage figures in the worker log)"
    rows = [
        "| load | uploads | " + " | ".join(f"{name} ms" for name in STAGES)
        + " | image processes started | slowest within 1 s after a start |",
        "|---|---|" + "---|" * len(STAGES) + "---|---|",
    ]
    for r in results:
        for label, stages, count in (("all", r.stages_all, r.completed),
                                     ("slowest 1 %", r.stages_slow, r.slow_count)):
            if not stages:
                continue
            tail = (f"| {r.process_starts} | {r.slow_after_start} of {r.slow_count} |"
                    if label != "all" else "| | |")
            rows.append(f"| {r.load:.0%} | {label} ({count}) | "
                        + " | ".join(f"{stages[name]:.1f}" for name in STAGES) + " " + tail)
    return "\n".join(rows)


def summary(r: Result) -> str:
    lat = r.latency_ms
    return (f"  achieved {r.published / r.seconds:.2f}/s ({r.published} uploads), completed in "
            f"window {r.completed_in_window / r.window_s:.2f}/s, latency p50/p95/p99/max "
            f"{f0(percentile(lat, 0.5))}/{f0(percentile(lat, 0.95))}/"
            f"{f0(percentile(lat, 0.99))}/{f0(max(lat, default=math.nan))} ms, seen p99 "
            f"{f0(percentile(r.seen_ms, 0.99))} ms, processing_ms p50/p99 "
            f"{f0(percentile(r.processing_ms, 0.5))}/{f0(percentile(r.processing_ms, 0.99))}, "
            f"generator lag p99 {f0(r.lag_p99_ms)} ms, worker CPU {f1(r.worker_cpu_ms)} ms/upload "
            f"(net {f1(r.worker_cpu_net_ms)}, idle {f1(r.idle_cpu_ms_per_s)} ms/s), image "
            f"processes {f1(r.image_cpu_ms)}, generator {f1(r.generator_cpu_ms)} ms/upload, "
            f"rss {r.peak_rss / 2**20:.0f} MiB, dead {r.dead}, lost {r.lost}, drain "
            f"{r.drain_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=120.0, help="load window per load")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.9",
                        help="comma-separated fractions of capacity")
    parser.add_argument("--capacity", type=float, default=None,
                        help="skip the capacity run and use this (uploads/s)")
    parser.add_argument("--capacity-uploads", type=int, default=200,
                        help="backlog published to measure capacity")
    parser.add_argument("--renditions", choices=sorted(RENDITION_SETS), default="one")
    parser.add_argument("--image-processes", type=int, default=max(1, os.cpu_count() or 1),
                        help="PIXELPIPE_WORKERS of the worker (default: the cores, as the "
                             "worker's own default)")
    parser.add_argument("--bare-rounds", type=int, default=40,
                        help="in-process renders of each photo for the bare processing time")
    parser.add_argument("--seed", type=int, default=15, help="seed of the arrival processes")
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="idle window before each load for the worker's idle CPU rate")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="longest wait for every outcome after a load window")
    parser.add_argument("--sources", choices=("staged", "inline"), default="staged",
                        help="store the sources before each load (staged) or at each "
                             "upload's instant (inline); see the module docstring")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the results (markdown) here; nothing is written without it")
    args = parser.parse_args()
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    paths = sorted(PHOTOS.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no photos in {PHOTOS}")
    photos = [p.read_bytes() for p in paths]
    requests = rendition_requests(args.renditions)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_avg = os.getloadavg()
    print(f"{started}; load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} "
          f"on {psutil.cpu_count()} cores", flush=True)

    first_bare = measure_bare(paths, args.renditions, args.bare_rounds)
    print_bare("before the loads", first_bare)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pixelpipe-latency-") as tmp:
        root = Path(tmp)
        if args.capacity:
            capacity = args.capacity
            print(f"capacity (given): {capacity:.2f} uploads/s", flush=True)
        else:
            capacity = measure_capacity(args.bootstrap, root, photos, requests,
                                        args.capacity_uploads, args.image_processes)
            print(f"capacity: {capacity:.2f} uploads/s", flush=True)
        for n, load in enumerate(loads):
            print(f"load {load:.0%}: Poisson at {load * capacity:.2f} uploads/s for "
                  f"{args.seconds:g} s", flush=True)
            result = run_load(args.bootstrap, root, photos, requests, load, capacity,
                              args.seconds, args.image_processes, args.seed + n,
                              args.drain_timeout, args.idle_seconds,
                              staged_sources=args.sources == "staged")
            results.append(result)
            print(summary(result), flush=True)

    # measured again after the loads: one stray pause (p99 of 80 renders is about their
    # slowest) must not loosen the goal, so it is judged against the lower of the two p99s
    second_bare = measure_bare(paths, args.renditions, args.bare_rounds)
    print_bare("after the loads", second_bare)
    bare = min(first_bare, second_bare, key=lambda b: b.p99_ms)
    bare.p99s_ms = (first_bare.p99_ms, second_bare.p99_ms)
    verdict, why = goal_verdict(results, bare)
    print(f"goal at 70 % (p99 <= 2 x bare p99 + 100 ms): {verdict}: {why}", flush=True)
    print(table(results))
    print(stage_table(results))
    if args.out:
        write_report(args, results, bare, capacity, verdict, why, started, load_avg)
        print(f"wrote {args.out}")
    return 1 if any(r.lost for r in results) else 0


SOURCES_HOW = {
    "staged": "Sources **staged**: every source of a load is written (and fsynced) into the store\n"
              "before its warm-up; during the window the generator only publishes each upload\n"
              "event (`Publisher.publish_stored`), as a service that stored the file earlier, on\n"
              "its own machine, would.",
    "inline": "Sources **inline**: each source is made, hashed, written and fsynced at its\n"
              "instant (`Publisher.publish_bytes`), on the worker's cores, during the window.",
}


def write_report(args: argparse.Namespace, results: list[Result], bare: Bare, capacity: float,
                 verdict: str, why: str, started: str, load_avg: tuple[float, float, float],
                 ) -> None:
    command = "benchmarks/latency/bench_latency.py " + " ".join(sys.argv[1:])
    per_photo = ", ".join(f"{k} {v:.1f} ms" for k, v in bare.per_photo.items())
    capacity_how = ("given with `--capacity`" if args.capacity else
                    f"a backlog of {args.capacity_uploads} uploads to one fresh worker; "
                    "completed/s between its first and last processed event")
    capacity_note = ("" if args.capacity else
                     " The backlog is published before the worker starts, so capacity is\n"
                     "measured without the load generator on the cores; during the loads the\n"
                     "generator costs its CPU column per upload on the same cores.")
    report = f"""# Latency under load (issue 15)

Command: `.venv/bin/python {command}` (broker on {args.bootstrap})

Run {started} on {machine()}; source {revision()}; load average at the start
{load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f}. The load generator, the follower
and the worker share the machine.

**Goal at 70 % load** (p99 submitted -> completed <= 2 x bare p99 + 100 ms): **{verdict}**:
{why}.

Setup: one `pixelpipe worker` with {args.image_processes} image processes
(`PIXELPIPE_WORKERS={args.image_processes}`), **`PIXELPIPE_DEGRADE=off`** in every run (the
degradation ladder never changes the service), a fresh topic prefix, group and store per load,
a warm-up of {2 * args.image_processes} uploads outside the clock. Uploads: the photographs of
`../shared/data/photos` ({', '.join(p.name for p in sorted(PHOTOS.glob('*.jpg')))}) in
turn, each made unique by a JPEG comment (same pixels, new sha256), {DESCRIBE[args.renditions]}.
{SOURCES_HOW[args.sources]}

Capacity: **{capacity:.2f} uploads/s** ({capacity_how}).{capacity_note}

Load: for each row an **open-loop Poisson** process at load x capacity for {args.seconds:g} s
(exponential inter-arrival times, `random.Random({args.seed} + row)`), each upload published at
its scheduled instant and never held back by acknowledgements or outcomes; then a wait (at
most {args.drain_timeout:g} s) for every outcome.

Bare processing time (the floor): {bare.how} in this process, one OpenCV thread, no Kafka, no
store, no hashing, {bare.renders} renders ({args.bare_rounds} of each photo, after one warm-up), measured
before and after the loads (p99 {" / ".join(f"{p:.1f}" for p in bare.p99s_ms)} ms); the one with the lower p99:
median **{bare.median_ms:.1f} ms**, p99 **{bare.p99_ms:.1f} ms** (median per photo: {per_photo}).

{table(results)}

Where the time went (the worker's own stage figures, from its `processed` log line; mean ms
over all uploads of the load and over its slowest 1 % by submitted -> completed):

{stage_table(results)}

Stages: *kafka*: the upload record's create time (the publisher's send) -> the worker's feed
read it; *handoff*: feed -> the process agent started it; *source*: checking the source
(size, sha256); *queue*: waiting for an image process and the trip there and back (the pool's
round trip less *render*); *render*: the image process's own rendering time; *store*: writing
the output durably; *rest*: the rest of `processing_ms` (event decoding, planning, the event
loop's delays between steps); *ack*: the processed event's send -> the broker's
acknowledgement (after `completed_at`, so only in *seen*). *image processes started*: during
the load (recycled or replaced image processes), sampled every 0.2 s.

Columns: *achieved /s*: uploads published / window; *generator lag*: `submitted_at` minus the
scheduled instant (large values mean the generator could not hold the schedule and the row is
not a Poisson load); *completed /s in window*: processed events whose `completed_at` falls in
the window; *p50 ... max*: `submitted_at` of the upload -> `completed_at` of its processed
event, over every upload of the row (also those completed during the drain); *seen p99*:
`submitted_at` -> the instant an outside consumer read the processed event (includes the
outcome's send); *processing_ms*: the worker's own figure from the processed events (from
decoding the event to the result, so it includes waiting for an image process); *worker CPU*:
user+sys of the worker's main process only (not its image processes), over the window and the
drain, per completed upload; in parentheses less its idle rate, measured over
{args.idle_seconds:g} s before the window; *image processes* and *generator* (this script:
publishing (and with inline sources hashing and writing them), following the outcomes) likewise; *peak RSS*:
worker and its image processes, sampled every second. Sources and outputs of settled uploads
are deleted as their outcomes are read, and each load's data dir after it.
"""
    args.out.write_text(report)


if __name__ == "__main__":
    sys.exit(main())
