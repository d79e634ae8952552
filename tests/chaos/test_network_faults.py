"""The network between worker and broker (issue 14): 500 ms of added latency, then a cut
longer than every session timeout of the worker's consumers, then healed, with a real TCP
fault proxy (Toxiproxy, ``infra/toxiproxy.sh``) between them.

The test starts its own broker (``infra/kafka.sh`` on free ports, a run dir in pytest's temp
dir, ``down --purge`` afterwards) with a ``PROXIED`` listener advertised as the proxy's
address, so the worker, bootstrapped on the proxy, is told the proxy for the broker and all
its connections (fetch, produce, group coordinator, commits) go through it. The publisher and
the outside reader use the broker's direct PLAINTEXT listener: the fault is between *worker*
and broker; uploads keep arriving during the cut, as they would from clients on a healthy
network, and the judge of what happened reads the topics through a link nothing is done to.

Scenario, while ~200 small uploads are published steadily (one every 0.3 s until the heal):
5 s normal; (a) a 500 ms latency toxic for 15 s; (b) the proxy disabled (connections dropped,
new ones refused) for 40 s: longer than the 10 s sessions of the uploads feed, the retry
scheduler and faust's consumer (the broker's log shows every group's member expired), and
longer than the producer's 30 s request timeout; (c) healed. A worker that stopped during the cut (a
delivery that fails after the producer's timeout stops it, by design) is started again after
the heal, as an orchestrator would. Then every published event id must end processed or
dead-lettered (read from outside); duplicates are counted and must be idempotent (the same
output keys); the time from the heal until the last upload is processed is printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import (
    REPO,
    PipelineEnv,
    WorkerProcess,
    free_port,
    read_to_end,
    run_infra,
    wait_for_records,
)
from images import mixed_images

from pixelpipe.schemas import decode_processed
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic

pytestmark = [pytest.mark.broker, pytest.mark.chaos]

KAFKA_SH = REPO / "infra" / "kafka.sh"
TOXIPROXY_SH = REPO / "infra" / "toxiproxy.sh"
RENDITIONS = [{"name": "t", "operations": ["resize:width=96,height=96,fit=inside",
                                           "format:type=jpeg,quality=80"]}]
PUBLISH_EVERY_S = 0.3
NORMAL_S, LATENCY_S, CUT_S = 5.0, 15.0, 40.0
LATENCY_MS = 500
#: the worker's consumers' session timeouts: uploads feed and retry scheduler 10 s
#: (agents/uploads_feed.py, agents/retry.py), faust's own consumer 10 s (agents/app.py)
LONGEST_SESSION_S = 10.0


@dataclass
class Toxiproxy:
    """Toxiproxy's HTTP API (a few calls of it)."""

    url: str

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def add_latency(self, proxy: str, ms: int) -> None:
        self.call("POST", f"/proxies/{proxy}/toxics",
                  {"name": "latency", "type": "latency", "attributes": {"latency": ms}})

    def remove(self, proxy: str, toxic: str) -> None:
        self.call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    def enable(self, proxy: str, enabled: bool) -> None:
        self.call("POST", f"/proxies/{proxy}", {"enabled": enabled})


@dataclass
class ProxiedBroker:
    direct: str  # the PLAINTEXT listener: publisher and outside reader
    proxied: str  # the proxy's listen address, which the PROXIED listener advertises
    log_path: Path
    toxiproxy: Toxiproxy
    proxy: str = "kafka"


@pytest.fixture(scope="module")
def proxied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedBroker]:
    run = tmp_path_factory.mktemp("netfault")
    kafka_port, controller, listen, proxy_port, api = (free_port() for _ in range(5))
    kafka_env = {**os.environ, "KAFKA_PORT": str(kafka_port),
                 "KAFKA_CONTROLLER_PORT": str(controller), "KAFKA_HOME_DIR": str(run / "kafka"),
                 "KAFKA_PROXIED_PORT": str(listen),
                 "KAFKA_ADVERTISED_PROXY_PORT": str(proxy_port),
                 "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m"}
    toxi_env = {**os.environ, "TOXIPROXY_PORT": str(api),
                "TOXIPROXY_HOME_DIR": str(run / "toxiproxy")}
    try:
        assert run_infra(KAFKA_SH, kafka_env, "up").strip() == f"127.0.0.1:{kafka_port}"
        toxiproxy = Toxiproxy(run_infra(TOXIPROXY_SH, toxi_env, "up").strip())
        toxiproxy.call("POST", "/proxies", {"name": "kafka", "listen": f"127.0.0.1:{proxy_port}",
                                            "upstream": f"127.0.0.1:{listen}", "enabled": True})
        yield ProxiedBroker(direct=f"127.0.0.1:{kafka_port}", proxied=f"127.0.0.1:{proxy_port}",
                            log_path=run / "kafka" / "kafka.log", toxiproxy=toxiproxy)
    finally:
        try:
            run_infra(TOXIPROXY_SH, toxi_env, "down", timeout=60)
        finally:
            run_infra(KAFKA_SH, kafka_env, "down", "--purge", timeout=120)


