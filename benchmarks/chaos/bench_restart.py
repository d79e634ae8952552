"""Restart after a kill -9: how soon a replacement worker processes uploads again.

One worker serves the uploads group alone (a single-worker deployment) while uploads are
published at a steady rate. Each round SIGKILLs it with its image processes
(``WorkerProcess.kill9``) and at once starts a replacement, as an orchestrator would, then
measures from outside, relative to the moment the replacement process was started:

- **first processed**: the Kafka timestamp of the first processed event written after the
  kill (only the replacement is alive to write it), minus the start;
- **all partitions served**: the latest, over the uploads partitions, of each partition's
  first processed event after the kill (an upload of that partition; the backlog built up
  during the outage is on every partition, so this shows whether one partition's backlog
  holds the others up);
- **uploads group owns all**: the first time the uploads group, described by an admin client
  every 0.2 s, is ``Stable`` with one member holding every partition;
- **faust group stable**: the same for faust's own group (the app id), one member;
- **ready**: when the harness's ``wait_ready`` returned (faust's "Worker ready", the feed and
  the retry scheduler assigned, ``/ready`` 200).

Afterwards every published upload must have an outcome (processed or dead letter), read from
the topics: restarts faster must not lose anything. A broker first::

    KAFKA_PORT=29092 infra/kafka.sh up
    flock -s /tmp/pixelpipe-bench.lock nice -n 5 .venv/bin/python \\
        benchmarks/chaos/bench_restart.py --bootstrap 127.0.0.1:29092 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import PipelineEnv, WorkerProcess, read_to_end  # noqa: E402
from images import mixed_images  # noqa: E402
from takeover_drill import RENDITIONS  # noqa: E402

from pixelpipe.streams.client import Publisher  # noqa: E402
from pixelpipe.streams.topics import dlq_topic, processed_topic  # noqa: E402


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


@dataclass(slots=True)
class Round:
    number: int
    killed_at: float = 0.0  # wall clock of the SIGKILL
    started_at: float = 0.0  # wall clock just before the replacement's Popen
    ready_s: float | None = None
    first_s: float | None = None
    all_partitions_s: float | None = None
    uploads_group_s: float | None = None
    faust_group_s: float | None = None
    #: from the replacement's log, for the explanation: faust "Worker ready", feed assigned
    log_faust_ready_s: float | None = None
    log_feed_assigned_s: float | None = None


@dataclass
class Run:
    #: event id -> uploads partition
    published: dict[str, int] = field(default_factory=dict)
    #: (record timestamp s, event id) of every processed event seen
    processed: list[tuple[float, str]] = field(default_factory=list)
    #: (wall clock, group, state, [(member id, its uploads partitions)]) samples
    groups: list[tuple[float, str, str, list[tuple[str, set[int]]]]] = field(
        default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None


class Publishing(threading.Thread):
    """Publishes at ``rate`` per second (on a schedule) until stopped."""

    def __init__(self, pipeline: PipelineEnv, sources: list[bytes], run: Run,
                 rate: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.pipeline, self.sources, self.run_, self.rate = pipeline, sources, run, rate
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except Exception as exc:
            self.run_.error = f"publisher: {exc!r}"
            say(f"publisher failed: {exc!r}")

    async def _publish(self) -> None:
        async with Publisher(self.pipeline.settings()) as publisher:
            t0, i = time.monotonic(), 0
            while not self.stopping.is_set():
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                data = self.sources[i % len(self.sources)]
                upload = await publisher.publish_bytes(data, RENDITIONS, image_id=f"img-{i}")
                with self.run_.lock:
                    self.run_.published[upload.event_id] = upload.partition
                i += 1


class Watching(threading.Thread):
    """Tails the processed topic and describes both consumer groups every 0.2 s."""

    def __init__(self, pipeline: PipelineEnv, run: Run) -> None:
        super().__init__(name="watcher", daemon=True)
        self.pipeline, self.run_ = pipeline, run
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._watch())
        except Exception as exc:
            self.run_.error = f"watcher: {exc!r}"
            say(f"watcher failed: {exc!r}")

    async def _watch(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        settings = self.pipeline.settings()
        consumer = AIOKafkaConsumer(
            processed_topic(self.pipeline.prefix), bootstrap_servers=self.pipeline.bootstrap,
            group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_wait_ms=100)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.pipeline.bootstrap,
                                    request_timeout_ms=3000)
        await consumer.start()
        await admin.start()
        groups = {settings.uploads_group: "uploads", settings.app_id: "faust"}
        last_describe = 0.0
        try:
            while not self.stopping.is_set():
                for items in (await consumer.getmany(timeout_ms=100)).values():
                    with self.run_.lock:
                        self.run_.processed.extend(
                            (r.timestamp / 1000, orjson.loads(r.value)["event_id"])
                            for r in items)
                if time.monotonic() - last_describe >= 0.2:
                    last_describe = time.monotonic()
                    with contextlib.suppress(Exception):  # a sample missed is not a failure
                        await self._describe(admin, groups)
        finally:
            await consumer.stop()
            await admin.close()

    async def _describe(self, admin: Any, groups: dict[str, str]) -> None:
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        topic = f"{self.pipeline.prefix}.uploads"
        now = time.time()
        # one group per request: aiokafka 0.14 fails to decode a DescribeGroups response of
        # two groups here ("Buffer underrun decoding string") and drops the connection
        for group in groups:
            coordinator = await asyncio.wait_for(admin.find_coordinator(group), 3)
            (response,) = await asyncio.wait_for(
                admin.describe_consumer_groups([group], coordinator), 3)
            for desc in response.to_object()["groups"]:
                members: list[tuple[str, set[int]]] = []
                for member in desc["members"]:
                    parts: set[int] = set()
                    if member["member_assignment"]:
                        decoded = ConsumerProtocolMemberAssignment.decode(
                            member["member_assignment"])
                        for name, numbers in decoded.assignment:
                            if name == topic:
                                parts.update(numbers)
                    members.append((member["member_id"], parts))
                with self.run_.lock:
                    self.run_.groups.append((now, groups[desc["group"]], desc["state"],
                                             members))


def measure(rnd: Round, run: Run, partitions: int) -> bool:
    """Fill in what the samples show for ``rnd``; True when every figure is known."""
    with run.lock:
        processed = list(run.processed)
        published = dict(run.published)
        groups = list(run.groups)
    start = rnd.started_at
    firsts: dict[int, float] = {}
    for stamp, event_id in processed:
        if stamp > rnd.killed_at and event_id in published:
            part = published[event_id]
            firsts[part] = min(stamp, firsts.get(part, stamp))
    if firsts:
        rnd.first_s = min(firsts.values()) - start
    if len(firsts) == partitions:
        rnd.all_partitions_s = max(firsts.values()) - start
    # the killed worker's members stay listed (the group even looks Stable) until the broker
    # expires their sessions: only a member not seen before the kill counts
    old = {(group, member) for when, group, _state, members in groups
           if when <= rnd.killed_at for member, _parts in members}
    for when, group, state, members in groups:
        if when <= start or state != "Stable" or len(members) != 1 or \
                (group, members[0][0]) in old:
            continue
        if group == "uploads" and rnd.uploads_group_s is None and \
                members[0][1] == set(range(partitions)):
            rnd.uploads_group_s = when - start
        if group == "faust" and rnd.faust_group_s is None:
            rnd.faust_group_s = when - start
    return None not in (rnd.first_s, rnd.all_partitions_s, rnd.uploads_group_s,
                        rnd.faust_group_s)


def from_log(rnd: Round, worker: WorkerProcess) -> None:
    """When the replacement logged faust's "Worker ready" and its feed's first assignment."""
    from datetime import datetime

    for line in worker.log().splitlines():
        if not line.startswith("[20"):
            continue
        with contextlib.suppress(ValueError):
            # local time, as logged
            when = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007
            if rnd.log_faust_ready_s is None and "Worker ready" in line:
                rnd.log_faust_ready_s = when - rnd.started_at
            if rnd.log_feed_assigned_s is None and "uploads feed assigned" in line \
                    and "assigned 0 " not in line:
                rnd.log_feed_assigned_s = when - rnd.started_at


def stop_stray_workers() -> None:
    """A worker whose start was interrupted is in no list: stop every ``pixelpipe worker``
    this process started (its own children, by pid)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "worker" in child.cmdline() and "pixelpipe" in child.cmdline():
                child.terminate()
                child.wait(60)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:29092")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4.0, help="uploads published per second")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--image-processes", type=int, default=1)
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds of steady processing before each kill")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="longest wait for a round's figures")
    parser.add_argument("--fetch-delay", help="a fetch delay fault per upload, e.g. 250ms "
                        "(bounds the worker's rate, so the outage's backlog takes a while)")
    parser.add_argument("--max-inflight", type=int, help="PIXELPIPE_MAX_INFLIGHT")
    args = parser.parse_args()
    load = os.getloadavg()
    say(f"{platform.machine()}, CPython {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f}")
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="pixelpipe-restart-") as tmp:
        root = Path(tmp)
        sources = [img.path.read_bytes() for img in mixed_images(root / "src", 8, max_side=320)
                   if img.path.suffix in (".jpg", ".png", ".webp")]
        pipeline = PipelineEnv(bootstrap=args.bootstrap, root=root, workers=args.image_processes)
        env = {"PIXELPIPE_UPLOAD_PARTITIONS": str(args.partitions)}
        if args.fetch_delay:
            env["PIXELPIPE_FAULTS"] = f"fetch:delay={args.fetch_delay}:always"
        if args.max_inflight:
            env["PIXELPIPE_MAX_INFLIGHT"] = str(args.max_inflight)
        say(f"worker env {env}, {args.rate:g} uploads/s")
        run = Run()
        worker = pipeline.start_worker("w0", **env)  # declares the topics
        say(f"prefix {pipeline.prefix}: first worker ready")
        publisher, watcher = Publishing(pipeline, sources, run, args.rate), Watching(pipeline, run)
        watcher.start()
        publisher.start()
        workers = [worker]
        try:
            for number in range(1, args.rounds + 1):
                time.sleep(args.settle)
                rnd = Round(number)
                rnd.killed_at = time.time()
                worker.kill9()
                rnd.started_at = time.time()
                worker = pipeline.start_worker(f"w{number}", **env)
                workers.append(worker)
                rnd.ready_s = time.time() - rnd.started_at
                deadline = time.monotonic() + args.timeout
                while not measure(rnd, run, args.partitions) and time.monotonic() < deadline:
                    time.sleep(0.2)
                from_log(rnd, worker)
                rounds.append(rnd)
                say(f"round {number}: kill9 took {rnd.started_at - rnd.killed_at:.1f} s; after "
                    f"the start: first processed {fmt(rnd.first_s)} s, all partitions served "
                    f"{fmt(rnd.all_partitions_s)} s, uploads group owns all "
                    f"{fmt(rnd.uploads_group_s)} s, faust group stable "
                    f"{fmt(rnd.faust_group_s)} s, ready {fmt(rnd.ready_s)} s (log: faust ready "
                    f"{fmt(rnd.log_faust_ready_s)} s, feed assigned "
                    f"{fmt(rnd.log_feed_assigned_s)} s)")
            publisher.stopping.set()
            publisher.join(30)
            ids = set(run.published)
            deadline = time.monotonic() + args.timeout
            outcomes: set[str] = set()
            while time.monotonic() < deadline:
                records = read_to_end(pipeline.bootstrap, [processed_topic(pipeline.prefix),
                                                           dlq_topic(pipeline.prefix)])
                outcomes = {orjson.loads(r.value)["event_id"] for r in records}
                if ids <= outcomes:
                    break
                time.sleep(2)
            lost = ids - outcomes
        finally:
            publisher.stopping.set()
            watcher.stopping.set()
            for w in workers:
                if w.process.poll() is None:
                    w.stop()
            stop_stray_workers()
            watcher.join(10)
    say(f"{len(ids)} uploads published, {len(lost)} without an outcome")
    print("\n| round | first processed | all partitions served | uploads group owns all | "
          "faust group stable | ready |")
    print("|---|---|---|---|---|---|")
    for rnd in rounds:
        print(f"| {rnd.number} | {fmt(rnd.first_s)} s | {fmt(rnd.all_partitions_s)} s | "
              f"{fmt(rnd.uploads_group_s)} s | {fmt(rnd.faust_group_s)} s | {fmt(rnd.ready_s)} s |")

    def median(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return fmt(statistics.median(known)) if known else "-"

    print(f"| median | {median([r.first_s for r in rounds])} s | "
          f"{median([r.all_partitions_s for r in rounds])} s | "
          f"{median([r.uploads_group_s for r in rounds])} s | "
          f"{median([r.faust_group_s for r in rounds])} s | {median([r.ready_s for r in rounds])} s |")
    print(orjson.dumps({"rounds": [dataclasses.asdict(r) for r in rounds],
                        "published": len(ids), "lost": len(lost)}).decode())
    if run.error:
        say(run.error)
    return 0 if not lost and not run.error and all(r.first_s is not None for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
