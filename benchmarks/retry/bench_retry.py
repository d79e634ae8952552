"""Retry lateness: how long after its due time each retry really starts, idle and under load.

Issue 4's targets: a retry never starts before its due time; p99 lateness at most 100 ms idle.
One run, two conditions, each on a fresh real ``pixelpipe worker`` (2 image processes, tiers
``--tiers``, default ``2s,4s``) with its own topic prefix, on the broker at ``--bootstrap``:

- idle: only the probes below;
- load: the probes while the uploads topic stays busy with real photo uploads (read from
  ``../shared/data/photos``; thumbnail + 800 px WebP each): ``--backlog`` of them are published
  at once, and each one's outcome triggers the next, so that many stay outstanding from
  ``--warmup`` seconds before the first probe until the last probe's outcome.

Probes: small PNG uploads, ``--rate`` per second, whose rendition includes ``grayscale``. The
worker runs with ``PIXELPIPE_FAULTS=grayscale:storage_unavailable:always``, so every probe fails
on the uploads topic and in each tier, then is dead-lettered ``retries_exhausted``: one retry per
tier per probe, coming due one by one. (``grayscale`` rather than ``resize``: fault counters are
per processor, and the photos resize. The fault fires before the image pool, so a retry's
attempt never queues behind the photos: what is measured is the scheduler, not the pool.)
grayscale's circuit breaker is kept closed (``PIXELPIPE_BREAKER_MIN_CALLS``): open, it would
defer the probes (no attempt spent) instead of retrying them.

Lateness is read on two clocks:

- scheduler: the worker's ``retry due: ... started X ms after its due time`` lines (its own
  ``time.time()`` at dispatch minus the envelope's ``due_at``);
- records: every envelope on ``<prefix>.retry.<tier>`` (``decode_retry``) against the next
  attempt's ``AttemptRecord.at`` (in the next envelope or the dead letter; ``completed_at`` of a
  processed event): an attempt at before its due time is an early retry (must be 0). Its delay
  after due (dispatch + hashing the source + routing; ms resolution) is reported too.

A tier partition is dispatched in arrival order, and due times carry jitter (up to 10 % of the
delay, at most 1 s), so a record queued behind a later-due one of the same partition waits for
it: those are counted ("behind a later-due head") and the lateness of the others is given apart.

Usage (needs a broker; ``KAFKA_PORT=9392 infra/kafka.sh up`` starts one):

    .venv/bin/python benchmarks/retry/bench_retry.py --bootstrap 127.0.0.1:9392 \
        --out benchmarks/retry/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import PipelineEnv, WorkerProcess, consume_all  # noqa: E402

from pixelpipe.config import parse_tiers  # noqa: E402
from pixelpipe.schemas import DeadLetter, decode_retry, parse_time  # noqa: E402
from pixelpipe.streams.client import FinalOutcome, Publisher  # noqa: E402
from pixelpipe.streams.topics import retry_topic  # noqa: E402

PHOTOS = REPO.parent / "shared" / "data" / "photos"
FAULTS = "grayscale:storage_unavailable:always"
#: the probes fail on purpose: keep grayscale's circuit breaker closed, or it would defer them
BREAKER_KEPT_CLOSED = {"PIXELPIPE_BREAKER_MIN_CALLS": "1000000000"}
PROBE: list[dict[str, Any]] = [{"name": "probe", "operations": ["grayscale", "resize:width=32", "format:type=png"]}]
HEAVY: list[dict[str, Any]] = [
    {"name": "thumbnail", "preset": "thumbnail"},
    {"name": "web", "operations": ["resize:width=800,height=800,fit=inside",
                                   "format:type=webp,quality=80"]},
]
DUE_LINE = re.compile(
    r"retry due: (\S+) from (\S+)\[(\d+)\]@(\d+) started (-?[\d.]+) ms after its due time"
)


@dataclass
class Result:
    condition: str
    probes: int
    retries: int  # envelopes in the tiers
    scheduler_ms: list[float]  # the worker's log lines
    attempt_ms: list[float]  # records: next attempt's at - due_at
    early: int  # records: next attempt before due_at
    unmatched: int  # envelopes whose next attempt was not found
    deferred: int  # envelopes of a breaker deferral (none expected: the breaker is kept closed)
    behind: int  # dispatched behind a later-due record of the same tier partition
    in_order_ms: list[float]  # scheduler lateness of the others
    behind_ms: list[tuple[float, float]]  # the behind ones: (lateness, head's due - own due)
    outcomes: Counter[str]
    seconds: float  # first probe published -> last probe outcome
    heavy_done: int  # photo uploads completed in that window


def pct(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def probe_png() -> bytes:
    image = np.zeros((48, 64, 3), np.uint8)
    cv2.circle(image, (32, 24), 16, (40, 160, 220), -1)
    return bytes(cv2.imencode(".png", image)[1])


async def drive(env: PipelineEnv, tiers: str, probes: int, rate: float, backlog: int,
                warmup: float) -> tuple[dict[str, FinalOutcome], float, int]:
    """Publish the probes (and the load); return their outcomes, the window, photos done."""
    photos = [(p.read_bytes(), p.stem) for p in sorted(PHOTOS.glob("*.jpg"))]
    if backlog and not photos:
        raise SystemExit(f"no photos in {PHOTOS}")
    done_at: list[float] = []

    async with Publisher(env.settings(retry_tiers=parse_tiers(tiers))) as publisher:
        await publisher.watch_outcomes()

        stop = asyncio.Event()

        async def user(u: int) -> None:  # one outstanding photo upload at a time
            for n in itertools.count():
                if stop.is_set():
                    return
                data, stem = photos[(u + n) % len(photos)]
                upload = await publisher.publish_bytes(
                    data, HEAVY, image_id=f"{stem}-{u}-{n}", content_type="image/jpeg")
                await publisher.wait_for(upload.event_id, timeout=900)
                done_at.append(time.monotonic())

        load = [asyncio.create_task(user(u)) for u in range(backlog)]
        try:
            await asyncio.sleep(warmup if backlog else 0)
            png, began = probe_png(), time.monotonic()
            uploads = []
            for i in range(probes):
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
                uploads.append(await publisher.publish_bytes(
                    png, PROBE, image_id=f"probe-{i}", content_type="image/png"))
            outcomes = {u.event_id: await publisher.wait_for(u.event_id, timeout=600)
                        for u in uploads}
            ended = time.monotonic()
        finally:
            # On Python 3.11 asyncio.wait_for (inside Publisher.wait_for) can swallow a
            # cancel that lands as its wait completes; the flag ends such a user anyway.
            stop.set()
            for task in load:
                task.cancel()
            for task in load:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return outcomes, ended - began, sum(began <= t <= ended for t in done_at)


def analyse(condition: str, records: list[Any], outcomes: dict[str, FinalOutcome], log: str,
            seconds: float, heavy_done: int) -> Result:
    envelopes: dict[tuple[str, int], tuple[Any, Any]] = {}  # (event, failed attempts) -> record
    attempt_at: dict[tuple[str, int], str] = {}  # (event, attempt index) -> when it ended
    deferred: set[tuple[str, int, int]] = set()
    for record in records:
        envelope = decode_retry(record.value)
        if envelope.event_id not in outcomes:
            continue
        if envelope.deferrals:
            deferred.add((envelope.event_id, len(envelope.attempts), envelope.deferrals))
            continue
        envelopes.setdefault((envelope.event_id, len(envelope.attempts)), (record, envelope))
        for k, attempt in enumerate(envelope.attempts):
            attempt_at[(envelope.event_id, k)] = attempt.at
    for event_id, outcome in outcomes.items():
        if isinstance(outcome.event, DeadLetter):
            for k, attempt in enumerate(outcome.event.attempts):
                attempt_at[(event_id, k)] = attempt.at
        else:
            attempt_at[(event_id, outcome.event.attempts - 1)] = outcome.event.completed_at

    attempt_ms, early, unmatched = [], 0, 0
    due_of: dict[tuple[str, int, int], float] = {}
    for (event_id, failed), (record, envelope) in envelopes.items():
        due = parse_time(envelope.due_at).timestamp()
        due_of[(record.topic, record.partition, record.offset)] = due
        at = attempt_at.get((event_id, failed))
        if at is None:
            unmatched += 1
            continue
        delay = (parse_time(at).timestamp() - due) * 1000
        attempt_ms.append(delay)
        early += delay < 0

    # records queued behind a later-due one in the same tier partition wait for it
    behind_keys: dict[tuple[str, int, int], float] = {}  # -> ms until the head was due
    latest: dict[tuple[str, int], float] = {}
    for key in sorted(due_of):
        part = key[:2]
        if latest.get(part, float("-inf")) > due_of[key]:
            behind_keys[key] = (latest[part] - due_of[key]) * 1000
        latest[part] = max(latest.get(part, float("-inf")), due_of[key])

    scheduler_ms, in_order_ms, behind_ms = [], [], []
    for m in DUE_LINE.finditer(log):
        if m.group(1) not in outcomes:
            continue
        ms, key = float(m.group(5)), (m.group(2), int(m.group(3)), int(m.group(4)))
        scheduler_ms.append(ms)
        if key in behind_keys:
            behind_ms.append((ms, behind_keys[key]))
        else:
            in_order_ms.append(ms)
    codes = Counter(
        o.event.error.code if isinstance(o.event, DeadLetter) else o.status
        for o in outcomes.values()
    )
    return Result(condition, len(outcomes), len(envelopes), scheduler_ms, attempt_ms, early,
                  unmatched, len(deferred), len(behind_keys), in_order_ms, behind_ms, codes, seconds, heavy_done)


def run(condition: str, root: Path, args: argparse.Namespace) -> Result:
    env = PipelineEnv(bootstrap=args.bootstrap, root=root / condition, workers=2)
    env.root.mkdir(parents=True)
    worker: WorkerProcess = env.start_worker(
        condition, PIXELPIPE_FAULTS=FAULTS, PIXELPIPE_RETRY_TIERS=args.tiers,
        **BREAKER_KEPT_CLOSED)
    try:
        deadline = time.monotonic() + 60
        while "retry scheduler assigned" not in worker.log():  # the tiers' group has joined
            if time.monotonic() > deadline:
                raise SystemExit(f"retry scheduler never assigned:\n{worker.log()[-3000:]}")
            time.sleep(0.2)
        backlog = args.backlog if condition == "load" else 0
        outcomes, seconds, heavy = asyncio.run(
            drive(env, args.tiers, args.probes, args.rate, backlog, args.warmup))
        tiers = [name for name, _ in parse_tiers(args.tiers)]
        expected = len(tiers) * len(outcomes)
        records = consume_all(
            env.bootstrap, [retry_topic(t, env.prefix) for t in tiers],
            done=lambda r: len(r) >= expected, timeout=120)
        log = worker.log()
    finally:
        worker.stop()
    return analyse(condition, records, outcomes, log, seconds, heavy)


def fmt(values: list[float]) -> str:
    return f"{pct(values, 0.5):.1f} / {pct(values, 0.99):.1f} / {max(values, default=float('nan')):.1f}"


def report(results: list[Result], args: argparse.Namespace) -> str:
    command = "benchmarks/retry/bench_retry.py " + " ".join(sys.argv[1:])
    rows = "\n".join(
        f"| {r.condition} | {r.probes} | {r.retries} | {len(r.scheduler_ms)} | "
        f"**{fmt(r.scheduler_ms)}** | {r.behind} | {fmt(r.in_order_ms)} | {fmt(r.attempt_ms)} | "
        f"**{r.early}** | {r.unmatched} | {r.deferred} | {r.heavy_done} in {r.seconds:.0f} s "
        f"({r.heavy_done / r.seconds:.1f}/s) | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(r.outcomes.items()))} |"
        for r in results
    )
    columns = ["condition", "probes", "retry envelopes", "dispatches logged",
               "scheduler lateness ms", "behind a later-due head", "lateness of the others ms",
               "next attempt's `at` - due ms", "early (records)", "unmatched", "deferred",
               "photos processed meanwhile", "probe outcomes"]
    header = "| " + " | ".join(columns) + " |\n|---|" + "---:|" * (len(columns) - 2) + "---|"
    behind = "\n".join(
        f"- {r.condition}: " + ", ".join(f"{ms:.1f} ms late, head due {wait:.1f} ms after it"
                                         for ms, wait in sorted(r.behind_ms))
        for r in results if r.behind_ms
    ) or "- none"
    return f"""# Retry lateness, idle and under load