def test_the_proxy_advertises_itself_so_every_worker_connection_goes_through_it(
    proxied_broker: ProxiedBroker,
) -> None:
    from aiokafka import AIOKafkaClient

    async def brokers(bootstrap: str) -> set[str]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            return {f"{b.host}:{b.port}" for b in client.cluster.brokers()}
        finally:
            await client.close()

    assert asyncio.run(brokers(proxied_broker.proxied)) == {proxied_broker.proxied}
    assert asyncio.run(brokers(proxied_broker.direct)) == {proxied_broker.direct}


class SteadyPublisher(threading.Thread):
    """Publishes one upload every ``PUBLISH_EVERY_S`` (direct listener) until stopped."""

    def __init__(self, pipeline: PipelineEnv, sources: list[Path]) -> None:
        super().__init__(name="steady-publisher", daemon=True)
        self.pipeline, self.sources = pipeline, sources
        self.ids: list[str] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()

    async def _publish(self) -> None:
        async with Publisher(self.pipeline.settings()) as publisher:
            self.ready.set()
            n = 0
            began = time.monotonic()
            while not self.stop_event.is_set():
                data = self.sources[n % len(self.sources)].read_bytes()
                upload = await publisher.publish_bytes(data, RENDITIONS, image_id=f"img-{n}")
                self.ids.append(upload.event_id)
                n += 1
                await asyncio.sleep(max(0.0, began + n * PUBLISH_EVERY_S - time.monotonic()))


def expired_groups(log: str, prefix: str) -> set[str]:
    """Consumer groups of ``prefix`` whose member the broker removed on a session expiry."""
    pattern = re.compile(r"Member \S+ in group (" + re.escape(prefix) + r"\S*) has failed")
    return set(pattern.findall(log))


