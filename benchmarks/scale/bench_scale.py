"""Scaling out (issue 13): a failure drill on three Kafka nodes + S3, and throughput per worker.

Two measurements, both judged from outside the workers:

``drill``: three ``pixelpipe worker`` processes (one image process each) in one group share
the 12 uploads partitions of a three-node KRaft cluster (``KAFKA_NODES=3 infra/kafka.sh``,
RF 3, min ISR 2) with the S3 store (``infra/s3.sh``, versitygw). Uploads (small crops of the
shared photos, every 40th truncated on purpose) are published at a steady rate; mid-run one
worker is SIGKILLed and, right after, the broker leading the most uploads partitions is
killed (``kill-node``, SIGKILL); the node is started again later. Then every published event
id is looked up on the processed and dead-letter topics (lost, duplicates, dead letters
against the corrupt-on-purpose inputs), the uploads group's lag is read, ``pixelpipe store
verify --json`` checks every output and source in the bucket, and the takeover time is the
time from the kill -9 until the surviving workers own all 12 partitions: read from their
``/status`` (``uploads.assigned``) and, separately, from the group coordinator
(``describe_groups``: state Stable, the dead member gone, the assignment covering 12).

``throughput``: 1, 2 and 3 workers of one image process each (``PIXELPIPE_WORKERS=1``) on
the local store and on the S3 store; each cell gets the same backlog (medium crops of the
photos, published to a fresh prefix before any worker starts), the workers start together,
and the rate is completed uploads per second between the first and the last processed
event (Kafka record timestamps of the processed topic).

    # three nodes + S3, then the drill (a correctness run: shared lock; -o: the brokers
    # started under the lock must not inherit its file descriptor)
    KAFKA_NODES=3 KAFKA_PORT=29092 infra/kafka.sh up
    S3_PORT=27070 infra/s3.sh up
    flock -s -o /tmp/pixelpipe-bench.lock .venv/bin/python benchmarks/scale/bench_scale.py drill \\
        --bootstrap 127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112 --kafka-port 29092 \\
        --s3-port 27070 --uploads 1500 --out /tmp/scale-drill.md

    # one broker + S3, then throughput (a speed measurement: exclusive lock)
    KAFKA_PORT=29092 infra/kafka.sh up
    .venv/bin/python benchmarks/scale/bench_scale.py prepare --images /tmp/scale-images
    flock -x -o /tmp/pixelpipe-bench.lock .venv/bin/python benchmarks/scale/bench_scale.py \\
        throughput --bootstrap 127.0.0.1:29092 --s3-port 27070 --images /tmp/scale-images \\
        --out /tmp/scale-throughput.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import orjson  # noqa: E402
from harness import (  # noqa: E402
    PipelineEnv,
    WorkerProcess,
    describe_topics,
    free_port,
    json_lines,
    read_to_end,
    wait_for_records,
    wait_until,
)
from images import mixed_images  # noqa: E402
from takeover_drill import DRILL_ENV, RENDITIONS, drained_lag, outcome_count  # noqa: E402

from pixelpipe.errors import DeliveryFailed  # noqa: E402
from pixelpipe.schemas import RenditionRequest, SourceRef, UploadEvent, utc_now_iso  # noqa: E402
from pixelpipe.streams.client import Publisher  # noqa: E402
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic  # noqa: E402

KAFKA_SH = REPO / "infra" / "kafka.sh"
S3_SH = REPO / "infra" / "s3.sh"
PARTITIONS = 12
CORRUPT_EVERY = 40
#: throughput renditions: the pipeline benchmark's (thumbnail preset + an 800 px WebP)
THROUGHPUT_RENDITIONS = [
    {"name": "thumbnail", "preset": "thumbnail"},
    {"name": "web", "operations": ["resize:width=800,height=800,fit=inside",
                                   "format:type=webp,quality=80"]},
]


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {line}", flush=True)


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def s3_exports(port: int) -> dict[str, str]:
    """The client variables ``infra/s3.sh env`` prints for the server on ``port``."""
    env = dict(os.environ, S3_PORT=str(port))
    out = subprocess.run(["bash", str(S3_SH), "env"], env=env, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return dict(item.split("=", 1) for item in shlex.split(out)
                if "=" in item and item != "export")


def pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_seconds(pids: Sequence[int | None], *, children: bool = False) -> float:
    """User + system CPU seconds of ``pids`` (and their live children) now."""
    import psutil

    total = 0.0
    for pid in pids:
        if pid is None:
            continue
        try:
            proc = psutil.Process(pid)
            procs = [proc, *(proc.children(recursive=True) if children else [])]
            for p in procs:
                try:
                    t = p.cpu_times()
                    # reaped children too: a recycled image process's CPU moves there
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class ScalePipeline(PipelineEnv):
    """A pipeline whose workers and clients all get ``extra`` on top of the harness' env."""

    extra: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{**self.extra, **extra})

    def spawn_worker(self, name: str, **extra_env: str) -> WorkerProcess:
        """``start_worker`` without waiting for it to be ready (to start several at once)."""
        port = free_port()
        log_path = self.root / f"worker-{name}.log"
        env = self.env(PIXELPIPE_WEB_PORT=str(port),
                       PIXELPIPE_DATADIR=str(self.root / f"state-{name}"), **extra_env)
        log = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "pixelpipe", "worker", "--loglevel", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        log.close()
        return WorkerProcess(process=process, web_port=port, log_path=log_path)


