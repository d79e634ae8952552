"""Graceful degradation under offered load (issue 10): 1x, 2x and 5x capacity, on vs off.

One real ``pixelpipe worker`` subprocess with one image process (``PIXELPIPE_WORKERS=1``) per
cell, on a real broker, each cell in its own ``PipelineEnv`` (topic prefix, group, store):

1. capacity: a backlog of ``--capacity-uploads`` heavy uploads waits for a worker with
   degradation off; completed/s between its first and last processed event is the capacity.
2. each cell (multiplier x on/off): a fresh worker (``PIXELPIPE_DEGRADE=off`` is the kill
   switch), then uploads published at ``multiplier x capacity`` per second for ``--seconds``,
   then a bounded wait for every published upload's outcome. Measured from outside: processed
   and dead-letter topics (every published id), the processed events' ``submitted_at`` ->
   ``completed_at`` and ``level``, ``service level`` lines of the worker's log, and the RSS of
   the worker and its children sampled every second (psutil).

Every upload is a full-size photograph of ``../shared/data/photos`` made unique (a JPEG comment
segment with its number, so ``cached_only`` cannot serve a stored output of an identical
upload) with the rendition of ``tests/integration/test_degradation.py``: rotate 90 (a full-size
decode), resize to 1600 px, JPEG q90.

Usage (needs a broker; ``infra/kafka.sh up`` starts one on 127.0.0.1:9092):

    .venv/bin/python benchmarks/degradation/bench_degradation.py --bootstrap 127.0.0.1:9092 \
        --seconds 120 --out benchmarks/degradation/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
from harness import PipelineEnv, WorkerProcess, read_to_end  # noqa: E402
from images import PHOTOS  # noqa: E402
from load import (  # noqa: E402
    HEAVY,
    Outcomes,
    RssSampler,
    follow,
    percentile,
    publish_at_rate,
    unique_jpeg,
    wait_settled,
)

from pixelpipe.schemas.times import parse_time  # noqa: E402
from pixelpipe.storage.local import LocalBlobStore  # noqa: E402
from pixelpipe.streams.client import Publisher  # noqa: E402
from pixelpipe.streams.topics import retry_topic  # noqa: E402

MULTIPLIERS = (1, 2, 5)
RETRY_TIERS = ("1s", "2s")  # PipelineEnv's PIXELPIPE_RETRY_TIERS


def measure_capacity(bootstrap: str, root: Path, photos: list[bytes], count: int) -> float:
    pipeline = PipelineEnv(bootstrap=bootstrap, root=root / "capacity", workers=1)
    pipeline.root.mkdir(parents=True)

    async def backlog() -> list[str]:
        ids = []
        async with Publisher(pipeline.settings()) as publisher:
            for i in range(count):
                data = unique_jpeg(photos[i % len(photos)], f"cap-{i}")
                ids.append((await publisher.publish_bytes(data, HEAVY)).event_id)
        return ids

    ids = asyncio.run(backlog())
    worker = pipeline.start_worker("capacity", PIXELPIPE_WORKERS="1", PIXELPIPE_DEGRADE="off")
    try:
        async def collect() -> Outcomes:
            outcomes, stop = Outcomes(), asyncio.Event()
            task = asyncio.create_task(follow(pipeline, outcomes, stop))
            await wait_settled(outcomes, ids, 900, print)
            stop.set()
            await task
            return outcomes

        outcomes = asyncio.run(collect())
    finally:
        worker.stop()
    if outcomes.dead or len(outcomes.processed) < len(ids):
        raise SystemExit(f"capacity run incomplete: {len(outcomes.processed)} processed, "
                         f"{len(outcomes.dead)} dead-lettered of {len(ids)}")
    done = sorted(parse_time(e.completed_at).timestamp() for e in outcomes.processed.values())
    return (len(done) - 1) / (done[-1] - done[0])


@dataclass
class Cell:
    multiplier: int
    degrade: bool
    offered: float = 0.0
    published: int = 0
    completed_in_window: int = 0
    window_s: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    p99_window: float = math.nan
    degraded: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    #: renditions by how they were served: ``full`` (not degraded) or the ``degraded`` mark
    #: (``emergency``: the original source, no pixels touched)
    served: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    level_changes: int = 0
    peak_rss: int = 0
    dead: int = 0
    lost: int = 0
    drain_s: float = 0.0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.multiplier}x:{'on' if self.degrade else 'off'}"


def run_cell(bootstrap: str, root: Path, photos: list[bytes], cell: Cell, capacity: float,
             seconds: float, drain_timeout: float, degrade_env: dict[str, str],
             cell_seconds: dict[str, float] | None = None) -> Cell:
    def seconds_of(c: Cell) -> float:
        return (cell_seconds or {}).get(c.name, seconds)

    pipeline = PipelineEnv(bootstrap=bootstrap, root=root / cell.name.replace(":", "-"), workers=1)
    pipeline.root.mkdir(parents=True)
    env = {"PIXELPIPE_WORKERS": "1", **(degrade_env if cell.degrade else {}),
           "PIXELPIPE_DEGRADE": "on" if cell.degrade else "off"}
    worker: WorkerProcess = pipeline.start_worker(cell.name.replace(":", "-"), **env)
    sampler = RssSampler(worker.process.pid)
    sampler.start()
    cell.offered = cell.multiplier * capacity
    submitted: dict[str, float] = {}
    try:
        async def drive() -> tuple[list[str], float, float, Outcomes, float]:
            sources: dict[str, Path] = {}
            outcomes = Outcomes(reclaim=sources, store=LocalBlobStore(pipeline.data_dir))
            stop = asyncio.Event()
            task = asyncio.create_task(follow(pipeline, outcomes, stop))
            ids, began, ended = await publish_at_rate(pipeline, photos, cell.offered,
                                                      seconds_of(cell), cell.name, submitted,
                                                      sources)
            drained = await wait_settled(outcomes, ids, drain_timeout, print)
            await asyncio.sleep(1.0)  # duplicates and stragglers
            stop.set()
            await task
            return ids, began, ended, outcomes, drained

        ids, began, ended, outcomes, cell.drain_s = asyncio.run(drive())
        retried = read_to_end(pipeline.bootstrap,
                              [retry_topic(t, pipeline.prefix) for t in RETRY_TIERS])
    finally:
        cell.peak_rss = sampler.stop()
        cell.level_changes = worker.log().count("service level ")
        worker.stop()
        shutil.rmtree(pipeline.data_dir, ignore_errors=True)  # a cell's blobs: gigabytes
    wanted = set(ids)
    events = [outcomes.processed[i] for i in ids if i in outcomes.processed]
    cell.published = len(ids)
    cell.window_s = ended - began
    done_at = {e.event_id: parse_time(e.completed_at).timestamp() for e in events}
    latency = {i: done_at[i] - submitted[i] for i in done_at if i in submitted}
    in_window = [i for i, t in done_at.items() if began <= t <= ended]
    cell.completed_in_window = len(in_window)
    cell.p50 = percentile(list(latency.values()), 0.50)
    cell.p99 = percentile(list(latency.values()), 0.99)
    cell.p99_window = percentile([latency[i] for i in in_window if i in latency], 0.99)
    cell.levels = Counter(e.level for e in events)
    cell.degraded = sum(n for level, n in cell.levels.items() if level != "full")
    cell.served = Counter(r.degraded or "full" for e in events for r in e.renditions)
    cell.deferred = len({orjson.loads(r.value).get("event_id") for r in retried} & wanted)
    cell.dead = sum(1 for i in ids if i in outcomes.dead)
    cell.lost = sum(1 for i in ids if i not in outcomes.processed and i not in outcomes.dead)
    cell.seconds = seconds_of(cell)
    return cell


def fmt_s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="load window of each cell (the issue asks for 600)")
    parser.add_argument("--capacity-uploads", type=int, default=80,
                        help="backlog published to measure capacity")
    parser.add_argument("--capacity", type=float, default=None,
                        help="skip the capacity run and use this (uploads/s)")
    parser.add_argument("--cells", default="1x:off,1x:on,2x:off,2x:on,5x:off,5x:on",
                        help="comma-separated MULTx:on|off[:SECONDS] (SECONDS overrides "
                             "--seconds for that cell)")
    parser.add_argument("--drain-timeout", type=float, default=900.0,
                        help="longest wait for every outcome after the load window")
    parser.add_argument("--lag-start-s", type=float, default=5.0,
                        help="lag trigger starts at this many seconds of capacity, in records")
    parser.add_argument("--lag-saturate-s", type=float, default=30.0,
                        help="lag trigger saturates at this many seconds of capacity")
    parser.add_argument("--recover", default="10s", help="PIXELPIPE_DEGRADE_RECOVER")
    parser.add_argument("--dwell", default="10s", help="PIXELPIPE_DEGRADE_DWELL")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))]
    if not photos:
        raise SystemExit(f"no photos in {PHOTOS}")
    cells = []
    cell_seconds: dict[str, float] = {}
    for item in args.cells.split(","):
        mult, _, rest = item.strip().partition(":")
        mode, _, secs = rest.partition(":")
        cell = Cell(multiplier=int(mult.rstrip("x")), degrade=mode == "on")
        cells.append(cell)
        if secs:
            cell_seconds[cell.name] = float(secs)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def write_report(done: list[Cell], final: bool) -> str:
        command = "benchmarks/degradation/bench_degradation.py " + " ".join(sys.argv[1:])
        rows = []
        for cell in done:
            rate = cell.completed_in_window / cell.window_s if cell.window_s else 0.0
            levels = ", ".join(f"{k} {v}" for k, v in sorted(cell.levels.items())) or "-"
            share = cell.degraded / max(1, sum(cell.levels.values()))
            served = ", ".join(f"{k} {v}" for k, v in sorted(cell.served.items())) or "-"
            capped = cell.lost and cell.drain_s >= args.drain_timeout - 1
            lost = f"{cell.lost} unsettled at the drain cap" if capped else f"**{cell.lost}**"
            rows.append(
                f"| {cell.multiplier}x | {'on' if cell.degrade else 'off'} | {cell.window_s:.0f} "
                f"| {cell.offered:.2f} "
                f"({cell.published / cell.window_s:.2f}) "
                f"| {cell.published} | {rate:.2f} ({rate / capacity:.0%}) | {fmt_s(cell.p50)} "
                f"| {fmt_s(cell.p99)} | {fmt_s(cell.p99_window)} | {share:.0%} ({levels}) "
                f"| {served} | {cell.deferred} | {cell.level_changes} | {cell.peak_rss / 2**20:.0f} "
                f"| {cell.dead} | {lost} | {cell.drain_s:.0f} |")
        table = "\n".join([
            "| load | degrade | window s | offered /s (achieved) | published | completed /s in window (of capacity) "
            "| p50 s | p99 s | p99 s (completed in window) | degraded outputs (levels) "
            "| renditions served as | deferred | level changes | peak RSS MiB | dead letters | lost | drain s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ])
        report = f"""# Graceful degradation under offered load (issue 10)