def test_latency_then_a_cut_longer_than_the_session_timeout_then_heal_loses_nothing(
    proxied_broker: ProxiedBroker, tmp_path: Path,
) -> None:
    toxi, proxy = proxied_broker.toxiproxy, proxied_broker.proxy
    # the worker reaches the broker only through the proxy; the publisher and the judge direct
    through_proxy = PipelineEnv(bootstrap=proxied_broker.proxied, root=tmp_path, workers=1)
    direct = dataclasses.replace(through_proxy, bootstrap=proxied_broker.direct)
    sources = [img.path for img in mixed_images(tmp_path / "src", 8, max_side=320)
               if img.path.suffix in (".jpg", ".png", ".webp")]
    publisher = SteadyPublisher(direct, sources)
    publisher.start()  # declares the topics, then publishes
    assert publisher.ready.wait(60) and publisher.error is None, publisher.error
    workers: list[WorkerProcess] = [through_proxy.start_worker("w1")]
    timeline: dict[str, float] = {}  # phase -> when it began (monotonic)
    walls: dict[str, float] = {}  # phase -> when it began (epoch ms, as record timestamps)
    exited: list[tuple[str, float, int]] = []  # (phase, seconds into it, exit code)
    expiries: dict[str, float] = {}  # group -> seconds into the cut its member expired
    broker_log_start = proxied_broker.log_path.stat().st_size

    def watch(phase: str, seconds: float) -> None:
        began = timeline[phase] = time.monotonic()
        walls[phase] = time.time() * 1000
        while (left := began + seconds - time.monotonic()) > 0:
            if not exited and workers[0].process.poll() is not None:
                exited.append((phase, time.monotonic() - began, workers[0].process.returncode))
            if phase == "cut":
                with proxied_broker.log_path.open(errors="replace") as log:
                    log.seek(broker_log_start)
                    for group in expired_groups(log.read(), through_proxy.prefix):
                        expiries.setdefault(group, time.monotonic() - began)
            time.sleep(min(0.5, left))

    try:
        watch("normal", NORMAL_S)
        toxi.add_latency(proxy, LATENCY_MS)
        watch("latency", LATENCY_S)
        toxi.remove(proxy, "latency")
        toxi.enable(proxy, False)
        watch("cut", CUT_S)
        toxi.enable(proxy, True)
        healed = time.monotonic()
        walls["healed"] = time.time() * 1000
        publisher.stop_event.set()
        publisher.join(30)
        assert not publisher.is_alive() and publisher.error is None, publisher.error
        ids = list(publisher.ids)
        published_at_heal = len(ids)

        restarts = 0

        def all_done(records: list[Any]) -> bool:
            nonlocal restarts
            if workers[-1].process.poll() is not None:
                if not exited:
                    exited.append(("after heal", time.monotonic() - healed,
                                   workers[-1].process.returncode))
                restarts += 1  # as an orchestrator would: start it again
                workers.append(through_proxy.start_worker(f"again-{restarts}"))
            return set(ids) <= {orjson.loads(r.value)["event_id"] for r in records}

        outcome_topics = [processed_topic(direct.prefix), dlq_topic(direct.prefix)]
        wait_for_records(direct.bootstrap, outcome_topics, all_done, timeout=150,
                         what="an outcome for every upload after the heal")
        recovered_in = time.monotonic() - healed
        alive_at_end = workers[-1].process.poll() is None
    finally:
        publisher.stop_event.set()
        codes = [w.stop() for w in workers]

    # judged from the topics, as an outside reader, to their end
    records = read_to_end(direct.bootstrap, outcome_topics)
    processed: dict[str, list[tuple[str, ...]]] = {}
    dead: Counter[str] = Counter()
    for record in records:
        if record.topic == processed_topic(direct.prefix):
            event = decode_processed(record.value)
            processed.setdefault(event.event_id, []).append(
                tuple(sorted(r.uri for r in event.renditions)))
        else:
            dead[orjson.loads(record.value)["event_id"]] += 1
    lost = set(ids) - set(processed) - set(dead)
    # upload -> outcome (the worker's send time) by the phase the upload was published in
    published = {orjson.loads(r.value)["event_id"]: r.timestamp
                 for r in read_to_end(direct.bootstrap, [uploads_topic(direct.prefix)])}
    sent: dict[str, int] = {}
    for record in records:
        sent.setdefault(orjson.loads(record.value)["event_id"], record.timestamp)
    waits: dict[str, list[float]] = {"normal": [], "latency": [], "cut": []}
    for eid, at in published.items():
        if eid in sent:
            phase = ("cut" if at >= walls["cut"] else "latency" if at >= walls["latency"]
                     else "normal")
            waits[phase].append((sent[eid] - at) / 1000)
    per_phase = ", ".join(
        f"{phase} {len(w)} uploads median {sorted(w)[len(w) // 2]:.2f} s max {max(w):.2f} s"
        for phase, w in waits.items() if w)
    duplicated = {eid: outs for eid, outs in processed.items() if len(outs) > 1}
    extra = sum(len(outs) - 1 for outs in duplicated.values())
    cut_expired = sorted(f"{g} after {s:.1f} s" for g, s in expiries.items())
    crashed = (f"the worker stopped ({exited[0][0]}, {exited[0][1]:.1f} s in, exit code "
               f"{exited[0][2]}) and was started again after the heal ({restarts} restart(s))"
               if exited else "the worker rode it out (no restart)")
    print(f"\nnetwork faults: {len(ids)} uploads ({published_at_heal} by the heal); "
          f"{NORMAL_S:g} s normal, {LATENCY_MS} ms latency for {LATENCY_S:g} s, cut {CUT_S:g} s, "
          f"healed; {crashed}; groups expired during the cut: {cut_expired or 'none'}; "
          f"lost {len(lost)}, dead-lettered {len(dead)}, duplicated ids {len(duplicated)} "
          f"({extra} extra processed events); last upload processed {recovered_in:.1f} s "
          f"after the heal; stop codes {codes}; upload -> outcome sent, by the phase it was "
          f"published in: {per_phase}")

    assert not lost, f"{len(lost)} of {len(ids)} uploads lost:\n{workers[-1].log()[-4000:]}"
    assert not dead, f"dead-lettered during a network fault: {dict(dead)}"
    # duplicates are idempotent: every copy names the same output keys
    assert all(len(set(outs)) == 1 for outs in duplicated.values()), duplicated
    # the cut outlasted the sessions: the broker expired the worker's members (feed, retry, faust)
    assert len(expiries) >= 3, f"only {cut_expired} expired: the cut was not long enough"
    assert max(expiries.values()) < CUT_S, expiries
    assert alive_at_end, "the worker (or its restart) did not survive to the end"
