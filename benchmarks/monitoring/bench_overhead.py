"""Monitoring overhead (issue 11): what heartbeats, health sampling and alert evaluation cost
a worker, as a share of one core.

Two views:

1. **Micro-costs, in this process**, CPU time per call (``time.thread_time``: the calling
   thread, which is where each of these runs; ``time.process_time`` and wall time are shown
   too), many iterations after a warm-up:

   - ``ServiceLevel.evaluate()`` built from ``Settings`` with a real ``ImagePool`` of one
     process (warmed up, so its child is sampled) and, attached as in ``build_worker``, a real
     but unstarted ``UploadFeed`` (4 uploads partitions assigned in its ledger, no consumer),
     ``RetryScheduler`` (nothing waiting) and ``ControlView`` (no override);
     plus a breakdown: the psutil part (``_cpu_and_rss``) and ``Process.children()`` alone;
   - ``Heartbeat.record()`` + ``orjson.dumps`` with those parts and a ``BreakerView`` holding
     2 refusing breakers; ``Heartbeat.export()`` (the gauges); and the send itself: an
     aiokafka producer (``pixelpipe.streams.kafka.producer``, acks=all) sending that heartbeat
     to the real broker and awaiting the ack, one at a time (the worker sends through faust's
     producer, also aiokafka);
   - ``AlertRules.evaluate`` on a ClusterSample of 3 workers, 12 uploads partitions and 2
     refusing breakers, after an hour of history at 10 s (360 samples);
   - ``AlertEvaluator.sample()`` (the real method, on an evaluator built without an app)
     against the real broker through ``ClusterReader``, on a fresh topic prefix declared with
     ``declare_pipeline_topics``: 120 uploads records with the uploads group's offsets
     committed 2 short of the end on each of the 12 partitions, N heartbeats of 3 workers on
     the compacted workers topic, and dead letters. Measured at two heartbeat backlogs (the
     reader reads the workers topic from its beginning every time, so the cost grows with
     what compaction has not removed yet). Only this process's CPU: the broker's is not the
     worker's.

   Each cost is turned into a share of one core at the default intervals (sampling every
   1 s, heartbeat every 5 s, evaluation every 10 s on the one owner) and at the shortened test
   intervals (heartbeat 1 s, evaluation 1 s).

2. **End to end**: real idle ``pixelpipe worker`` subprocesses (``tests/harness.PipelineEnv``,
   one image process each), a pair per round in their own pipelines: one at the default
   intervals (monitoring on), one with ``PIXELPIPE_HEARTBEAT=3600s`` and
   ``PIXELPIPE_ALERT_INTERVAL=3600s`` (one heartbeat at start, no evaluation in the window:
   monitoring effectively off; the ServiceLevel sampler has no switch and keeps running at
   1 s in both). After a settle time, the CPU of each worker process (psutil ``cpu_times``
   user + system, image processes excluded) over the same idle window; the difference is the
   monitoring cost seen from outside. The two run at the same time so both see the same
   machine; which starts first alternates per round.

Usage (needs a broker; ``infra/kafka.sh up`` starts one on 127.0.0.1:9092):

    .venv/bin/python benchmarks/monitoring/bench_overhead.py --bootstrap 127.0.0.1:9092 \
        --out benchmarks/monitoring/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import aiokafka  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402
from harness import PipelineEnv, WorkerProcess, read_to_end  # noqa: E402

from pixelpipe.agents.alerts import AlertEvaluator, rule_config  # noqa: E402
from pixelpipe.agents.heartbeat import Heartbeat  # noqa: E402
from pixelpipe.agents.retry import RetryScheduler  # noqa: E402
from pixelpipe.agents.service_level import ServiceLevel  # noqa: E402
from pixelpipe.agents.uploads_feed import UploadFeed  # noqa: E402
from pixelpipe.config import Settings  # noqa: E402
from pixelpipe.imaging import ImagePool  # noqa: E402
from pixelpipe.policy.alerts import AlertRules, ClusterSample, WorkerSample  # noqa: E402
from pixelpipe.schemas.names import DEADLETTER_SCHEMA  # noqa: E402
from pixelpipe.schemas.times import epoch_iso  # noqa: E402
from pixelpipe.streams import kafka  # noqa: E402
from pixelpipe.streams.admin import declare_pipeline_topics  # noqa: E402
from pixelpipe.streams.breaker_view import BreakerView  # noqa: E402
from pixelpipe.streams.control import ControlView  # noqa: E402
from pixelpipe.streams.topics import dlq_topic, uploads_topic, workers_topic  # noqa: E402

MONITOR_VARS = ("PIXELPIPE_HEARTBEAT", "PIXELPIPE_ALERT_INTERVAL")
OFF = {"PIXELPIPE_HEARTBEAT": "3600s", "PIXELPIPE_ALERT_INTERVAL": "3600s"}
PARTITIONS = 12
BREAKERS = ("blur", "watermark")
#: topic prefixes this run created (their topics are deleted at the end unless --keep-topics)
CREATED: list[str] = []


# --------------------------------------------------------------------------- measuring


@dataclass
class Cost:
    """CPU per call, in microseconds."""

    name: str
    calls: int
    thread_us: float
    process_us: float
    wall_us: float
    note: str = ""


def measure(name: str, fn: Callable[[], Any], calls: int, warmup: int = 20,
            note: str = "") -> Cost:
    for _ in range(warmup):
        fn()
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    t1, p1, w1 = time.thread_time(), time.process_time(), time.perf_counter()
    return Cost(name, calls, (t1 - t0) / calls * 1e6, (p1 - p0) / calls * 1e6,
                (w1 - w0) / calls * 1e6, note)


async def measure_async(name: str, fn: Callable[[], Any], calls: int, warmup: int = 3,
                        note: str = "") -> Cost:
    for _ in range(warmup):
        await fn()
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(calls):
        await fn()
    t1, p1, w1 = time.thread_time(), time.process_time(), time.perf_counter()
    return Cost(name, calls, (t1 - t0) / calls * 1e6, (p1 - p0) / calls * 1e6,
                (w1 - w0) / calls * 1e6, note)


# --------------------------------------------------------------------------- the parts


def bench_settings(bootstrap: str, prefix: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k not in MONITOR_VARS}
    return Settings.from_env(env, broker=f"kafka://{bootstrap}", topic_prefix=prefix,
                             app_id=f"{prefix}-app", upload_partitions=PARTITIONS, workers=1)


def refusing_breakers(settings: Settings, now: float) -> BreakerView:
    view = BreakerView(settings)
    for i, name in enumerate(BREAKERS):
        view.records[name] = {"processor": name, "state": "forced_open" if i else "open",
                              "since": now - 400 - 100 * i, "next_trial_at": now + 3600}
    return view


def worker_parts(settings: Settings, pool: ImagePool) -> dict[str, Any]:
    """Real parts of a worker, unstarted: what ServiceLevel and Heartbeat read."""
    feed = UploadFeed(settings, None, max_inflight=settings.max_inflight,  # type: ignore[arg-type]
                      finish_within_s=300.0)
    feed.ledger.assign({TopicPartition(uploads_topic(settings.topic_prefix), p)
                        for p in range(4)})
    scheduler = RetryScheduler(None, settings, None, None)  # type: ignore[arg-type]
    control = ControlView(settings)
    service = ServiceLevel(settings, feed=feed, scheduler=scheduler, pool=pool, control=control)
    return {"feed": feed, "scheduler": scheduler, "control": control, "service": service,
            "breakers": refusing_breakers(settings, time.time())}


def cluster_sample(i: int, t0: float) -> ClusterSample:
    """The i-th evaluation's input: 3 workers, 12 partitions moving, 2 refusing breakers."""
    now = t0 + 10.0 * i
    workers = tuple(
        WorkerSample(id=f"bench-host-{k}", seen_at=now - 1.5 * k, interval_s=5.0,
                     health=0.9 - 0.05 * k + 0.02 * math.sin(i / 7),
                     attempts={"ok": 40 * i + k, "failed": i // 4, "input_error": i // 50,
                               "deferred": 0})
        for k in range(3))
    partitions = {p: (100 * i + p, 100 * i + p + (p % 3)) for p in range(PARTITIONS)}
    refusing = {name: t0 - 400 - 100 * n for n, name in enumerate(BREAKERS)}
    return ClusterSample(now=now, workers=workers, partitions=partitions,
                         refusing_since=refusing, dead_letters=i // 3)


# --------------------------------------------------------------------------- micro


@dataclass
class Micro:
    costs: dict[str, Cost] = field(default_factory=dict)
    system_processes: int = 0
    history: int = 0
    heartbeat_bytes: int = 0
    backlogs: list[int] = field(default_factory=list)
    topics: int = 0
    partitions: int = 0

    def add(self, key: str, cost: Cost) -> None:
        self.costs[key] = cost
        print(f"  {cost.name}: {cost.thread_us:,.1f} us/call thread CPU "
              f"({cost.process_us:,.1f} process, {cost.wall_us:,.1f} wall; {cost.calls} calls)",
              flush=True)


async def publish_fixtures(settings: Settings, heartbeat: Heartbeat, beats: int, dead: int,
                           uploads: bool) -> Cost:
    """Heartbeats of 3 workers (the last ones current), dead letters, uploads with the
    uploads group's offsets committed 2 short of the end; returns the per-heartbeat send cost
    (send + ack, one at a time, as ``Heartbeat.beat`` does)."""
    prefix = settings.topic_prefix
    producer = kafka.producer(settings, role="bench")
    await kafka.start(producer, settings)
    try:
        now = time.time()
        bodies = []
        for n in range(beats):
            body = heartbeat.record(now - (beats - n) * 5.0 / 3)
            body["id"] = f"bench-host-{n % 3}"
            bodies.append(body)
        # warm the connection and metadata before timing
        await producer.send_and_wait(workers_topic(prefix), key=b"bench-host-0",
                                     value=orjson.dumps(bodies[0]))
        t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        for body in bodies:
            await producer.send_and_wait(workers_topic(prefix), key=body["id"].encode(),
                                         value=orjson.dumps(body))
        t1, p1, w1 = time.thread_time(), time.process_time(), time.perf_counter()
        send = Cost("heartbeat send + ack (aiokafka, acks=all)", beats,
                    (t1 - t0) / beats * 1e6, (p1 - p0) / beats * 1e6, (w1 - w0) / beats * 1e6)
        for n in range(dead):
            letter = {"schema": DEADLETTER_SCHEMA, "event_id": uuid.uuid4().hex,
                      "error": {"code": ("decode_failed", "retries_exhausted")[n % 2]},
                      "at": epoch_iso(now - dead + n, "milliseconds")}
            await producer.send(dlq_topic(prefix), value=orjson.dumps(letter))
        if uploads:
            for p in range(PARTITIONS):
                for n in range(10):
                    await producer.send(uploads_topic(prefix), partition=p,
                                        value=orjson.dumps({"bench": n}))
        await producer.flush()
    finally:
        await producer.stop()
    if uploads:
        consumer = kafka.consumer(settings, group=settings.uploads_group, role="bench-commit")
        await kafka.start(consumer, settings)
        try:
            tps = [TopicPartition(uploads_topic(prefix), p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.commit({tp: 8 for tp in tps})
        finally:
            await consumer.stop()
    return send


async def micro(bootstrap: str, scale: float, backlogs: tuple[int, ...]) -> Micro:
    out = Micro(system_processes=len(psutil.pids()))
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    CREATED.append(prefix)
    settings = bench_settings(bootstrap, prefix)
    print(f"micro: prefix {prefix}; {out.system_processes} processes on the machine", flush=True)

    def n(count: int) -> int:
        return max(10, int(count * scale))

    pool = ImagePool(workers=1, task_timeout_s=60, memory_limit_mb=settings.worker_memory_mb)
    try:
        await pool.warm_up()
        parts = worker_parts(settings, pool)
        service: ServiceLevel = parts["service"]
        out.add("evaluate", measure("ServiceLevel.evaluate()", service.evaluate, n(2000)))
        out.add("psutil", measure("  of which psutil (_cpu_and_rss)", service._cpu_and_rss,
                                  n(2000)))
        me = psutil.Process(os.getpid())
        out.add("children", measure("  of which Process.children(recursive=True)",
                                    lambda: me.children(recursive=True), n(2000)))
        sampled = len(service._processes)

        heartbeat = Heartbeat(settings, None, feed=parts["feed"], service=service, pool=pool,
                              scheduler=parts["scheduler"], breakers=parts["breakers"])
        out.heartbeat_bytes = len(orjson.dumps(heartbeat.record()))
        out.add("record", measure("Heartbeat.record() + orjson.dumps",
                                  lambda: orjson.dumps(heartbeat.record()), n(5000)))
        out.add("export", measure("Heartbeat.export() (gauges)",
                                  lambda: heartbeat.export(time.time()), n(5000)))
    finally:
        await pool.aclose()
    out.costs["evaluate"].note = f"{sampled} processes sampled (this one + its children)"

    rules = AlertRules(rule_config(settings.monitor))
    t0 = time.time() - 3600
    for i in range(360):
        rules.evaluate(cluster_sample(i, t0))
    step = iter(range(360, 10**9))
    out.history = len(rules._attempts)
    out.add("rules", measure("AlertRules.evaluate (3 workers, 12 partitions, 2 breakers, 1 h "
                             "history)", lambda: rules.evaluate(cluster_sample(next(step), t0)),
                             n(2000), warmup=0))

    await declare_pipeline_topics(settings)
    evaluator = AlertEvaluator(None, settings, None, parts["breakers"],  # type: ignore[arg-type]
                               "bench")
    published = 0
    try:
        for k, backlog in enumerate(backlogs):
            send = await publish_fixtures(settings, heartbeat, backlog - published,
                                          dead=300 if k == 0 else 0, uploads=k == 0)
            published = backlog
            if k == 0:
                out.add("send", send)
            sample = await evaluator.sample(time.time())
            if len(sample.workers) != 3 or len(sample.partitions) != PARTITIONS:
                raise SystemExit(f"unexpected sample: {len(sample.workers)} workers, "
                                 f"{len(sample.partitions)} partitions")
            out.backlogs.append(backlog)
            if k == 0:
                # the share of a full-cluster metadata fetch: what ``ClusterReader.read``'s
                # ``consumer.assign([])`` triggers in aiokafka (an empty topic set refreshes
                # the metadata of every topic in the cluster)
                probe = kafka.consumer(settings, group=None, role="bench-metadata")
                await kafka.start(probe, settings)
                try:
                    names = await probe.topics()
                    out.topics = len(names)
                    admin = kafka.admin(settings)
                    await kafka.start(admin, settings)
                    try:
                        described = await admin.describe_topics(sorted(names))
                    finally:
                        await admin.close()
                    out.partitions = sum(len(t.get("partitions", ())) for t in described)
                    out.add("metadata", await measure_async(
                        f"full-cluster metadata fetch (consumer.topics(), {out.topics} topics)",
                        probe.topics, n(20)))
                finally:
                    await probe.stop()
            out.add(f"sample{backlog}", await measure_async(
                f"AlertEvaluator.sample() via ClusterReader, {backlog} heartbeats on the topic",
                lambda: evaluator.sample(time.time()), n(40),
                note=f"{sample.dead_letters} dead letters, lag "
                     f"{sum(e - (c or 0) for c, e in sample.partitions.values())} records"))
    finally:
        await evaluator.reader.close()
    return out


# --------------------------------------------------------------------------- end to end


@dataclass
class Idle:
    round: int
    mode: str
    cpu_s: float
    children_cpu_s: float
    window_s: float
    heartbeats: int
    owner: bool
    load: tuple[float, float]  # 1-minute load average at the start and the end of the window

    @property
    def share(self) -> float:
        return self.cpu_s / self.window_s * 100


def cpu_of(proc: psutil.Process) -> tuple[float, float]:
    times = proc.cpu_times()
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            ct = child.cpu_times()
            kids += ct.user + ct.system
        except psutil.Error:
            continue
    return times.user + times.system, kids


def end_to_end(bootstrap: str, root: Path, rounds: int, idle_s: float,
               settle_s: float) -> list[Idle]:
    out = []
    for r in range(1, rounds + 1):
        modes = ["on", "off"] if r % 2 else ["off", "on"]
        envs = {m: PipelineEnv(bootstrap=bootstrap, root=root / f"r{r}-{m}", workers=1)
                for m in modes}
        CREATED.extend(env.prefix for env in envs.values())
        workers: dict[str, WorkerProcess] = {}
        try:
            for mode in modes:
                envs[mode].root.mkdir(parents=True)
                extra = {"PIXELPIPE_HEARTBEAT": "5s", "PIXELPIPE_ALERT_INTERVAL": "10s"} \
                    if mode == "on" else OFF
                print(f"round {r}: starting worker '{mode}'", flush=True)
                workers[mode] = envs[mode].start_worker(mode, PIXELPIPE_WORKERS="1", **extra)
            time.sleep(settle_s)
            procs = {m: psutil.Process(w.process.pid) for m, w in workers.items()}
            before = {m: cpu_of(p) for m, p in procs.items()}
            load0 = os.getloadavg()[0]
            began, w0 = time.time(), time.monotonic()
            time.sleep(idle_s)
            after = {m: cpu_of(p) for m, p in procs.items()}
            window, ended = time.monotonic() - w0, time.time()
            load1 = os.getloadavg()[0]
        finally:
            for worker in workers.values():
                worker.stop()
        for mode in modes:
            beats = [rec for rec in read_to_end(bootstrap, [workers_topic(envs[mode].prefix)])
                     if began * 1000 <= rec.timestamp <= ended * 1000]
            owner = "this worker evaluates the cluster's alerts" in workers[mode].log()
            idle = Idle(r, mode, after[mode][0] - before[mode][0],
                        after[mode][1] - before[mode][1], window, len(beats), owner,
                        (load0, load1))
            print(f"  round {r} {mode}: {idle.cpu_s:.2f} s CPU in {window:.1f} s "
                  f"({idle.share:.2f} % of a core), {idle.heartbeats} heartbeats, "
                  f"owner evaluated: {owner}", flush=True)
            out.append(idle)
    return out


async def delete_created_topics(bootstrap: str) -> int:
    """Delete the topics of the prefixes this run created (workers' faust topics too)."""
    settings = Settings.from_env({}, broker=f"kafka://{bootstrap}")
    admin = kafka.admin(settings)
    await kafka.start(admin, settings)
    try:
        names = [t for t in await admin.list_topics()
                 if any(t.startswith((f"{p}.", f"{p}-")) for p in CREATED)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- report


def span(a: float, b: float) -> str:
    return f"{min(a, b):.2f}-{max(a, b):.2f}"


def pct(us: float, per_s: float) -> float:
    return us * per_s / 1e6 * 100


def report(args: argparse.Namespace, m: Micro, idle: list[Idle], started: dt.datetime,
           wall_s: float, loads: tuple[float, float]) -> str:
    c = m.costs
    big = m.backlogs[-1]
    small = m.backlogs[0]
    heartbeat_us = c["record"].thread_us + c["export"].thread_us + c["send"].thread_us
    eval_small = c[f"sample{small}"].thread_us + c["rules"].thread_us
    eval_big = c[f"sample{big}"].thread_us + c["rules"].thread_us
    rows = [
        ("ServiceLevel.evaluate()", c["evaluate"], 1.0, 1.0, c["evaluate"].note),
        ("of which psutil sampling (`_cpu_and_rss`)", c["psutil"], 1.0, 1.0, ""),
        ("of which `Process.children(recursive=True)`", c["children"], 1.0, 1.0,
         f"scans every process on the machine ({m.system_processes})"),
        ("Heartbeat.record() + orjson.dumps", c["record"], 1 / 5, 1.0,
         f"{m.heartbeat_bytes} bytes"),
        ("Heartbeat.export() (lag / backlog gauges)", c["export"], 1 / 5, 1.0, ""),
        ("heartbeat send + ack (aiokafka producer, acks=all)", c["send"], 1 / 5, 1.0,
         "one at a time, as `beat` awaits it"),
        (f"AlertRules.evaluate ({m.history} samples of history)", c["rules"], 1 / 10, 1.0,
         "owner only"),
    ]
    for backlog in m.backlogs:
        cost = c[f"sample{backlog}"]
        rows.append((f"AlertEvaluator.sample(), {backlog} heartbeats on the topic", cost,
                     1 / 10, 1.0, f"owner only; {cost.note}"))
    rows.append((f"of which (about): a full-cluster metadata fetch, {m.topics} topics / "
                 f"{m.partitions} partitions", c["metadata"], 1 / 10, 1.0,
                 "timed as `consumer.topics()`; once per `ClusterReader.read` (see below)"))
    table = "\n".join(
        f"| {name} | {cost.calls} | {cost.thread_us:,.0f} | {cost.process_us:,.0f} | "
        f"{cost.wall_us:,.0f} | {d:g} | {pct(cost.thread_us, d):.3f} % | {t:g} | "
        f"{pct(cost.thread_us, t):.3f} % | {note} |"
        for name, cost, d, t, note in rows)

    def total(per_heartbeat: float, per_eval: float) -> tuple[float, float, float, float]:
        ev = c["evaluate"].thread_us
        return (pct(ev, 1) + pct(per_heartbeat, 1 / 5),
                pct(ev, 1) + pct(per_heartbeat, 1 / 5) + pct(per_eval, 1 / 10),
                pct(ev, 1) + pct(per_heartbeat, 1),
                pct(ev, 1) + pct(per_heartbeat, 1) + pct(per_eval, 1))

    lo, hi = total(heartbeat_us, eval_small), total(heartbeat_us, eval_big)
    per_beat = (c[f"sample{big}"].thread_us - c[f"sample{small}"].thread_us) / (big - small) \
        if big != small else float("nan")
    totals = (
        "| worker | default intervals | test intervals (1 s heartbeat, 1 s evaluation) |\n"
        "|---|---:|---:|\n"
        f"| any worker (sampling + heartbeat) | {lo[0]:.2f} % | {lo[2]:.2f} % |\n"
        f"| the owner, {small} heartbeats on the topic | {lo[1]:.2f} % | {lo[3]:.2f} % |\n"
        f"| the owner, {big} heartbeats on the topic | {hi[1]:.2f} % | {hi[3]:.2f} % |")

    idle_rows = "\n".join(
        f"| {i.round} | {i.mode} | {i.window_s:.1f} | {i.heartbeats} | "
        f"{'yes' if i.owner else 'no'} | {i.cpu_s:.2f} | **{i.share:.2f} %** | "
        f"{i.children_cpu_s:.2f} | {i.load[0]:.2f} -> {i.load[1]:.2f} |" for i in idle)
    diffs = []
    for r in sorted({i.round for i in idle}):
        on = next(i for i in idle if i.round == r and i.mode == "on")
        off = next(i for i in idle if i.round == r and i.mode == "off")
        diffs.append(on.share - off.share)
    diff_text = ", ".join(f"{d:+.2f}" for d in diffs)
    mean_diff = statistics.mean(diffs) if diffs else float("nan")
    idle_on = [i.share for i in idle if i.mode == "on"]

    worst_micro = hi[1]
    verdict_ok = worst_micro < 2.0 and (not idle or max(diffs) < 2.0)
    verdict = (
        f"**{'Met' if verdict_ok else 'Not met'}** at the default intervals: monitoring costs "
        f"{lo[0]:.2f} % of one core on a worker and {span(lo[1], hi[1])} % on the owner "
        f"(micro-costs, {small}-{big} heartbeats on the topic)"
        + (f"; seen from outside, {mean_diff:+.2f} points on an idle owner "
           f"(rounds: {diff_text})" if idle else "")
        + f" — goal under 2 %. At the test intervals the owner pays {span(lo[3], hi[3])} %.")

    command = "benchmarks/monitoring/bench_overhead.py " + " ".join(sys.argv[1:])
    cpu = platform.processor() or platform.machine()
    return f"""# Monitoring overhead: heartbeats, health sampling, alert evaluation (issue 11)

Command: `.venv/bin/python {command}` (broker from `infra/kafka.sh up`)

Run {started:%Y-%m-%d %H:%M} UTC on {cpu}, {os.cpu_count()} cores, CPython \
{platform.python_version()}, psutil {psutil.__version__}, aiokafka {aiokafka.__version__};
{m.system_processes} processes on the machine; broker with {m.topics} topics /
{m.partitions} partitions; 1-minute load average {loads[0]:.2f} at the start,
{loads[1]:.2f} at the end; whole run {wall_s:.0f} s.

## Micro-costs, in-process

CPU per call: `time.thread_time` of the calling thread (each of these runs on one thread:
the event loop's), the figure the shares are computed from; process CPU and wall time per
call for comparison (process CPU also counts the image pool's pebble manager threads and
aiokafka's background tasks). Share of one core = thread CPU per call x calls per second.
Parts: `ServiceLevel` from `Settings` with a real `ImagePool` of 1 process (warmed up) and a
real, unstarted `UploadFeed` (4 partitions assigned, nothing in flight, no consumer),
`RetryScheduler` (nothing waiting), `ControlView` (no override); the heartbeat also has a
`BreakerView` with 2 refusing breakers. `AlertRules` and `AlertEvaluator.sample()` as in the
evaluator: 3 workers, 12 uploads partitions (lag 2 each), 2 refusing breakers, history of one
hour at 10 s. `sample()` runs against the real broker on a fresh topic prefix declared by
`declare_pipeline_topics` with 300 dead letters and the heartbeats of 3 workers; broker CPU
not counted.

| cost | calls timed | thread CPU µs/call | process CPU µs/call | wall µs/call | calls/s default | % of one core, default | calls/s test | % of one core, test | note |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
{table}

Per worker, sum of the above (heartbeat = record + export + send; evaluation = sample +
rules, owner only):

{totals}

Where the owner's evaluation goes: `sample()` costs {c[f"sample{small}"].thread_us / 1000:.1f}
ms of CPU with {small} heartbeats on the workers topic and {c[f"sample{big}"].thread_us / 1000:.1f}
ms with {big} (about {per_beat:.1f} µs more per heartbeat record: the topic is read from its
beginning at every evaluation, and compaction leaves up to a segment, 10 minutes, of them);
`AlertRules.evaluate` adds {c["rules"].thread_us / 1000:.2f} ms. A full-cluster metadata fetch
alone costs {c["metadata"].thread_us / 1000:.1f} ms on this broker ({m.topics} topics): each
`ClusterReader.read` ends with `consumer.assign([])`, and aiokafka answers an empty topic set
(`set_topics([])` -> `force_metadata_update`, `MetadataRequest(None)`) by fetching the
metadata of every topic in the cluster, so that cost is paid once per evaluation and grows
with the cluster's topics, not with pixelpipe's.

## End to end: idle workers, CPU of the worker process

{len(idle) // 2 if idle else 0} rounds; each round a pair of real `pixelpipe worker`
processes (1 image process each, `PipelineEnv` of `tests/harness.py`, each its own topic
prefix and group, so each is its pipeline's only worker and its alert owner), started one
after the other (the order alternates), then {args.settle:g} s to settle (past the first
alert evaluation), then psutil `cpu_times` (user + system) of each worker process over the
same {args.idle:g} s idle window. `on`: `PIXELPIPE_HEARTBEAT=5s`,
`PIXELPIPE_ALERT_INTERVAL=10s` (the defaults); `off`: both `3600s` (one heartbeat at start,
no evaluation in the window). The ServiceLevel sampler (every 1 s) has no setting to switch
it off, so it runs in both: the difference is heartbeats + alert evaluation, not sampling.
Heartbeats counted on the workers topic by record timestamp within the window. Image
processes' CPU (excluded from the worker's) in the last column.

| round | monitoring | window s | heartbeats in window | owner evaluated | worker CPU s | % of one core | image processes CPU s | load average (1 min) |
|---|---|---:|---:|---|---:|---:|---:|---|
{idle_rows}

Difference on - off, percentage points of one core, per round: {diff_text or "-"}
(mean {mean_diff:+.2f}); an idle worker with monitoring on:
{", ".join(f"{s:.2f} %" for s in idle_on) or "-"}.

## Verdict

{verdict}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window per worker, s")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="wait after both workers are ready, s")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of idle workers")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the micro-benchmark iteration counts")
    parser.add_argument("--backlogs", default="300,1800",
                        help="heartbeats on the workers topic when sample() is timed")
    parser.add_argument("--keep-topics", action="store_true",
                        help="leave this run's topics on the broker")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for name in MONITOR_VARS:  # the workers' intervals are set explicitly, never inherited
        os.environ.pop(name, None)
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[0]
    w0 = time.monotonic()
    backlogs = tuple(int(b) for b in args.backlogs.split(","))
    try:
        m = asyncio.run(micro(args.bootstrap, args.scale, backlogs))
        idle: list[Idle] = []
        if args.rounds > 0:
            with tempfile.TemporaryDirectory() as tmp:
                idle = end_to_end(args.bootstrap, Path(tmp), args.rounds, args.idle,
                                  args.settle)
    finally:
        if not args.keep_topics and CREATED:
            print(f"deleted {asyncio.run(delete_created_topics(args.bootstrap))} topics of "
                  f"this run", flush=True)
    text = report(args, m, idle, started, time.monotonic() - w0,
                  (load_start, os.getloadavg()[0]))
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
