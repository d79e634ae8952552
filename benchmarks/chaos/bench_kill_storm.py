"""Chaos run for issue 14: a steady stream of uploads, kill -9s of workers at random moments.

Two workers share the uploads group. Uploads (small crops of the shared photos, as in the
takeover drill; every ``--corrupt-every``-th truncated on purpose, expected to end as a
``corrupt_image`` dead letter) are published at a steady rate the two workers can nearly keep
up with, so there is always work in flight. At ``--kills`` random moments (``random.Random
(seed)``, one in each equal slice of the publishing time) one of the two workers, chosen at
random, is SIGKILLed with its image processes (``WorkerProcess.kill9``) and a replacement is
started at once, so the group is back at two. Workers run with a fetch delay fault and
``PIXELPIPE_MAX_INFLIGHT`` (like the takeover drill's ``DRILL_ENV``) so several uploads are in
flight at every kill.

Judged from outside, as an operator would: once publishing is over and the group has drained,
the processed and dead-letter topics are read for every published event id (lost: no outcome;
duplicates: more than one outcome record, checked to carry the same output keys); a sampler
reads the uploads group's lag (log end minus committed offset) every two seconds throughout.

Recovery of a kill, measured from the topics: the killed worker's uploads partitions are read
from its ``/status`` just before the kill; for each, the first outcome record (processed or
dead letter, Kafka record timestamp) of an upload of that partition after the kill. "First"
is the earliest of them, "all" the latest (every partition the dead worker held is served
again). Beside it, from the lag samples: the lag at the kill, its peak before it falls again,
and when it is back to its level at the kill; and from the workers' logs (explaining the
figures, not judging them): when the survivor was assigned the dead worker's partitions and
when the replacement's faust app and uploads feed were up.

    KAFKA_PORT=39092 infra/kafka.sh up
    flock -s /tmp/pixelpipe-bench.lock .venv/bin/python benchmarks/chaos/bench_kill_storm.py \
        --bootstrap 127.0.0.1:39092 --uploads 5000 --kills 5 --rate 15 --seed 14 \
        --results benchmarks/chaos/RESULTS.md

``--results`` replaces this run's section of that file (appended the first time), its row in
the summary table, and takes the scenario out of the "Not yet run" paragraph.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import PipelineEnv, WorkerProcess, read_to_end, wait_for_records  # noqa: E402
from images import mixed_images  # noqa: E402
from takeover_drill import RENDITIONS, drained_lag  # noqa: E402

from pixelpipe.schemas import decode_deadletter  # noqa: E402
from pixelpipe.streams.client import Publisher  # noqa: E402
from pixelpipe.streams.topics import (  # noqa: E402
    dlq_topic,
    processed_topic,
    retry_topic,
    uploads_topic,
)

SECTION = "## Kill storm: kill -9s of workers at random moments in a two-worker group (issue 14)"
ROW_MARK = "`bench_kill_storm.py`"
LAG_EVERY_S = 2.0


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


# --------------------------------------------------------------------------- what is recorded


@dataclass(slots=True)
class Published:
    event_id: str
    partition: int
    offset: int
    at: float  # wall clock, when Kafka acknowledged it
    corrupt: bool


@dataclass(slots=True)
class Kill:
    number: int
    planned_s: float  # seconds after publishing began
    victim: str
    survivor: str = ""
    replacement: str = ""
    at: float = 0.0  # wall clock of the SIGKILL
    published_before: int = 0
    partitions: list[int] = field(default_factory=list)
    in_flight: int | None = None
    kill_s: float = 0.0  # how long kill9 (SIGKILL + reaping the image processes) took
    ready_after_s: float | None = None  # replacement ready (assigned partitions), after the kill
    first_s: float | None = None
    all_s: float | None = None
    unresumed: list[int] = field(default_factory=list)
    lag_at: int | None = None
    lag_peak: int | None = None
    lag_peak_after_s: float | None = None
    lag_back_s: float | None = None  # back to the lag at the kill (None: not before next kill)
    #: from the workers' logs: the survivor assigned the dead worker's partitions; the
    #: replacement's faust app ready; the replacement's uploads feed assigned partitions
    survivor_took_s: float | None = None
    faust_ready_s: float | None = None
    replacement_took_s: float | None = None


@dataclass
class Storm:
    published: list[Published] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    lag_samples: list[tuple[float, int]] = field(default_factory=list)
    publish_began: float = 0.0
    publish_ended: float = 0.0
    drained_at: float = 0.0
    drain_timed_out: bool = False
    lag_after: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    publish_error: str | None = None
    worker_error: str | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)


# --------------------------------------------------------------------------- background threads


class PublisherThread(threading.Thread):
    """Publishes ``count`` uploads at ``rate`` per second (paced on a schedule, not on sleeps
    between sends, so a slow send is caught up and the mean rate holds)."""

    def __init__(self, pipeline: PipelineEnv, sources: list[bytes], storm: Storm, *,
                 count: int, rate: float, corrupt_every: int) -> None:
        super().__init__(name="publisher", daemon=True)
        self.pipeline, self.sources, self.storm = pipeline, sources, storm
        self.count, self.rate, self.corrupt_every = count, rate, corrupt_every
        self.began = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except Exception as exc:  # reported, and the run stops publishing
            self.storm.publish_error = repr(exc)
            say(f"publisher failed: {exc!r}")
        finally:
            self.storm.publish_ended = time.time()
            self.began.set()

    async def _publish(self) -> None:
        async with Publisher(self.pipeline.settings()) as publisher:
            t0 = time.monotonic()
            self.storm.publish_began = time.time()
            self.began.set()
            for i in range(self.count):
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                data = self.sources[i % len(self.sources)]
                broken = self.corrupt_every > 0 and i % self.corrupt_every == self.corrupt_every // 2
                if broken:
                    data = data[: len(data) // 3]
                upload = await publisher.publish_bytes(data, RENDITIONS, image_id=f"img-{i}")
                self.storm.published.append(Published(upload.event_id, upload.partition,
                                                      upload.offset, time.time(), broken))


class LagSampler(threading.Thread):
    """The uploads group's lag (log end minus committed, all partitions) every few seconds."""

    def __init__(self, pipeline: PipelineEnv, storm: Storm) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.pipeline, self.storm = pipeline, storm
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._sample())
        except Exception as exc:  # the run goes on without samples
            say(f"lag sampler failed: {exc!r}")

    async def _sample(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        settings = self.pipeline.settings()
        topic = uploads_topic(self.pipeline.prefix)
        parts = [TopicPartition(topic, p) for p in range(settings.upload_partitions)]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.pipeline.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.pipeline.bootstrap, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            while not self.stopping.is_set():
                try:
                    ends = await consumer.end_offsets(parts)
                    committed = await admin.list_consumer_group_offsets(
                        settings.uploads_group, partitions=parts)
                    lag = sum(ends[tp] - max(0, committed[tp].offset if tp in committed else 0)
                              for tp in parts)
                    self.storm.lag_samples.append((time.time(), lag))
                except Exception as exc:  # a sample missed is not a failure of the run
                    say(f"lag sample failed: {exc!r}")
                await asyncio.sleep(LAG_EVERY_S)
        finally:
            await consumer.stop()
            await admin.close()


# --------------------------------------------------------------------------- the run


def plan_kills(rng: random.Random, kills: int, publish_s: float) -> list[tuple[float, int]]:
    """(seconds after publishing began, which of the two workers) per kill: one kill at a
    random moment of each equal slice of the publishing time (kept off the slice's edges so
    two kills are never back to back)."""
    slot = publish_s / kills
    return [(slot * k + rng.uniform(0.2, 0.8) * slot, rng.randrange(2)) for k in range(kills)]


def worker_partitions(worker: WorkerProcess) -> tuple[list[int], int | None]:
    """The uploads partitions the worker serves and its uploads in flight (its ``/status``);
    its log's last assignment line when the endpoint does not answer."""
    try:
        _status, body = worker.get("/status", timeout=2)
        uploads = body.get("uploads") or {}
        return list(uploads.get("assigned", [])), uploads.get("in_flight")
    except OSError:
        lines = re.findall(r"uploads feed assigned \d+ partitions: ([\d,\-]*)", worker.log())
        last = lines[-1] if lines else ""
        return [int(p) for p in last.split(",") if p.isdigit()], None


def run_storm(pipeline: PipelineEnv, sources: list[bytes], args: argparse.Namespace,
              env: dict[str, str]) -> Storm:
    storm = Storm(started=time.time())
    rng = random.Random(args.seed)
    plan = plan_kills(rng, args.kills, args.uploads / args.rate)
    serial = 0

    def start() -> tuple[str, WorkerProcess]:
        nonlocal serial
        serial += 1
        name = f"w{serial}"
        worker = pipeline.start_worker(name, **env)
        storm.workers[name] = worker
        return name, worker

    workers: list[tuple[str, WorkerProcess]] = []
    everyone: list[WorkerProcess] = []
    sampler = LagSampler(pipeline, storm)
    publisher = PublisherThread(pipeline, sources, storm, count=args.uploads, rate=args.rate,
                                corrupt_every=args.corrupt_every)
    try:
        for _ in range(2):
            workers.append(start())
            everyone.append(workers[-1][1])
        say("two workers ready: " + ", ".join(
            f"{name} partitions {worker_partitions(w)[0]}" for name, w in workers))
        sampler.start()
        publisher.start()
        publisher.began.wait(60)
        t0 = storm.publish_began
        next_note = time.time() + 15
        for number, (planned, which) in enumerate(plan, 1):
            while time.time() < t0 + planned and publisher.is_alive():
                time.sleep(0.05)
                if time.time() >= next_note:
                    next_note += 15
                    lag = storm.lag_samples[-1][1] if storm.lag_samples else "?"
                    say(f"{len(storm.published)} published, lag {lag}")
            if not publisher.is_alive():
                say("publishing ended before every kill was done")
                break
            name, victim = workers[which]
            kill = Kill(number=number, planned_s=planned, victim=name,
                        survivor=workers[1 - which][0])
            kill.partitions, kill.in_flight = worker_partitions(victim)
            kill.published_before = len(storm.published)
            kill.at = time.time()
            victim.kill9()
            kill.kill_s = time.time() - kill.at
            storm.kills.append(kill)
            replacement_name, replacement = start()
            kill.replacement = replacement_name
            kill.ready_after_s = time.time() - kill.at
            workers[which] = (replacement_name, replacement)
            everyone.append(replacement)
            say(f"kill {number}: {name} (partitions {kill.partitions}, {kill.in_flight} in "
                f"flight) at {kill.at - t0:.1f} s, {kill.published_before} published; "
                f"{replacement_name} ready {kill.ready_after_s:.1f} s later")
        while publisher.is_alive():
            publisher.join(15)
            lag = storm.lag_samples[-1][1] if storm.lag_samples else "?"
            say(f"{len(storm.published)} published, lag {lag}")
        say(f"publishing done: {len(storm.published)} in "
            f"{storm.publish_ended - storm.publish_began:.0f} s; waiting for the drain")
        ids = [p.event_id for p in storm.published]
        storm.drain_timed_out = not wait_for_outcomes(pipeline, ids, args.drain_timeout)
        storm.lag_after = drained_lag(pipeline, timeout=60)
        storm.drained_at = time.time()
        time.sleep(2 * LAG_EVERY_S)  # a last lag sample or two after the drain
    except AssertionError as exc:  # a worker that did not come up: report what ran
        storm.worker_error = str(exc).splitlines()[0]
        say(f"stopped early: {storm.worker_error}")
        if publisher.is_alive():
            say("waiting for the publisher to finish")
            publisher.join()
        ids = [p.event_id for p in storm.published]
        storm.drain_timed_out = not wait_for_outcomes(pipeline, ids, args.drain_timeout)
        storm.lag_after = drained_lag(pipeline, timeout=60)
        storm.drained_at = time.time()
    finally:
        sampler.stopping.set()
        for worker in everyone:
            if worker.process.poll() is None:
                worker.stop()
        stop_stray_workers()
        sampler.join(10)
    storm.ended = time.time()
    return storm


def stop_stray_workers() -> None:
    """A worker whose start timed out is not in our list: stop any ``pixelpipe worker`` this
    process started (its own children, by pid)."""
    import psutil

    for child in psutil.Process().children():
        try:
            if "worker" in child.cmdline() and "pixelpipe" in " ".join(child.cmdline()):
                say(f"stopping stray worker pid {child.pid}")
                child.terminate()
                try:
                    child.wait(30)
                except psutil.TimeoutExpired:
                    child.kill()
        except psutil.NoSuchProcess:
            pass


def wait_for_outcomes(pipeline: PipelineEnv, ids: list[str], timeout: float) -> bool:
    """Until every id has an outcome on the processed or dead-letter topic; False on timeout."""
    missing = set(ids)
    parsed = 0

    def until(records: list[Any]) -> bool:
        nonlocal parsed
        for record in records[parsed:]:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                missing.discard(orjson.loads(record.value).get("event_id"))
        parsed = len(records)
        return not missing

    try:
        wait_for_records(pipeline.bootstrap,
                         [processed_topic(pipeline.prefix), dlq_topic(pipeline.prefix)],
                         until, timeout=timeout, what="an outcome for every upload")
    except AssertionError as exc:
        say(f"drain: {exc}")
        return False
    return True


# --------------------------------------------------------------------------- judging it


@dataclass
class Verdict:
    uploads: int = 0
    corrupt: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_records: int = 0
    duplicated_ids: int = 0
    duplicated_processed: int = 0
    not_idempotent: list[str] = field(default_factory=list)
    mixed: int = 0  # an id both processed and dead-lettered
    dead_codes: Counter[str] = field(default_factory=Counter)
    dead_ids: int = 0
    wrong: list[str] = field(default_factory=list)
    levels: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    tiers: list[str] = field(default_factory=list)
    processing_ms: list[float] = field(default_factory=list)


def judge(pipeline: PipelineEnv, storm: Storm) -> Verdict:
    prefix = pipeline.prefix
    settings = pipeline.settings()
    tiers = [retry_topic(name, prefix) for name, _ in settings.retry_tiers]
    records = read_to_end(pipeline.bootstrap, [processed_topic(prefix), dlq_topic(prefix), *tiers],
                          timeout=120)
    partition_of = {p.event_id: p.partition for p in storm.published}
    processed: dict[str, list[tuple[tuple[str, str, str], ...]]] = {}
    dead: dict[str, list[str]] = {}
    outcome_times: dict[int, list[float]] = {}
    verdict = Verdict(uploads=len(storm.published),
                      corrupt=sum(1 for p in storm.published if p.corrupt),
                      tiers=[name for name, _ in settings.retry_tiers])
    for record in records:
        if record.topic in tiers:
            verdict.retries += 1
            continue
        if record.topic == dlq_topic(prefix):
            letter = decode_deadletter(record.value)
            event_id = letter.event_id
            dead.setdefault(event_id, []).append(letter.error.code)
        else:
            body = orjson.loads(record.value)
            event_id = body["event_id"]
            verdict.levels[str(body.get("level", "full"))] += 1
            verdict.processing_ms.append(float(body.get("processing_ms", 0.0)))
            processed.setdefault(event_id, []).append(tuple(sorted(
                (r["name"], r["uri"], r["sha256"]) for r in body["renditions"])))
        if event_id in partition_of:
            outcome_times.setdefault(partition_of[event_id], []).append(record.timestamp / 1000)
    for times in outcome_times.values():
        times.sort()
    for upload in storm.published:
        keys = processed.get(upload.event_id, [])
        codes = dead.get(upload.event_id, [])
        n = len(keys) + len(codes)
        if n == 0:
            verdict.lost.append(upload.event_id)
            continue
        if n > 1:
            verdict.duplicated_ids += 1
            verdict.duplicate_records += n - 1
        if len(keys) > 1:
            verdict.duplicated_processed += 1
            if len(set(keys)) > 1:
                verdict.not_idempotent.append(upload.event_id)
        if keys and codes:
            verdict.mixed += 1
        if codes:
            verdict.dead_ids += 1
            verdict.dead_codes.update(set(codes))
        statuses = ({"processed"} if keys else set()) | set(codes)
        if statuses != ({"corrupt_image"} if upload.corrupt else {"processed"}):
            verdict.wrong.append(upload.event_id)
    for number, kill in enumerate(storm.kills):
        firsts: list[float] = []
        for p in kill.partitions:
            after = next((t for t in outcome_times.get(p, []) if t > kill.at), None)
            if after is None:
                kill.unresumed.append(p)
            else:
                firsts.append(after - kill.at)
        if firsts:
            kill.first_s, kill.all_s = min(firsts), max(firsts)
        until = (storm.kills[number + 1].at if number + 1 < len(storm.kills)
                 else storm.drained_at or storm.ended)
        lag_recovery(kill, storm.lag_samples, until)
    return verdict


LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] (.*)$", re.M)
ASSIGNED = re.compile(r"uploads feed assigned \d+ partitions: ([\d,]*)")


