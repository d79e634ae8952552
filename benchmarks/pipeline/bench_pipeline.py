"""End-to-end throughput: the pipeline through Kafka vs the same engine in a bare loop.

Both sides in one run, on the same images and renditions, with 2 image processes:

- bare: ``ImagePool(workers=2)`` renders every image's renditions in one task from one decode
  (``ImagePool.run_many``, as the worker does) with no Kafka, no blob store, no hashing: the
  ceiling. (Runs before 2026-12-01 rendered each rendition with its own decode on this side.)
- pipeline: a real ``pixelpipe worker`` subprocess (2 image processes) on a real broker;
  timed from the first publish to the last processed event (the worker is started and ready
  before the clock starts; publishing the events is part of the measured time). Every event
  has its own source (the photo with a numbered JPEG comment: same pixels, new sha256), so the
  worker checks every source's sha256 as it would on real traffic; the sources are written
  into the store before the clock (as the uploading service would, on its own machine), and
  the clock covers publishing the events (``Publisher.publish_stored``) and the worker.
  (Runs before 2026-12-01 published copies of the same two files with ``publish_file`` inside
  the clock: two distinct sources, hashed by the publisher each time.)

Usage (needs a broker; ``infra/kafka.sh up`` starts one on 127.0.0.1:9092):

    .venv/bin/python benchmarks/pipeline/bench_pipeline.py --bootstrap 127.0.0.1:9092 \
        --copies 40 --rounds 3 --out benchmarks/pipeline/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks" / "degradation"))

import psutil  # noqa: E402
from harness import PipelineEnv  # noqa: E402
from load import unique_jpeg  # noqa: E402

from pixelpipe.imaging import ImagePool, Limits, RenderResult, resolve_rendition  # noqa: E402
from pixelpipe.streams.client import Publisher  # noqa: E402

PHOTOS = REPO.parent / "shared" / "data" / "photos"
RENDITIONS = [
    {"name": "thumbnail", "preset": "thumbnail"},
    {"name": "web", "operations": ["resize:width=800,height=800,fit=inside",
                                   "format:type=webp,quality=80"]},
]


def _ops() -> list[tuple]:
    return [tuple(resolve_rendition(r.get("preset"), r.get("operations"))) for r in RENDITIONS]


async def bare(paths: list[Path]) -> float:
    """Images per second of the engine alone, 2 processes, same work."""
    ops = _ops()
    async with ImagePool(workers=2) as pool:
        # warm the processes (spawn + import cv2) outside the clock, as the worker is warm too
        await asyncio.gather(*(pool.run_many(str(paths[0]), ops, Limits()) for _ in range(2)))
        began = time.perf_counter()
        sem = asyncio.Semaphore(6)

        async def one(path: Path) -> None:
            async with sem:
                results = await pool.run_many(str(path), ops, Limits())
                assert all(isinstance(r, RenderResult) for r in results), results

        await asyncio.gather(*(one(p) for p in paths))
        return len(paths) / (time.perf_counter() - began)


def _cpu(pid: int) -> tuple[float, float, float]:
    """(user, system) CPU seconds of process ``pid`` itself, and user+system of its children."""
    proc = psutil.Process(pid)
    own = proc.cpu_times()
    kids = sum(c.cpu_times().user + c.cpu_times().system for c in proc.children())
    return own.user, own.system, kids


async def through_kafka(env: PipelineEnv, paths: list[Path], round_: int,
                        worker_pid: int, cpu: list[dict[str, float]]) -> float:
    async with Publisher(env.settings()) as publisher:
        await publisher.watch_outcomes()
        # one event end to end outside the clock: connections and metadata are warm, as the
        # bare side's processes are
        warm = await publisher.publish_file(paths[0], RENDITIONS)
        await publisher.wait_for(warm.event_id, timeout=300)
        photos = {p: p.read_bytes() for p in set(paths)}

        def stage() -> list:  # type: ignore[type-arg]
            return [publisher.store.put_source(unique_jpeg(photos[p], f"r{round_}-{i}"))
                    for i, p in enumerate(paths)]

        blobs = await asyncio.to_thread(stage)
        before, me_before = _cpu(worker_pid), time.process_time()
        began = time.perf_counter()
        uploads = [await publisher.publish_stored(b, RENDITIONS, content_type="image/jpeg")
                   for b in blobs]
        for upload in uploads:
            outcome = await publisher.wait_for(upload.event_id, timeout=900)
            assert outcome.status == "processed", outcome
            # full quality only: a degraded rendition is cheaper work than the bare side's
            assert all(r.degraded is None for r in outcome.event.renditions), outcome
        elapsed = time.perf_counter() - began
        after, me_after = _cpu(worker_pid), time.process_time()
        n = len(paths)
        cpu.append({"user": (after[0] - before[0]) / n * 1000,
                    "system": (after[1] - before[1]) / n * 1000,
                    "image": (after[2] - before[2]) / n * 1000,
                    "publisher": (me_after - me_before) / n * 1000})
        return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--copies", type=int, default=40, help="events per photo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {PHOTOS}")
    paths = [p for _ in range(args.copies) for p in photos]
    bare_rates, kafka_rates = [], []
    cpu: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = PipelineEnv(bootstrap=args.bootstrap, root=Path(tmp), workers=2)
        # the degradation ladder off: a backlog would otherwise lower the quality (cheaper
        # encodes) or serve originals, and the two sides would no longer do the same work
        worker = env.start_worker("bench", PIXELPIPE_DEGRADE="off")
        try:
            for round_ in range(args.rounds):
                bare_rates.append(asyncio.run(bare(paths)))
                kafka_rates.append(asyncio.run(through_kafka(env, paths, round_,
                                                             worker.process.pid, cpu)))
                print(f"round {round_ + 1}: bare {bare_rates[-1]:.2f} img/s, "
                      f"pipeline {kafka_rates[-1]:.2f} img/s", flush=True)
        finally:
            worker.stop()
    b, k = statistics.median(bare_rates), statistics.median(kafka_rates)

    def med(key: str) -> float:
        return statistics.median(c[key] for c in cpu)

    command = "benchmarks/pipeline/bench_pipeline.py " + " ".join(sys.argv[1:])
    report = f"""# Pipeline throughput vs a bare engine loop

Command: `.venv/bin/python {command}`

Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, 2 cores;
{len(paths)} events per round ({args.copies} x each of {', '.join(p.name for p in photos)},
each its own source: a numbered JPEG comment, stored before the clock),
2 renditions each (thumbnail preset, 800 px WebP q80), decoded once per image on both sides,
2 image processes on both sides, `PIXELPIPE_DEGRADE=off` for the worker (every rendition
checked to be at full quality); median of {args.rounds} rounds.

| side | images/s (median) | rounds |
|---|---|---|
| bare 2-process loop (no Kafka) | {b:.2f} | {', '.join(f'{r:.2f}' for r in bare_rates)} |
| pipeline through Kafka | {k:.2f} | {', '.join(f'{r:.2f}' for r in kafka_rates)} |
| ratio pipeline / bare | {k / b:.3f} | target >= 0.9 |

CPU per upload on the pipeline side (ms, median over the rounds; psutil, from the first
publish to the last outcome): the worker's main process {med("user"):.1f} user +
{med("system"):.1f} system, its image processes {med("image"):.1f}, this publishing and
following process {med("publisher"):.1f}; the broker's is not counted here.
"""
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
