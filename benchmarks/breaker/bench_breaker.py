"""Breaker propagation: from the agent's decision to open, to every worker refusing.

Two real workers on a real broker; ``blur`` fails always (``PIXELPIPE_FAULTS``), the open
wait is short and capped, so the breaker trips again and again (closed -> open, then each
failed trial half_open -> open). For every trip, the delay is the time from the owner's log
line ``breaker blur: ... -> open`` to the line ``breaker view: blur is now open`` of the same
episode (same ``since``) in each worker's log, i.e. until that worker refuses blur. Reported:
p50 and max over trips of the slower worker, and over all (trip, worker) pairs. Log times have
millisecond resolution and both workers share this machine's clock.

    .venv/bin/python benchmarks/breaker/bench_breaker.py --bootstrap 127.0.0.1:9092 \
        --seconds 40 --out benchmarks/breaker/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import PipelineEnv  # noqa: E402
from images import mixed_images  # noqa: E402

from pixelpipe.streams.client import Publisher  # noqa: E402

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
ENV = {
    "PIXELPIPE_FAULTS": "blur:worker_crashed:always",
    "PIXELPIPE_BREAKER_MIN_CALLS": "4",
    "PIXELPIPE_BREAKER_WAIT": "1s",
    "PIXELPIPE_BREAKER_MAX_WAIT": "2s",
    "PIXELPIPE_BREAKER_HALF_OPEN_CALLS": "2",
    "PIXELPIPE_RETRY_TIERS": "1s,2s",
}
RENDITION = {"name": "soft", "operations": ["resize:width=200,height=200,fit=inside",
                                            "blur:sigma=1"]}


def when(line: str) -> float:
    match = STAMP.match(line)
    assert match, line
    # both sides are the same machine's local-time log stamps: naive is what they are
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007


def trips(log: str) -> list[float]:
    """The log time of each decision to open, from the owner's log."""
    return [when(line) for line in log.splitlines()
            if re.search(r"breaker blur: (closed|half_open) -> open", line)]


def views(log: str) -> list[float]:
    return [when(line) for line in log.splitlines() if "breaker view: blur is now open" in line]


async def feed(env: PipelineEnv, images: list[Path], seconds: float) -> None:
    async with Publisher(env.settings()) as publisher:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            await publisher.publish_file(images[i % len(images)], [RENDITION])
            i += 1
            await asyncio.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = PipelineEnv(bootstrap=args.bootstrap, root=Path(tmp), workers=1)
        images = [img.path for img in mixed_images(Path(tmp) / "in", 6, max_side=400)]
        workers = [env.start_worker(name, **ENV) for name in ("a", "b")]
        try:
            asyncio.run(feed(env, images, args.seconds))
        finally:
            for worker in workers:
                worker.stop()
        logs = [w.log() for w in workers]
    decisions = sorted(t for log in logs for t in trips(log))
    seen = [views(log) for log in logs]
    per_trip, pairs = [], []
    for i, decided in enumerate(decisions):
        nxt = decisions[i + 1] if i + 1 < len(decisions) else float("inf")
        delays = []
        for worker_views in seen:
            after = [t for t in worker_views if decided <= t < nxt]
            if after:
                delays.append((after[0] - decided) * 1000)
        if len(delays) == len(seen):
            per_trip.append(max(delays))
            pairs.extend(delays)
    if not per_trip:
        raise SystemExit("no complete trip observed")
    command = "benchmarks/breaker/bench_breaker.py " + " ".join(sys.argv[1:])
    report = f"""# Breaker propagation: decision to open -> every worker refusing

Command: `.venv/bin/python {command}`

Two workers (1 image process each) on one broker, `blur` failing always, open wait 1 s
capped at 2 s, so the breaker re-opens after every failed trial. Delay = the worker's
`breaker view: blur is now open` log line minus the owner's `-> open` decision line.

| measure | trips | p50 | max |
|---|---|---|---|
| slower of the two workers, per trip | {len(per_trip)} | {statistics.median(per_trip):.0f} ms | {max(per_trip):.0f} ms |
| every (trip, worker) pair | {len(pairs)} | {statistics.median(pairs):.0f} ms | {max(pairs):.0f} ms |

Target: under 1 s.
"""
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