def status_of(worker: WorkerProcess) -> dict[str, Any] | None:
    try:
        _code, body = worker.get("/status", timeout=2)
    except (OSError, ValueError):
        return None
    return body


def assigned_of(worker: WorkerProcess) -> set[int] | None:
    body = status_of(worker)
    if body is None or not body.get("uploads"):
        return None
    return set(body["uploads"]["assigned"])


def worker_log_stats(worker: WorkerProcess) -> dict[str, int]:
    text = worker.log()
    return {
        "outcomes": text.count("processed ") + text.count("dead-lettered "),
        "revoked_unsettled": text.count("uploads revoked with a record unsettled"),
        "holes": text.count("hole"),
        "tracebacks": text.count("Traceback"),
        # faust's breaker agent crashing on a changelog topic its metadata does not know yet
        "breaker_agent_crashes": text.count("Crashed reason=PartitionsMismatch"),
    }


# ------------------------------------------------------------------------------ outcomes


@dataclass
class Outcomes:
    records: int
    per_id: Counter[str]
    statuses: dict[str, set[str]]
    dead_letters: Counter[str]
    levels: Counter[str]
    processed_ts: dict[str, int]  # event id -> first processed record's timestamp (ms)


def read_outcomes(bootstrap: str, prefix: str) -> Outcomes:
    """Every record of the processed and dead-letter topics, to their end as of now."""
    topics = [processed_topic(prefix), dlq_topic(prefix)]
    per_id: Counter[str] = Counter()
    statuses: dict[str, set[str]] = {}
    dead: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    first_ts: dict[str, int] = {}
    records = read_to_end(bootstrap, topics, timeout=120)
    for record in records:
        body = orjson.loads(record.value)
        event_id = body.get("event_id")
        per_id[event_id] += 1
        if record.topic == topics[1]:
            code = body.get("error", {}).get("code", "?")
            statuses.setdefault(event_id, set()).add(code)
            dead[code] += 1
        else:
            statuses.setdefault(event_id, set()).add("processed")
            levels[body.get("level") or "full"] += 1
            first_ts.setdefault(event_id, record.timestamp)
    return Outcomes(len(records), per_id, statuses, dead, levels, first_ts)


def wait_all_outcomes(bootstrap: str, prefix: str, ids: Sequence[str], timeout: float) -> bool:
    wanted = set(ids)

    def all_seen(records: list[Any]) -> bool:
        return wanted <= {orjson.loads(r.value).get("event_id") for r in records}

    try:
        wait_for_records(bootstrap, [processed_topic(prefix), dlq_topic(prefix)], all_seen,
                         timeout=timeout, what=f"an outcome for all {len(ids)} uploads")
    except AssertionError as exc:
        say(f"drain: {exc}")
        return False
    return True


# ------------------------------------------------------------------------------ drill


def make_event(data: bytes, blob: Any, image_id: str) -> UploadEvent:
    return UploadEvent(
        event_id=str(uuid.uuid4()), image_id=image_id,
        source=SourceRef(uri=blob.uri, sha256=blob.sha256, size=blob.size,
                         content_type="application/octet-stream"),
        renditions=tuple(RenditionRequest(name=r["name"], operations=tuple(r["operations"]))
                         for r in RENDITIONS),
        submitted_at=utc_now_iso(),
    )