def log_events(worker: WorkerProcess) -> list[tuple[float, str]]:
    """(wall clock, message) of each line of a worker's log (logged in local time)."""
    out = []
    for stamp, message in LOG_LINE.findall(worker.log()):
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 - local, as logged
        out.append((when.timestamp(), message))
    return out


def takeover_times(storm: Storm) -> None:
    """Per kill, from the workers' logs: when the survivor's uploads feed was assigned every
    partition of the dead worker, when the replacement's faust app was ready and when its
    uploads feed got partitions (seconds after the kill)."""
    events = {name: log_events(worker) for name, worker in storm.workers.items()}
    for kill in storm.kills:
        for when, message in events.get(kill.survivor, []):
            match = ASSIGNED.search(message)
            if when > kill.at and match and set(kill.partitions) <= {
                    int(p) for p in match.group(1).split(",") if p}:
                kill.survivor_took_s = when - kill.at
                break
        for when, message in events.get(kill.replacement, []):
            if kill.faust_ready_s is None and "Worker ready" in message:
                kill.faust_ready_s = when - kill.at
            match = ASSIGNED.search(message)
            if match and match.group(1):
                kill.replacement_took_s = when - kill.at
                break


def lag_recovery(kill: Kill, samples: list[tuple[float, int]], until: float) -> None:
    """From the lag samples: the lag at the kill (median of the 20 s before it), its peak
    before the next kill (when it starts falling again), and when it is back to that level."""
    before = [lag for t, lag in samples if kill.at - 20 <= t <= kill.at]
    window = [(t, lag) for t, lag in samples if kill.at < t <= until]
    if not before or not window:
        return
    kill.lag_at = round(statistics.median(before))
    peak_t, peak = max(window, key=lambda s: (s[1], -s[0]))
    kill.lag_peak, kill.lag_peak_after_s = peak, peak_t - kill.at
    back = next((t for t, lag in window if t > peak_t and lag <= kill.lag_at), None)
    kill.lag_back_s = None if back is None else back - kill.at