Command: `.venv/bin/python {command}` (broker on {args.bootstrap})

Run {started} on {platform.machine()}, {platform.python_implementation()} \
{platform.python_version()}, {psutil.cpu_count()} cores; the publisher runs on the same machine.
Each cell: a fresh topic prefix and one `pixelpipe worker` with one image process
(`PIXELPIPE_WORKERS=1`), uploads published on a schedule at load x capacity for the
cell's window (`--seconds`, or a cell's own `:SECONDS`), then a wait (at most
{args.drain_timeout:g} s) for every upload's outcome. Uploads: the full-size photographs of
`../shared/data/photos`, each made unique by a JPEG comment (so `cached_only` never finds an
output of an identical upload), rendition `rotate:angle=90`, resize to 1600 px, JPEG q90 (no
`optional` operation, so `basic` saves no more than `reduced_quality`'s quality cap).

Capacity: **{capacity:.2f} uploads/s** ({'given' if args.capacity else
f'a backlog of {args.capacity_uploads} uploads, degradation off'}).

Degradation settings for a short run (`on` cells; `off` is `PIXELPIPE_DEGRADE=off`):
`PIXELPIPE_HEALTH_TRIGGERS=lag_records={lag_start}:{lag_saturate}` ({args.lag_start_s:g} s to
{args.lag_saturate_s:g} s of capacity; production default 500:10000),
`PIXELPIPE_DEGRADE_RECOVER={args.recover}` (default 60s), `PIXELPIPE_DEGRADE_DWELL={args.dwell}`
(default 30s); other triggers at their defaults. Retry tiers 1s, 2s.

Measures: *completed /s in window*: processed events whose `completed_at` falls inside the
load window, per second; *p50/p99*: upload `submitted_at` -> processed `completed_at`, over
every published upload (including those finished during the drain); *degraded*: processed
events with `level` != full (the worker's level when it served them); *renditions served as*:
each rendition's own `degraded` mark (`full` when none: rendered at full quality; `basic`,
`reduced_quality`: rendered with less; `emergency`: the original source, no pixels touched);
*deferred*: uploads that went through a retry topic (deferred
at `cached_only`, no attempt spent); *level changes*: `service level ` lines of the worker
log; *peak RSS*: worker + image processes, sampled every second; *lost*: published ids with
neither a processed event nor a dead letter after the drain ("unsettled at the drain cap" when
the drain ran out of time with the worker still working through the backlog: not shown lost,
not shown settled). Sources and outputs of settled uploads are deleted as their outcomes are
read, so long cells fit on the disk.

{table}
"""
        if args.out:
            args.out.write_text(report if final else report + "\n(partial: run in progress)\n")
        return report

    with tempfile.TemporaryDirectory(prefix="pixelpipe-degrade-") as tmp:
        root = Path(tmp)
        if args.capacity:
            capacity = args.capacity
            print(f"capacity (given): {capacity:.2f} uploads/s", flush=True)
        else:
            capacity = measure_capacity(args.bootstrap, root, photos, args.capacity_uploads)
            print(f"capacity: {capacity:.2f} uploads/s", flush=True)
        lag_start = max(5, round(args.lag_start_s * capacity))
        lag_saturate = max(lag_start + 5, round(args.lag_saturate_s * capacity))
        degrade_env = {
            "PIXELPIPE_HEALTH_TRIGGERS": f"lag_records={lag_start}:{lag_saturate}",
            "PIXELPIPE_DEGRADE_RECOVER": args.recover,
            "PIXELPIPE_DEGRADE_DWELL": args.dwell,
        }
        for n, cell in enumerate(cells):
            print(f"cell {cell.name}: {cell.multiplier * capacity:.2f} uploads/s for "
                  f"{cell_seconds.get(cell.name, args.seconds):g} s", flush=True)
            run_cell(args.bootstrap, root, photos, cell, capacity, args.seconds,
                     args.drain_timeout, degrade_env, cell_seconds)
            print(f"  completed in window {cell.completed_in_window / cell.window_s:.2f}/s, "
                  f"p50 {fmt_s(cell.p50)} s, p99 {fmt_s(cell.p99)} s, levels "
                  f"{dict(cell.levels)}, deferred {cell.deferred}, changes {cell.level_changes}, "
                  f"rss {cell.peak_rss / 2**20:.0f} MiB, dead {cell.dead}, lost {cell.lost}, "
                  f"drain {cell.drain_s:.0f} s", flush=True)
            write_report(cells[:n + 1], final=False)

    print(write_report(cells, final=True))
    return 1 if any(c.lost for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
