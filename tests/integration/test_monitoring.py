"""Monitoring on the real broker (issue 11): heartbeats and ``pixelpipe status``, alerts on
``pixelpipe.alerts`` and at a webhook, the predictive alert, the dashboard's data.

Windows and intervals are shortened by settings (``PIXELPIPE_ALERT_*``, ``PIXELPIPE_HEARTBEAT``);
everything is judged from outside: the CLI's JSON, the alerts topic, a loopback webhook.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, read_to_end, wait_for_records, wait_until
from images import mixed_images

from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import alerts_topic, processed_topic

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SMALL = [{"name": "t", "operations": ["resize:width=64", "format:type=jpeg,quality=80"]}]
FAST_MONITOR = {
    "PIXELPIPE_HEARTBEAT": "1s",
    "PIXELPIPE_ALERT_INTERVAL": "1s",
}


class Webhook:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(orjson.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def alert_events(pipeline: PipelineEnv) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_to_end(pipeline.bootstrap,
                                                       [alerts_topic(pipeline.prefix)])]


async def publish_steadily(pipeline: PipelineEnv, sources: list[Path], rate: float,
                           seconds: float) -> list[str]:
    ids = []
    async with Publisher(pipeline.settings()) as publisher:
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < seconds:
            upload = await publisher.publish_bytes(sources[i % len(sources)].read_bytes(), SMALL)
            ids.append(upload.event_id)
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
    return ids


async def publish_many(pipeline: PipelineEnv, sources: list[Path], count: int) -> None:
    async with Publisher(pipeline.settings()) as publisher:
        for i in range(count):
            await publisher.publish_bytes(sources[i % len(sources)].read_bytes(), SMALL)


def live_dashboard(worker: Any, tmp_path: Path, expect_text: dict[str, str]) -> None:
    """Open the worker's /dashboard in Debian's chromium (playwright, by executable path):
    each ``data-testid`` section shows its text, no console or page errors; a screenshot."""
    from playwright.sync_api import sync_playwright
    from test_dashboard_browser import ARTIFACTS, chromium_path

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(),
                                    args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{worker.web_port}/dashboard?poll=500")
            for testid, text in expect_text.items():
                page.get_by_test_id(testid).filter(has_text=text).wait_for(timeout=15_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []


def status_json(pipeline: PipelineEnv) -> dict[str, Any]:
    return dict(orjson.loads(pipeline.cli("status", "--json").stdout))


def test_a_failure_burst_fires_the_error_ratio_alert_on_the_topic_and_the_webhook(
    pipeline: PipelineEnv, tmp_path: Path, webhook: Webhook
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", 8, max_side=500)
               if img.path.suffix in (".jpg", ".png")]
    worker = pipeline.start_worker(
        "burst", **FAST_MONITOR,
        # 15 % of resize calls fail for the first 25 s of the worker, then none
        PIXELPIPE_FAULTS="resize:storage_unavailable:p=0.15/25s",
        PIXELPIPE_ALERT_SHORT_WINDOW="8s", PIXELPIPE_ALERT_LONG_WINDOW="25s",
        PIXELPIPE_ALERT_WEBHOOK=webhook.url,
    )
    try:
        # the faults end 25 s after the worker's start, its start-up included; the alert
        # resolves once the short window is clean or holds too few attempts to judge
        asyncio.run(publish_steadily(pipeline, sources, rate=8, seconds=30))

        def rule_states() -> list[str]:
            return [e["state"] for e in alert_events(pipeline) if e["rule"] == "error_ratio"]

        wait_until(lambda: rule_states()[:2] == ["firing", "resolved"], 60,
                   "the error-ratio alert to fire and then resolve")
        events = [e for e in alert_events(pipeline) if e["rule"] == "error_ratio"]
        firing = events[0]
        assert firing["severity"] == "warning" and firing["threshold"] == 0.05
        # the short window's ratio when it fired: over the 5 % threshold, and of the order of
        # the injected 15 % (an 8 s window of a few dozen attempts is noisy: 33 % was seen)
        assert 0.05 < firing["value"] < 0.6, firing
        assert firing["summary"].startswith("error ratio")
        # the same events reached the webhook, in order
        wait_until(lambda: [(e["rule"], e["state"]) for e in webhook.received
                            if e["rule"] == "error_ratio"][:2]
                   == [("error_ratio", "firing"), ("error_ratio", "resolved")], 20,
                   "the webhook to get both")
        # and the token in its URL is in no log line
        assert "s3cret" not in worker.log()
    finally:
        worker.stop()


def test_a_steadily_declining_health_fires_the_prediction_before_the_threshold(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    sources = [img.path for img in mixed_images(tmp_path / "src", 4, max_side=300)
               if img.path.suffix in (".jpg", ".png")]
    # one upload at a time, each held 250 ms at fetch: at most 4 a second, whatever the CPU;
    # 6 a second offered makes the lag grow by at least 2 a second, so the lag pressure (0 at
    # 0 records, 1 at 100) by 0.02 a second: health crosses 0.7 near 15 s, 0.5 near 25 s (plus
    # the smoothing's few seconds); a line through 8 s of it foresees 0.7 within 30 s at once
    worker = pipeline.start_worker(
        "decline", **FAST_MONITOR,
        PIXELPIPE_MAX_INFLIGHT="1", PIXELPIPE_FAULTS="fetch:delay=250ms:always",
        PIXELPIPE_DEGRADE="off",  # the ladder would change the service rate; health still counts
        PIXELPIPE_HEALTH_TRIGGERS="lag_records=0:100",
        PIXELPIPE_ALERT_PREDICT_WINDOW="8s", PIXELPIPE_ALERT_PREDICT_HORIZON="30s",
    )
    try:
        asyncio.run(publish_steadily(pipeline, sources, rate=6, seconds=36))
        try:
            wait_until(lambda: any(e["rule"] == "health_low" for e in alert_events(pipeline)),
                       60, "health to fall below 0.5")
        except AssertionError as exc:  # say what the cluster did instead
            workers = [(w["health"], w["lag"], w["pressures"])
                       for w in status_json(pipeline)["workers"]]
            alerts = [(e["rule"], e["state"]) for e in alert_events(pipeline)]
            raise AssertionError(f"{exc}; workers (health, lag, pressures): {workers}; "
                                 f"alerts: {alerts}") from None
        first: dict[str, dict[str, Any]] = {}
        for event in alert_events(pipeline):
            if event["state"] == "firing":
                first.setdefault(event["rule"], event)
        predicted, crossed = first["health_predicted_low"], first["health_low"]
        assert predicted["at"] < crossed["at"], (predicted, crossed)
        # when the prediction fired, health itself was still above the predicted threshold
        assert "now " in predicted["summary"]
        now_health = float(predicted["summary"].rsplit("now ", 1)[1])
        assert now_health > 0.7, predicted
        assert crossed["severity"] == "critical"
    finally:
        worker.stop()


def test_a_workers_own_lag_counts_uploads_published_after_its_consumer_buffered_a_backlog(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    """The lag a worker reports (and its health and the alerts are computed from) against
    the group's lag an operator reads from the broker (``status``: log end - committed).

    aiokafka does not fetch a partition again while records of it are still buffered, so a
    worker that took its log ends from its last fetch missed every upload published since:
    24 uploads buffered, 24 more published, and the worker said about 24 where the broker
    said 48 until its buffers drained, one upload a second.
    """
    sources = [img.path for img in mixed_images(tmp_path / "src", 4, max_side=200)
               if img.path.suffix in (".jpg", ".png")]
    worker = pipeline.start_worker(
        "lagging", **FAST_MONITOR,
        PIXELPIPE_MAX_INFLIGHT="1", PIXELPIPE_FAULTS="fetch:delay=1s:always",
        PIXELPIPE_DEGRADE="off",
    )
    try:
        asyncio.run(publish_many(pipeline, sources, 24))
        # one upload is out: the consumer has fetched, and buffers, the rest of that backlog
        wait_for_records(pipeline.bootstrap, [processed_topic(pipeline.prefix)],
                         lambda records: records, timeout=60, what="the first processed event")
        asyncio.run(publish_many(pipeline, sources, 24))

        seen: list[tuple[int, int]] = []

        def lags_agree() -> bool:
            status = status_json(pipeline)
            group = status["lag"]["total_records"]
            own = sum(w["lag"]["records"] for w in status["workers"] if not w["missing"])
            seen.append((group, own))
            # heartbeats and commits are a second apart, at one upload a second: a few apart.
            # While 30 or more are behind, the first 24 are not all out: on the old code the
            # worker's lag stayed about 24 short for as long as this can hold.
            return group >= 30 and abs(group - own) <= 4

        try:
            wait_until(lags_agree, 20, "the worker's lag to agree with the broker's")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; (group lag, worker lag) seen: {seen}") from None
    finally:
        worker.stop()


def test_status_shows_both_workers_their_partitions_lag_and_a_forced_breaker_then_one_missing(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    workers = [pipeline.start_worker("a", **FAST_MONITOR),
               pipeline.start_worker("b", **FAST_MONITOR)]
    try:
        pipeline.cli("breaker", "open", "resize")
        pipeline.cli("degrade", "set", "basic", "--for", "10m", "--reason", "drill")

        def settled(status: dict[str, Any]) -> bool:
            up = [w for w in status["workers"] if not w["missing"]]
            covered = sorted(p for w in up for p in w["partitions"])
            return len(up) == 2 and covered == list(range(6)) and all(
                w["refusing"] == ["resize"] and w["level"] == "basic" for w in up)

        wait_until(lambda: settled(status_json(pipeline)), 60,
                   "both workers, all partitions, the breaker and the level in the status")
        status = status_json(pipeline)
        assert set(status) >= {"workers", "lag", "retry", "dlq", "breakers", "level", "alerts"}
        assert [p["partition"] for p in status["lag"]["partitions"]] == list(range(6))
        assert status["lag"]["group"] == f"{pipeline.app_id}.uploads"
        assert [(b["processor"], b["state"]) for b in status["breakers"]] == [
            ("resize", "forced_open")]
        assert status["level"]["override"]["level"] == "basic"
        assert status["level"]["workers"] == {"basic": 2}
        assert {t["tier"] for t in status["retry"]["tiers"]} == {"1s", "2s"}
        # the human layout names both workers and the breaker
        text = pipeline.cli("status").stdout.decode()
        assert all(w["id"] in text for w in status["workers"]) and "forced_open" in text

        # the dashboard's data on a worker is the same status, plus its own series
        _, data = workers[0].get("/dashboard/data")
        assert {w["id"] for w in data["status"]["workers"]} == {w["id"] for w in status["workers"]}
        assert data["local"]["series"] and "completed_per_s" in data["local"]["series"][0]
        assert "<html" in workers[0].get_text("/dashboard").lower()

        # When one worker stops, it is shown missing after 3 heartbeat intervals
        gone = workers.pop()
        gone_id = next(w["id"] for w in status["workers"] if w["pid"] == gone.process.pid)
        gone.stop()
        wait_until(lambda: any(w["id"] == gone_id and w["missing"]
                               for w in status_json(pipeline)["workers"]), 30,
                   "the stopped worker to be shown missing")
        # ... and the survivor's evaluator raises the worker_missing alert
        wait_until(lambda: any(a["id"] == f"worker_missing:{gone_id}"
                               for a in status_json(pipeline)["alerts"]), 30,
                   "the worker_missing alert")
        # The live dashboard of the survivor, in a real browser, shows all of it
        live_dashboard(workers[0], tmp_path, expect_text={
            "level": "basic", "breakers": "resize", "alerts": "worker_missing"})
    finally:
        for worker in workers:
            worker.stop()
        pipeline.cli("breaker", "reset", "resize", check=False)