class Feeder(threading.Thread):
    """Publishes ``total`` uploads at ``rate`` per second; a failed delivery is sent again
    (the same event, so at worst a duplicate); every acknowledged event id is recorded."""

    def __init__(self, pipeline: PipelineEnv, sources: Sequence[Path], total: int,
                 rate: float) -> None:
        super().__init__(daemon=True)
        self.pipeline, self.sources, self.total, self.rate = pipeline, sources, total, rate
        self.published: list[str] = []
        self.acked_at: list[float] = []
        self.latency: list[tuple[float, float]] = []  # (started, seconds to the ack)
        self.corrupt: set[str] = set()
        self.resends = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # reported by the main thread
            self.errors.append(exc)

    async def _publish(self) -> None:
        blobs = [s.read_bytes() for s in self.sources]
        async with Publisher(self.pipeline.settings()) as publisher:
            began = time.monotonic()
            for i in range(self.total):
                delay = began + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                data = blobs[i % len(blobs)]
                broken = i % CORRUPT_EVERY == CORRUPT_EVERY - 1
                if broken:
                    data = data[: len(data) // 3]
                blob = await asyncio.to_thread(publisher.store.put_source, data)
                event = make_event(data, blob, f"img-{i}")
                started = time.monotonic()
                for attempt in range(5):
                    try:
                        await publisher.publish_event(event)
                        break
                    except DeliveryFailed:
                        if attempt == 4:
                            raise
                        self.resends += 1
                        await asyncio.sleep(1)
                now = time.monotonic()
                self.latency.append((started, now - started))
                self.published.append(event.event_id)
                self.acked_at.append(now)
                if broken:
                    self.corrupt.add(event.event_id)


class Monitor(threading.Thread):
    """Samples, every ~0.25 s: each named worker's ``uploads.assigned`` (its /status), and
    every ~0.5 s the uploads group as its coordinator describes it and the uploads leaders."""

    def __init__(self, pipeline: PipelineEnv, workers: dict[str, WorkerProcess]) -> None:
        super().__init__(daemon=True)
        self.pipeline = pipeline
        self.workers = workers
        self.watch: set[str] = set(workers)
        self.stop_event = threading.Event()
        self.status: list[tuple[float, dict[str, set[int] | None]]] = []
        self.group: list[tuple[float, str, list[set[int]]]] = []
        self.leaders: list[tuple[float, dict[int, int]]] = []
        self.coordinators: list[tuple[float, int]] = []
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        group_id = self.pipeline.settings().uploads_group
        topic = uploads_topic(self.pipeline.prefix)
        admin: AIOKafkaAdminClient | None = None
        last_admin = 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            names = sorted(self.watch)
            views = await asyncio.gather(*(asyncio.to_thread(assigned_of, self.workers[n])
                                           for n in names))
            self.status.append((now, dict(zip(names, views, strict=True))))
            if now - last_admin >= 0.5:
                last_admin = now
                try:
                    if admin is None:
                        admin = AIOKafkaAdminClient(bootstrap_servers=self.pipeline.bootstrap,
                                                    request_timeout_ms=3000)
                        await asyncio.wait_for(admin.start(), 5)
                    coordinator = await asyncio.wait_for(admin.find_coordinator(group_id), 3)
                    self.coordinators.append((now, coordinator))
                    (response,) = await asyncio.wait_for(
                        admin.describe_consumer_groups([group_id], coordinator), 3)
                    (desc,) = response.to_object()["groups"]
                    members = []
                    for member in desc["members"]:
                        parts: set[int] = set()
                        if member["member_assignment"]:
                            decoded = ConsumerProtocolMemberAssignment.decode(
                                member["member_assignment"])
                            for t, ps in decoded.assignment:
                                if t == topic:
                                    parts.update(ps)
                        members.append(parts)
                    self.group.append((now, desc["state"], members))
                    (described,) = await asyncio.wait_for(admin.describe_topics([topic]), 3)
                    self.leaders.append((now, {p["partition"]: p["leader"]
                                               for p in described["partitions"]}))
                except Exception as exc:  # a dead node, a coordinator moving: sample again
                    self.errors[type(exc).__name__] += 1
                    if admin is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(admin.close(), 3)
                        admin = None
            await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - now)))
        if admin is not None:
            await admin.close()

    # ---- readings

    def workers_own_all(self, after: float, names: set[str]) -> float | None:
        """First sample time after ``after`` at which ``names`` own all 12, disjointly."""
        for t, views in self.status:
            if t < after:
                continue
            sets = [views.get(n) for n in names]
            if any(s is None for s in sets):
                continue
            union = set().union(*sets)  # type: ignore[arg-type]
            if union == set(range(PARTITIONS)) and sum(len(s) for s in sets) == PARTITIONS:  # type: ignore[arg-type]
                return t
        return None

    def group_settled(self, after: float, members: int) -> float | None:
        for t, state, parts in self.group:
            if t < after:
                continue
            union = set().union(*parts) if parts else set()
            if state == "Stable" and len(parts) == members and union == set(range(PARTITIONS)):
                return t
        return None

    def member_gone(self, after: float, members: int) -> float | None:
        for t, _state, parts in self.group:
            if t >= after and len(parts) <= members:
                return t
        return None

    def leaders_moved(self, after: float, node: int) -> float | None:
        for t, leaders in self.leaders:
            if t >= after and node not in leaders.values():
                return t
        return None