# --------------------------------------------------------------------------- the report


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(args: argparse.Namespace, storm: Storm, verdict: Verdict, env: dict[str, str],
             machine: str) -> tuple[str, str]:
    """(the section, the summary-table row)."""
    publish_s = storm.publish_ended - storm.publish_began
    achieved = len(storm.published) / publish_s if publish_s > 0 else 0.0
    alls = [k.all_s for k in storm.kills if k.all_s is not None]
    peak = max((lag for _t, lag in storm.lag_samples), default=0)
    median_ms = statistics.median(verdict.processing_ms) if verdict.processing_ms else 0.0
    capacity = args.max_inflight / (median_ms / 1000) if median_ms else 0.0
    load = (f"{args.rate:g}/s against about {2 * capacity:.1f}/s for the two workers "
            f"({args.rate / (2 * capacity):.0%}; one worker: {args.max_inflight} in flight / "
            f"median processing {median_ms:.0f} ms = {capacity:.1f}/s)" if capacity else "-")
    lag_after = sum(storm.lag_after.values())
    dead = ", ".join(f"{code} {n}" for code, n in verdict.dead_codes.most_common()) or "none"
    idempotent = ("yes" if not verdict.not_idempotent else
                  f"**no: {len(verdict.not_idempotent)}**")
    complete = (storm.publish_error is None and storm.worker_error is None
                and len(storm.kills) == args.kills and len(storm.published) == args.uploads)
    command = (
        f"`flock -s /tmp/pixelpipe-bench.lock .venv/bin/python benchmarks/chaos/bench_kill_storm.py "
        f"--bootstrap {args.bootstrap} --uploads {args.uploads} --kills {args.kills} "
        f"--rate {args.rate:g} --seed {args.seed} --fetch-delay {args.fetch_delay} "
        f"--max-inflight {args.max_inflight} --corrupt-every {args.corrupt_every} "
        f"--results benchmarks/chaos/RESULTS.md` (broker: `KAFKA_PORT={args.bootstrap.rsplit(':', 1)[-1]} "
        "infra/kafka.sh up`)"
    )
    lines = [
        SECTION,
        "",
        f"Command: {command}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(storm.started))} on {machine}. "
        f"Two workers in the uploads group (6 partitions, 2 image processes each). "
        f"{args.uploads:,} uploads (small crops of the shared photos as in the takeover drill, "
        f"every {args.corrupt_every}th truncated on purpose, expected `corrupt_image`) published "
        f"at a steady {args.rate:g}/s; at {args.kills} random moments (`random.Random("
        f"{args.seed})`, one in each of {args.kills} equal slices of the publishing time) one "
        "of the two workers, "
        "chosen at random, is SIGKILLed with its image processes (`WorkerProcess.kill9`) and a "
        f"replacement started at once. Workers run with `{env}` so several uploads are in "
        "flight at each kill. After publishing, the drain is awaited, then the processed and "
        "dead-letter topics are read to their end for every published event id.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| uploads published | {len(storm.published):,} ({verdict.corrupt} truncated on purpose) |",
        f"| publish rate achieved | {achieved:.2f}/s over {publish_s:.0f} s |",
        f"| load | {load} |",
        f"| kill -9 of a worker (replacement started at once) | {len(storm.kills)} |",
        f"| uploads in flight on the killed worker at each kill | "
        f"{', '.join(str(k.in_flight) for k in storm.kills) or '-'} |",
        f"| **lost (no outcome anywhere)** | **{len(verdict.lost)}** |",
        f"| outcome different from expected | {len(verdict.wrong)} |",
        f"| duplicate outcome records (same event id more than once) | "
        f"{verdict.duplicate_records} (over {verdict.duplicated_ids} event ids) |",
        f"| duplicates idempotent (same output keys and checksums in every processed copy) | "
        f"{idempotent} ({verdict.duplicated_processed} ids processed more than once; "
        f"{verdict.mixed} both processed and dead-lettered) |",
        f"| dead-lettered (event ids) | {verdict.dead_ids}: {dead} |",
        f"| retry records (tiers {', '.join(verdict.tiers)}) | {verdict.retries} |",
        f"| service level of processed records | "
        f"{', '.join(f'{lvl} {n}' for lvl, n in verdict.levels.most_common()) or '-'} |",
        f"| recovery per kill, all the killed worker's partitions served again (s) | "
        f"{', '.join(fmt_s(k.all_s) for k in storm.kills) or '-'} |",
        f"| peak uploads lag (records, 2 s samples) | {peak} |",
        f"| drain after publishing ended | "
        f"{'**timed out**' if storm.drain_timed_out else f'{storm.drained_at - storm.publish_ended:.0f} s'} |",
        f"| **uploads lag after drain** | **{lag_after}** |",
        f"| wall time (workers up to workers stopped) | {storm.ended - storm.started:.0f} s |",
        "",
        "Per kill. *Recovery*: from the SIGKILL to the first outcome record (processed or dead "
        "letter, Kafka record timestamp) of an upload of each partition the killed worker held "
        "(read from its `/status` just before the kill); *first* is the earliest of its "
        "partitions, *all* the latest. *Survivor / replacement*: from the workers' logs, when "
        "the survivor's uploads feed was assigned the dead worker's partitions, and when the "
        "replacement's faust app was ready and its uploads feed got partitions. *Lag*: the "
        "uploads group's log end minus committed offsets, sampled every 2 s; *at kill* is the "
        "median of the samples in the 20 s before it; the peak is where it starts falling "
        "again; *back* is when it is again at its level at the kill (- : not before the next "
        "kill or the drain).",
        "",
        "| kill | at (s into publishing) | published by then | killed (in flight) -> replacement "
        "| its partitions | kill9 took (s) | survivor assigned them after (s) "
        "| replacement faust ready / uploads assigned after (s) | recovery first / all (s) "
        "| lag at kill -> peak (s after kill) | lag back after (s) |",
        "|---:|---:|---:|---|---|---:|---:|---|---|---|---:|",
    ]
    for k in storm.kills:
        unresumed = f" (not resumed: {k.unresumed})" if k.unresumed else ""
        lines.append(
            f"| {k.number} | {k.at - storm.publish_began:.1f} | {k.published_before:,} "
            f"| {k.victim} ({k.in_flight}) -> {k.replacement} "
            f"| {','.join(map(str, k.partitions))} | {k.kill_s:.1f} | {fmt_s(k.survivor_took_s)} "
            f"| {fmt_s(k.faust_ready_s)} / {fmt_s(k.replacement_took_s)} "
            f"| {fmt_s(k.first_s)} / {fmt_s(k.all_s)}{unresumed} "
            f"| {k.lag_at if k.lag_at is not None else '-'} -> "
            f"{k.lag_peak if k.lag_peak is not None else '-'} ({fmt_s(k.lag_peak_after_s)}) "
            f"| {fmt_s(k.lag_back_s)} |"
        )

    def median_of(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{statistics.median(known):.1f}" if known else "-"

    if storm.kills:
        lines += [
            "",
            "What the figures show. The broker expires the dead worker's membership of the "
            "uploads group after its 10 s session (`uploads_feed.py`); the survivor is then "
            "assigned all six partitions (median "
            f"{median_of([k.survivor_took_s for k in storm.kills])} s after the kill) and serves "
            "the dead worker's backlog (the spread between *first* and *all*: the feed is handed "
            "one partition's fetched records at a time by `getmany`, seen in a worker log). The "
            "replacement's "
            "uploads feed starts only after faust's app group has rebalanced, which waits for "
            "the dead member's faust session (`broker_session_timeout=30.0` in "
            "`pixelpipe/agents/app.py`): faust ready a median "
            f"{median_of([k.faust_ready_s for k in storm.kills])} s, uploads assigned "
            f"{median_of([k.replacement_took_s for k in storm.kills])} s after the kill."
            + (f" Until then one worker carries the whole {args.rate:g}/s against its "
               f"{capacity:.1f}/s, so the lag grows until the replacement takes its share "
               "(peak a median "
               f"{median_of([k.lag_peak_after_s for k in storm.kills])} s after the kill), "
               "then falls." if capacity and args.rate > capacity else ""),
        ]
    if not complete:
        lines += ["", "**Incomplete run:** "
                  + "; ".join(x for x in (
                      storm.publish_error and f"publisher: {storm.publish_error}",
                      storm.worker_error and f"worker: {storm.worker_error}",
                      f"{len(storm.kills)} of {args.kills} kills",
                      f"{len(storm.published)} of {args.uploads} uploads") if x) + "."]
    recovery = (f"the killed worker's partitions served again {min(alls):.1f}-{max(alls):.1f} s "
                f"after each kill (median {statistics.median(alls):.1f}); lag {lag_after} after "
                "drain" if alls else f"lag {lag_after} after drain")
    row = (f"| kill storm: {len(storm.kills)} kill -9 of a worker at random moments in a "
           f"two-worker group, uploads at {args.rate:g}/s | {ROW_MARK} (below) "
           f"| {len(storm.published):,} | **{len(verdict.lost)}** "
           f"| {verdict.duplicate_records} ({'idempotent' if not verdict.not_idempotent else 'NOT all idempotent'}) "
           f"| {verdict.dead_ids}"
           f"{' (only the truncated-on-purpose inputs)' if not verdict.wrong and verdict.dead_ids == verdict.corrupt else ''} "
           f"| {recovery} |")
    return "\n".join(lines) + "\n", row


def update_results(path: Path, section: str, row: str) -> None:
    text = path.read_text()
    # 1. this run's section: replaced, or appended
    start = text.find(SECTION)
    if start >= 0:
        nxt = text.find("\n## ", start + len(SECTION))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section + ("\n" if nxt >= 0 else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    # 2. the summary-table row: replaced, or put after the takeovers row
    lines = text.split("\n")
    mine = [i for i, line in enumerate(lines) if line.startswith("|") and ROW_MARK in line]
    if mine:
        lines[mine[0]] = row
    else:
        after = next((i for i, line in enumerate(lines)
                      if line.startswith("| takeovers with uploads in flight")), None)
        if after is None:  # the first data row of the first table
            after = next(i for i, line in enumerate(lines) if line.startswith("|---"))
        lines.insert(after + 1, row)
    text = "\n".join(lines)
    # 3. the "Not yet run" paragraph: this scenario is no longer in it
    match = re.search(r"Not yet run \(issue 14 asks for (?:them|it)\):(.*?)(?:\n\n|\Z)", text, re.S)
    if match:
        items = [item.strip() for item in re.split(r";\s*", " ".join(match.group(1).split()))]
        items = [item.rstrip(".") for item in items if item and not item.startswith("5,000 uploads")]
        if items:
            paragraph = (f"Not yet run (issue 14 asks for {'them' if len(items) > 1 else 'it'}): "
                         + "; ".join(items) + ".")
            paragraph = wrap(paragraph, 95) + "\n\n"
        else:
            paragraph = ""
        text = text[:match.start()] + paragraph + text[match.end():]
    path.write_text(text)


def wrap(text: str, width: int) -> str:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:39092")
    parser.add_argument("--uploads", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=15.0, help="uploads published per second")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--fetch-delay", default="400ms",
                        help="fetch delay fault per upload (bounds each worker's capacity)")
    parser.add_argument("--max-inflight", type=int, default=4)
    parser.add_argument("--corrupt-every", type=int, default=100)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs into this folder")
    parser.add_argument("--results", type=Path,
                        help="RESULTS.md to update (section, summary row, 'Not yet run')")
    args = parser.parse_args()
    env = {"PIXELPIPE_FAULTS": f"fetch:delay={args.fetch_delay}:always",
           "PIXELPIPE_MAX_INFLIGHT": str(args.max_inflight)}
    load = os.getloadavg()
    machine = (f"{platform.machine()}, CPython {platform.python_version()}, {os.cpu_count()} "
               f"cores shared with other runs (load average {load[0]:.1f} at the start), one "
               "local KRaft broker (`infra/kafka.sh`, Kafka 3.9.1)")
    with tempfile.TemporaryDirectory(prefix="pixelpipe-storm-") as tmp:
        root = Path(tmp)
        sources = [img.path.read_bytes() for img in mixed_images(root / "src", 12, max_side=400)
                   if img.path.suffix in (".jpg", ".png", ".webp")]
        pipeline = PipelineEnv(bootstrap=args.bootstrap, root=root)
        say(f"prefix {pipeline.prefix}; {args.uploads} uploads at {args.rate:g}/s, "
            f"{args.kills} kills, worker env {env}")
        storm = run_storm(pipeline, sources, args, env)
        verdict = judge(pipeline, storm)
        try:
            takeover_times(storm)
        except Exception as exc:  # the log figures are extras: never lose the run over them
            say(f"could not read takeover times from the logs: {exc!r}")
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in root.glob("worker-*.log"):
                shutil.copy(log, args.keep_logs / log.name)
    section, row = markdown(args, storm, verdict, env, machine)
    print(section)
    print(row)
    if verdict.lost:
        print("lost:", ", ".join(verdict.lost[:50]))
    if verdict.wrong:
        print("unexpected outcome:", ", ".join(verdict.wrong[:50]))
    if args.results:
        update_results(args.results, section, row)
        say(f"updated {args.results}")
    ok = (not verdict.lost and not verdict.wrong and not verdict.not_idempotent
          and not sum(storm.lag_after.values()) and not storm.drain_timed_out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