Command: `.venv/bin/python {command}`

Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, 2 cores (shared: other test runs were using the machine too);
one real `pixelpipe worker` per condition (2 image processes), tiers `{args.tiers}`,
`PIXELPIPE_FAULTS={FAULTS}` (breaker kept closed); {args.probes} probe uploads at {args.rate:g}/s, each retried once
per tier then dead-lettered; under load, {args.backlog} photo uploads (thumbnail + 800 px WebP)
kept outstanding from {args.warmup:g} s before the first probe to the last probe's outcome.
Lateness = dispatch time - `due_at`, p50 / p99 / max in ms (p99: nearest rank).

{header}
{rows}

Dispatches behind a later-due head of their tier partition (jitter reorders due times; a
partition is dispatched in arrival order):
{behind}

Targets (issue 4): never early (records: early = 0); p99 scheduler lateness at most 100 ms idle.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tiers", default="2s,4s")
    parser.add_argument("--probes", type=int, default=200, help="probe uploads per condition")
    parser.add_argument("--rate", type=float, default=4.0, help="probe uploads per second")
    parser.add_argument("--backlog", type=int, default=100, help="photo uploads kept outstanding")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before probes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("idle", "load"):
            results.append(run(condition, Path(tmp), args))
            r = results[-1]
            print(f"{condition}: scheduler {fmt(r.scheduler_ms)} ms, records {fmt(r.attempt_ms)}"
                  f" ms, early {r.early}, behind {r.behind}", flush=True)
    text = report(results, args)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