def kafka_sh(args: argparse.Namespace, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KAFKA_NODES="3", KAFKA_PORT=str(args.kafka_port))
    return subprocess.run(["bash", str(KAFKA_SH), *cmd], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def coordinator_of(bootstrap: str, group: str) -> int | None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def once() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return int(await admin.find_coordinator(group))
        finally:
            await admin.close()

    for _ in range(10):
        try:
            return asyncio.run(once())
        except Exception:
            time.sleep(0.5)
    return None


def run_drill(args: argparse.Namespace) -> int:
    s3 = s3_exports(args.s3_port)
    # the S3 store's client reads its credentials from this process's environment (not from
    # the Settings mapping): the publisher and the outside readers here need them there
    os.environ.update(s3)
    bucket = args.bucket
    tmp = tempfile.mkdtemp(prefix="pixelpipe-scale-drill-")
    root = Path(tmp)
    prefix = f"drill{uuid.uuid4().hex[:8]}"
    pipeline = ScalePipeline(
        bootstrap=args.bootstrap, root=root, prefix=prefix, workers=1,
        extra={"PIXELPIPE_REPLICATION_FACTOR": "3",
               "PIXELPIPE_UPLOAD_PARTITIONS": str(PARTITIONS),
               "PIXELPIPE_DATA": f"s3://{bucket}/{prefix}",
               "PIXELPIPE_RETRY_TIERS": args.retry_tiers, **s3})
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_start = loadavg()
    say(f"drill {prefix} in {root}; load {load_start}")
    # distinct crops (one per upload unless --distinct says fewer), so every upload has its
    # own source and outputs in the bucket and `store verify` checks each of them
    distinct = args.distinct or args.uploads
    sources = [img.path for img in mixed_images(root / "src", distinct * 5 // 3 + 5,
                                                 max_side=400)
               if img.path.suffix in (".jpg", ".png", ".webp")][:distinct]
    worker_env = dict(DRILL_ENV)
    workers: dict[str, WorkerProcess] = {}
    result: dict[str, Any] = {"prefix": prefix, "started": started_utc, "load_start": load_start,
                              "worker_env": worker_env, "uploads": args.uploads,
                              "rate": args.rate, "retry_tiers": args.retry_tiers}
    began = time.monotonic()
    monitor: Monitor | None = None
    try:
        for name in ("w1", "w2", "w3"):
            workers[name] = pipeline.start_worker(name, **worker_env)
            say(f"{name} ready")
        monitor = Monitor(pipeline, workers)
        monitor.start()
        wait_until(lambda: monitor.workers_own_all(0, set(workers)), 120,
                   "the three workers to share all 12 partitions")
        shares = {n: sorted(assigned_of(w) or ()) for n, w in workers.items()}
        say(f"assignment: {shares}")
        topic = uploads_topic(prefix)
        feeder = Feeder(pipeline, sources, args.uploads, args.rate)
        feeder.start()

        def outcomes_so_far() -> int:
            return sum(outcome_count(w) for w in workers.values())

        wait_until(lambda: len(feeder.published) >= args.kill_after or feeder.errors, 600,
                   f"{args.kill_after} uploads published")
        wait_until(lambda: outcomes_so_far() >= args.kill_after // 2 or feeder.errors, 300,
                   "the workers to be well into them")
        if feeder.errors:
            raise feeder.errors[0]
        # the victims: the worker with the most uploads in flight; the node leading the most
        # uploads partitions (ties: the uploads group's coordinator first)
        in_flight = {n: ((status_of(w) or {}).get("uploads") or {}).get("in_flight", 0)
                     for n, w in workers.items()}
        victim_worker = max(sorted(in_flight), key=lambda n: in_flight[n])
        (described,) = describe_topics(args.bootstrap, [topic], attempts=20)
        led = Counter(p["leader"] for p in described["partitions"])
        coordinator = coordinator_of(args.bootstrap, pipeline.settings().uploads_group)
        victim_node = max(sorted(led), key=lambda n: (led[n], n == coordinator))
        survivors = set(workers) - {victim_worker}
        monitor.watch = set(survivors)
        dead = workers[victim_worker]
        children = dead.children()
        published_at_kill = len(feeder.published)
        outcomes_at_kill = outcomes_so_far()
        dead.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        if args.node_kill_delay:
            time.sleep(args.node_kill_delay)
        node_kill_began = time.monotonic()
        killed = kafka_sh(args, "kill-node", str(victim_node))
        node_killed_at = time.monotonic()
        if killed.returncode != 0:
            raise RuntimeError(f"kill-node {victim_node}: {killed.stderr[-2000:]}")
        dead.process.wait(30)
        WorkerProcess._reap(children)
        say(f"kill -9 {victim_worker} (in flight {in_flight[victim_worker]}), kill-node "
            f"{victim_node} (led {led[victim_node]} of {PARTITIONS}; coordinator of the "
            f"uploads group: node {coordinator}) after {published_at_kill} published, "
            f"{outcomes_at_kill} outcomes")
        result.update(victim_worker=victim_worker, victim_in_flight=in_flight[victim_worker],
                      in_flight=in_flight, victim_node=victim_node,
                      victim_led=led[victim_node], leaders_before=dict(led),
                      coordinator_before=coordinator, published_at_kill=published_at_kill,
                      outcomes_at_kill=outcomes_at_kill,
                      node_kill_after_s=round(node_kill_began - killed_at, 2),
                      kill_node_cmd_s=round(node_killed_at - node_kill_began, 2))
        # takeover: the survivors own all 12 (their view), and the coordinator agrees
        own_all = wait_until(lambda: monitor.workers_own_all(killed_at, survivors), 120,
                             "the survivors to own all 12 partitions")
        settled = wait_until(lambda: monitor.group_settled(killed_at, len(survivors)), 120,
                             "the uploads group to settle with the survivors")
        result["takeover_workers_s"] = round(own_all - killed_at, 2)
        result["takeover_group_s"] = round(settled - killed_at, 2)
        gone = monitor.member_gone(killed_at, len(survivors))
        result["member_gone_s"] = None if gone is None else round(gone - killed_at, 2)
        moved = monitor.leaders_moved(node_killed_at, victim_node)
        result["leaders_moved_s"] = None if moved is None else round(moved - node_kill_began, 2)
        say(f"takeover: survivors own all 12 after {result['takeover_workers_s']} s, group "
            f"Stable with 2 members covering 12 after {result['takeover_group_s']} s; node "
            f"{victim_node}'s leaderships moved {result['leaders_moved_s']} s after kill-node")
        # the node stays down a while longer, then comes back
        remaining = args.down_for - (time.monotonic() - node_killed_at)
        if remaining > 0:
            time.sleep(remaining)
        restart_began = time.monotonic()
        started: list[float] = []
        start_out: list[subprocess.CompletedProcess[str]] = []

        def start_node() -> None:
            proc = kafka_sh(args, "start-node", str(victim_node))
            start_out.append(proc)
            started.append(time.monotonic())

        starter = threading.Thread(target=start_node)
        starter.start()
        topics = [topic, processed_topic(prefix), dlq_topic(prefix)]

        def isr_full() -> bool:
            return all(victim_node in p["isr"] and len(p["isr"]) == len(p["replicas"])
                       for t in describe_topics(args.bootstrap, topics, attempts=20) for p in t["partitions"])

        isr_ok = True
        try:
            wait_until(isr_full, 180, f"node {victim_node} back in every ISR", interval=0.5)
        except AssertionError as exc:
            isr_ok = False
            say(str(exc))
        isr_s = time.monotonic() - restart_began
        starter.join(300)
        if start_out and start_out[0].returncode != 0:
            say(f"start-node failed: {start_out[0].stderr[-2000:]}")
        result["node_down_s"] = round(restart_began - node_killed_at, 1)
        result["start_node_s"] = round(started[0] - restart_began, 1) if started else None
        result["isr_back_s"] = round(isr_s, 1) if isr_ok else None
        say(f"node {victim_node} restarted: start-node {result['start_node_s']} s, back in "
            f"every ISR of the pipeline's topics {result['isr_back_s']} s after it began")
        feeder.join(900)
        if feeder.errors:
            raise feeder.errors[0]
        published = list(feeder.published)
        publish_done = time.monotonic()
        say(f"published {len(published)} ({len(feeder.corrupt)} truncated on purpose, "
            f"{feeder.resends} resends); draining")
        drained = wait_all_outcomes(args.bootstrap, prefix, published, args.drain_timeout)
        drain_s = time.monotonic() - publish_done
        outcomes = read_outcomes(args.bootstrap, prefix)
        lag = drained_lag(pipeline, timeout=30)
        lost = [e for e in published if e not in outcomes.per_id]
        duplicates = sum(n - 1 for e, n in outcomes.per_id.items() if e in set(published) and n > 1)
        wrong = [e for e in published if e in outcomes.statuses and outcomes.statuses[e]
                 != ({"corrupt_image"} if e in feeder.corrupt else {"processed"})]
        unknown = [e for e in outcomes.per_id if e not in set(published)]
        # publish latency around the node kill (the producer rides out the failover)
        before = [s for st, s in feeder.latency if st + s < killed_at]
        around = [s for st, s in feeder.latency if st < node_killed_at + 30 and st + s >= killed_at]
        say("store verify --json")
        verify = pipeline.cli("store", "verify", "--json", check=False, timeout=900)
        verify_lines = json_lines(verify.stdout) if verify.stdout.strip() else []
        summary = verify_lines[-1] if verify_lines else {}
        result.update(
            published=len(published), corrupt=len(feeder.corrupt), resends=feeder.resends,
            drained=drained, drain_after_publish_s=round(drain_s, 1),
            outcome_records=outcomes.records, lost=len(lost), lost_ids=lost[:10],
            duplicates=duplicates, dead_letters=dict(outcomes.dead_letters),
            dead_letter_ids=sum(1 for s in outcomes.statuses.values() if s - {"processed"}),
            wrong=len(wrong), wrong_examples={e: sorted(outcomes.statuses[e]) for e in wrong[:5]},
            unknown_ids=len(unknown), levels=dict(outcomes.levels),
            lag=sum(lag.values()), lag_per_partition=lag,
            publish_ms_median_before=round(statistics.median(before) * 1000, 1) if before else None,
            publish_s_max_around_kill=round(max(around), 2) if around else None,
            verify_exit=verify.returncode, verify_summary=summary,
            verify_findings=verify_lines[:-1][:10],
            verify_stderr=verify.stderr.decode(errors="replace")[-1500:] if verify.returncode not in (0, 1) else "",
            monitor_errors=dict(monitor.errors),
        )
    except Exception as exc:  # reported with whatever was measured up to it
        import traceback

        traceback.print_exc()
        result["error"] = repr(exc)
    finally:
        if monitor is not None:
            monitor.stop_event.set()
            monitor.join(10)
        for name, worker in workers.items():
            if worker.process.poll() is None:
                code = worker.stop()
                result.setdefault("worker_exit", {})[name] = code
            else:
                result.setdefault("worker_exit", {})[name] = worker.process.returncode
            result.setdefault("worker_logs", {})[name] = worker_log_stats(worker)
        result["seconds"] = round(time.monotonic() - began, 1)
        result["load_end"] = loadavg()
        result["root"] = str(root)
    if monitor is not None:
        result["monitor_errors"] = dict(monitor.errors)
    ok = (result.get("lost") == 0 and result.get("wrong") == 0
          and result.get("verify_summary", {}).get("bad") == 0)
    text = drill_markdown(args, result)
    print(json.dumps(result, indent=1, default=str))
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    return 0 if ok else 1


def drill_markdown(args: argparse.Namespace, r: dict[str, Any]) -> str:
    v = r.get("verify_summary", {})
    rows = [
        ("uploads published (truncated on purpose)", f"{r.get('published')} ({r.get('corrupt')})"),
        ("kill -9 of a worker", f"{r.get('victim_worker')} with {r.get('victim_in_flight')} "
         f"uploads in flight, after {r.get('published_at_kill')} published / "
         f"{r.get('outcomes_at_kill')} outcomes"),
        ("kill-node (SIGKILL) of a broker", f"node {r.get('victim_node')}, leader of "
         f"{r.get('victim_led')} of 12 uploads partitions (uploads group coordinator: node "
         f"{r.get('coordinator_before')}), {r.get('node_kill_after_s')} s after the kill -9"),
        ("node's uploads leaderships moved", f"{r.get('leaders_moved_s')} s after kill-node"),
        ("**takeover: survivors' /status own all 12**", f"**{r.get('takeover_workers_s')} s** "
         "after the kill -9 (goal < 10 s session + 10 s)"),
        ("takeover: coordinator's describe_groups Stable, 2 members, 12 assigned",
         f"{r.get('takeover_group_s')} s (dead member gone at {r.get('member_gone_s')} s)"),
        ("node down / start-node / back in every ISR",
         f"{r.get('node_down_s')} s / {r.get('start_node_s')} s / {r.get('isr_back_s')} s"),
        ("publish ack, median before / longest around the kills",
         f"{r.get('publish_ms_median_before')} ms / {r.get('publish_s_max_around_kill')} s "
         f"({r.get('resends')} resends)"),
        ("**lost (no outcome)**", f"**{r.get('lost')}**"),
        ("outcome other than expected", str(r.get('wrong'))),
        ("duplicate outcome records", str(r.get('duplicates'))),
        ("dead letters (by code)", f"{sum((r.get('dead_letters') or {}).values())} "
         f"{r.get('dead_letters')} (expected: {r.get('corrupt')} corrupt_image)"),
        ("processed events by service level", str(r.get("levels"))),
        ("uploads lag after drain", str(r.get("lag"))),
        ("**store verify --json** (S3)", f"checked {v.get('checked')} ({v.get('checked_outputs')} "
         f"outputs, {v.get('checked_sources')} sources), **bad {v.get('bad')}**, exit "
         f"{r.get('verify_exit')}"),
        ("drain after the last publish", f"{r.get('drain_after_publish_s')} s"),
        ("worker logs", str(r.get("worker_logs"))),
        ("wall time", f"{r.get('seconds')} s"),
        ("load average (1/5/15 min) at start / end", f"{r.get('load_start')} / {r.get('load_end')}"),
    ]
    cmd = " ".join(shlex.quote(a) for a in sys.argv[1:])
    if r.get("error"):
        rows.insert(0, ("**error (the drill stopped early)**", f"`{r['error']}`"))
    lines = [
        f"Drill run {r.get('started')}: `.venv/bin/python benchmarks/scale/bench_scale.py {cmd}`",
        f"(worker env {r.get('worker_env')}, PIXELPIPE_WORKERS=1, retry tiers "
        f"{r.get('retry_tiers')}, publish rate {r.get('rate')}/s)",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {val} |" for k, val in rows),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ throughput


def run_prepare(args: argparse.Namespace) -> int:
    images = mixed_images(args.images, args.count, max_side=args.max_side, seed=7)
    sizes = [img.path.stat().st_size for img in images]
    pixels = [img.width * img.height for img in images]
    print(f"{len(images)} images in {args.images}: {sum(sizes) / 1e6:.1f} MB, median "
          f"{statistics.median(sizes) / 1e3:.0f} kB, median {statistics.median(pixels) / 1e6:.2f} "
          f"MP, formats {dict(Counter(i.path.suffix for i in images))}")
    return 0


async def publish_backlog(pipeline: PipelineEnv, paths: Sequence[Path]) -> list[str]:
    ids = []
    async with Publisher(pipeline.settings()) as publisher:
        for i, path in enumerate(paths):
            upload = await publisher.publish_file(path, THROUGHPUT_RENDITIONS,
                                                  image_id=f"img-{i:04d}")
            ids.append(upload.event_id)
    return ids


def run_cell(args: argparse.Namespace, root: Path, store: str, count: int,
             paths: Sequence[Path], s3: dict[str, str]) -> dict[str, Any]:
    prefix = f"tp{count}{store}{uuid.uuid4().hex[:6]}"
    cell_root = root / prefix
    cell_root.mkdir(parents=True)
    extra = {"PIXELPIPE_UPLOAD_PARTITIONS": str(PARTITIONS), "PIXELPIPE_DEGRADE": "off"}
    if store == "s3":
        extra.update(PIXELPIPE_DATA=f"s3://{args.bucket}/{prefix}", **s3)
    pipeline = ScalePipeline(bootstrap=args.bootstrap, root=cell_root, prefix=prefix,
                             workers=1, extra=extra)
    t0 = time.monotonic()
    ids = asyncio.run(publish_backlog(pipeline, paths))
    publish_s = time.monotonic() - t0
    broker_pid = pid_from(REPO / "infra" / ".run" / f"kafka-{args.bootstrap.rsplit(':', 1)[1]}"
                          / "kafka.pid")
    s3_pid = pid_from(REPO / "infra" / ".run" / f"s3-{args.s3_port}" / "versitygw.pid")
    load_before = loadavg()
    spawned = time.time()
    workers = [pipeline.spawn_worker(f"w{i + 1}") for i in range(count)]
    try:
        for w in workers:
            w.wait_ready(180)
        all_ready = time.time()
        # CPU from here on is the steady window's (every worker is up, its start-up is over)
        ready_cpu = cpu_seconds([w.process.pid for w in workers], children=True)
        broker_cpu0, s3_cpu0 = cpu_seconds([broker_pid]), cpu_seconds([s3_pid])
        drained = wait_all_outcomes(args.bootstrap, prefix, ids, args.drain_timeout)
        worker_cpu = cpu_seconds([w.process.pid for w in workers], children=True)
        broker_cpu1, s3_cpu1 = cpu_seconds([broker_pid]), cpu_seconds([s3_pid])
        load_after = loadavg()
        outcomes = read_outcomes(args.bootstrap, prefix)
        shares = [assigned_of(w) for w in workers]
        logs = [worker_log_stats(w) for w in workers]
    finally:
        for w in workers:
            w.stop()
    stamps = sorted(ts for e, ts in outcomes.processed_ts.items() if e in set(ids))
    span = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("nan")
    rate = (len(stamps) - 1) / span if span and span == span else float("nan")
    after_ready = [ts for ts in stamps if ts >= all_ready * 1000]
    steady_span = (stamps[-1] - all_ready * 1000) / 1000 if after_ready else float("nan")
    steady = len(after_ready) / steady_span if after_ready and steady_span > 0 else float("nan")
    cell = {
        "store": store, "workers": count, "uploads": len(ids), "processed": len(stamps),
        "drained": drained, "dead_letters": dict(outcomes.dead_letters),
        "duplicates": sum(n - 1 for e, n in outcomes.per_id.items() if n > 1),
        "levels": dict(outcomes.levels), "publish_s": round(publish_s, 1),
        "first_after_spawn_s": round(stamps[0] / 1000 - spawned, 1) if stamps else None,
        "all_ready_after_spawn_s": round(all_ready - spawned, 1),
        "span_s": round(span, 2), "rate": round(rate, 2),
        "steady_rate": round(steady, 2), "steady_records": len(after_ready),
        # per upload completed after every worker was ready (the same window as steady_rate)
        "worker_cpu_per_upload_ms": round((worker_cpu - ready_cpu) / max(1, len(after_ready))
                                          * 1000, 1),
        "broker_cpu_per_upload_ms": round((broker_cpu1 - broker_cpu0) / max(1, len(after_ready))
                                          * 1000, 1),
        "s3_cpu_per_upload_ms": (round((s3_cpu1 - s3_cpu0) / max(1, len(after_ready)) * 1000, 1)
                                 if store == "s3" else None),
        "load_before": load_before, "load_after": load_after,
        "final_shares": [sorted(s) if s is not None else None for s in shares],
        "worker_logs": logs,
    }
    say(f"cell {store} x{count}: {cell}")
    return cell


def run_throughput(args: argparse.Namespace) -> int:
    paths = sorted(args.images.glob("img-*"))[: args.uploads]
    if len(paths) < args.uploads:
        raise SystemExit(f"{args.images} has {len(paths)} images; run `prepare` first")
    s3 = s3_exports(args.s3_port) if "s3" in args.stores else {}
    os.environ.update(s3)  # the S3 store's client reads its credentials from os.environ
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    cells = []
    with tempfile.TemporaryDirectory(prefix="pixelpipe-scale-tp-") as tmp:
        root = Path(tmp)
        for count in args.workers:
            for store in args.stores:
                cells.append(run_cell(args, root, store, count, paths, s3))
    sizes = [p.stat().st_size for p in paths]
    cmd = " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"Throughput run {started_utc}: `.venv/bin/python benchmarks/scale/bench_scale.py {cmd}`",
        f"({len(paths)} uploads per cell, {sum(sizes) / 1e6:.0f} MB, median "
        f"{statistics.median(sizes) / 1e3:.0f} kB; renditions {THROUGHPUT_RENDITIONS}; "
        "PIXELPIPE_WORKERS=1, PIXELPIPE_DEGRADE=off, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores)",
        "",
        "| store | workers | uploads/s first->last processed | span | uploads/s once all ready "
        "| worker CPU ms/upload (incl. image processes; once all ready) | broker CPU ms/upload "
        "| versitygw CPU ms/upload | dead letters "
        "| duplicates | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['store']} | {c['workers']} | {c['rate']} | {c['span_s']} s | "
            f"{c['steady_rate']} ({c['steady_records']} events) | "
            f"{c['worker_cpu_per_upload_ms']} | {c['broker_cpu_per_upload_ms']} | "
            f"{c['s3_cpu_per_upload_ms'] if c['s3_cpu_per_upload_ms'] is not None else '-'} | "
            f"{sum(c['dead_letters'].values())} | {c['duplicates']} | "
            f"{c['load_before']} / {c['load_after']} |")
    text = "\n".join(lines) + "\n"
    print(json.dumps(cells, indent=1))
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(cells, indent=1))
    return 0 if all(c["drained"] for c in cells) else 1


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    drill = sub.add_parser("drill", help="kill -9 a worker and kill a broker mid-run")
    drill.add_argument("--bootstrap", default="127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112")
    drill.add_argument("--kafka-port", type=int, default=29092,
                       help="KAFKA_PORT of the three-node cluster (for kill-node/start-node)")
    drill.add_argument("--s3-port", type=int, default=27070)
    drill.add_argument("--bucket", default="pixelpipe")
    drill.add_argument("--uploads", type=int, default=1500)
    drill.add_argument("--rate", type=float, default=15.0, help="uploads published per second")
    drill.add_argument("--kill-after", type=int, default=600,
                       help="published uploads before the kills")
    drill.add_argument("--node-kill-delay", type=float, default=0.0,
                       help="seconds between the worker's kill -9 and kill-node")
    drill.add_argument("--down-for", type=float, default=40.0,
                       help="seconds the killed node stays down")
    drill.add_argument("--retry-tiers", default="2s,5s,15s")
    drill.add_argument("--distinct", type=int, default=0,
                       help="distinct source images (default: one per upload)")
    drill.add_argument("--drain-timeout", type=float, default=600.0)
    drill.add_argument("--out", type=Path)

    prep = sub.add_parser("prepare", help="make the throughput backlog's images")
    prep.add_argument("--images", type=Path, required=True)
    prep.add_argument("--count", type=int, default=300)
    prep.add_argument("--max-side", type=int, default=1400)

    tp = sub.add_parser("throughput", help="1, 2, 3 workers on the local and the S3 store")
    tp.add_argument("--bootstrap", default="127.0.0.1:29092")
    tp.add_argument("--s3-port", type=int, default=27070)
    tp.add_argument("--bucket", default="pixelpipe")
    tp.add_argument("--images", type=Path, required=True)
    tp.add_argument("--uploads", type=int, default=300)
    tp.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    tp.add_argument("--stores", type=lambda s: s.split(","), default=["local", "s3"])
    tp.add_argument("--drain-timeout", type=float, default=600.0)
    tp.add_argument("--out", type=Path)

    args = parser.parse_args()
    if args.command == "drill":
        return run_drill(args)
    if args.command == "prepare":
        return run_prepare(args)
    return run_throughput(args)


if __name__ == "__main__":
    sys.exit(main())
