"""The live dashboard in a real browser: Debian's ``chromium`` driven by Python playwright.

The page and its JSON are served by a real aiohttp server on loopback with the routes the
package gives (``mount_dashboard``: the same files and data handler ``register_dashboard``
puts on the worker's faust web server; no broker needed). The data callable returns a fixture
status document with a forced level (``basic``), a forced-open breaker (``resize``), a firing
alert and a missing worker; the tests flip it to failing and back.

No browser can be downloaded here (never ``playwright install``): playwright launches the
system chromium by its path. Without one the test fails (CI installs it; a skip would hide a
missing browser). A screenshot goes to ``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright, expect

from pixelpipe.agents.dashboard import mount_dashboard

pytestmark = pytest.mark.slow

INSTALL = "apt-get install -y --no-install-recommends chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
POLL_MS = 400  # the page's ?poll= (default 2000 ms), to keep the test short
WAIT_MS = 8000  # playwright's expect timeout: several polls


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cluster_document(now: float | None = None) -> dict[str, Any]:
    """The /dashboard/data contract: two workers (one missing), level forced to basic by an
    override, resize forced open, the error-ratio alert firing, five minutes of series."""
    now = time.time() if now is None else now
    pressures = {
        "cpu": 0.35, "memory": 0.05, "lag_records": 0.1, "lag_seconds": 0.62,
        "retry_backlog": 0.0, "error_ratio": 0.85, "pool_wait": 0.2,
    }
    live = {
        "id": "host-a-101", "host": "host-a", "pid": 101, "version": "0.1.0",
        "started_at": _iso(now - 3600), "seen_at": _iso(now - 1.2), "age_s": 1.2,
        "missing": False, "partitions": [0, 1, 2], "level": "basic", "forced": True,
        "health": 0.15, "pressures": pressures, "in_flight": 3,
        "pool": {"size": 2, "restarts": 1}, "retry_backlog": 4, "refusing": ["resize"],
        "an_extra_key": {"ignored": True},
    }
    gone = {
        "id": "host-b-202", "host": "host-b", "pid": 202, "version": "0.1.0",
        "started_at": _iso(now - 7200), "seen_at": _iso(now - 45), "age_s": 45.0,
        "missing": True, "partitions": [3, 4, 5], "level": "basic", "forced": True,
        "health": 0.9, "pressures": {}, "in_flight": 0, "pool": {"size": 2, "restarts": 0},
        "retry_backlog": 0, "refusing": [],
    }
    series = [
        {
            "t": now - 300 + 5 * i, "completed_per_s": 10 + (i % 12), "p50_ms": 80.0 + i,
            "p99_ms": 240.0 + 3 * i, "health": 0.9 - i / 80, "level": "full" if i < 40 else "basic",
        }
        for i in range(61)
    ]
    series[20]["p99_ms"] = None  # a gap, not a zero
    return {
        "status": {
            "at": _iso(now),
            "workers": [live, gone],
            "lag": {
                "group": "pixelpipe.uploads", "total_records": 12, "max_seconds": 3.5,
                "partitions": [
                    {"partition": 1, "committed": 7, "end": 7, "records": 0, "seconds": 0.0},
                    {"partition": 0, "committed": 10, "end": 22, "records": 12, "seconds": 3.5},
                ],
            },
            "retry": {"total": 4, "tiers": [{"tier": "30s", "records": 4}, {"tier": "5m", "records": 0}]},
            "dlq": {"total": 7, "last_hour": 2, "by_code": {"corrupt_image": 5, "image_too_large": 2}},
            "breakers": [
                {"processor": "resize", "state": "forced_open", "error_rate": 0.0, "calls": 0},
                {"processor": "watermark", "state": "closed", "error_rate": 0.01, "calls": 120},
            ],
            "level": {
                "override": {"level": "basic", "until": _iso(now + 600), "reason": "drill"},
                "workers": {"basic": 2},
            },
            "alerts": [
                {
                    "rule": "error_ratio", "severity": "warning", "state": "firing", "value": 0.15,
                    "threshold": 0.05, "since": _iso(now - 120),
                    "summary": "error ratio 15% over 5 min and 1 h",
                },
                {
                    "rule": "worker_missing", "severity": "warning", "state": "resolved", "value": 0,
                    "threshold": 0, "since": _iso(now - 900), "summary": "resolved: not shown",
                },
            ],
        },
        "local": {"worker_id": "host-a-101", "series": series},
        "an_extra_section": [1, 2, 3],
    }


class Source:
    """The data callable behind /dashboard/data: ``document``, or an error while ``failing``."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.failing = False

    async def __call__(self) -> dict[str, Any]:
        if self.failing:
            raise ConnectionError("status source down")
        return self.document


@dataclass
class Served:
    url: str
    source: Source


@dataclass
class Watched:
    """A page with everything it complained about."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def failed_loads_only(self) -> list[str]:
        """Console errors other than the browser's own "Failed to load resource" lines (which
        a failing fetch logs by itself)."""
        return [m for m in self.console_errors if "Failed to load resource" not in m]


def chromium_path() -> str:
    path = (
        os.environ.get("PIXELPIPE_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not path:
        pytest.fail(
            "chromium is not installed: the dashboard test drives Debian's chromium (playwright "
            f"cannot download a browser here). Install it with `{INSTALL}` (as root; "
            "./dev.sh test does this when run as root), or point PIXELPIPE_CHROMIUM at one.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--headless=new"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    source = Source(cluster_document())
    app = web.Application()
    mount_dashboard(app, source)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Served(f"http://{host}:{port}/dashboard?poll={POLL_MS}", source)
    finally:
        await runner.cleanup()


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    out = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            out.console_errors.append(f"{message.text} ({message.location})")

    def on_page_error(error: Exception) -> None:
        out.page_errors.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        yield out
    finally:
        await context.close()


async def _loaded(w: Watched, url: str) -> Page:
    page = w.page
    resp = await page.goto(url)
    assert resp is not None and resp.status == 200
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "ok", timeout=WAIT_MS)
    return page


async def test_the_page_shows_the_forced_level_the_open_breaker_and_the_firing_alert(
    served: Served, watched: Watched,
) -> None:
    page = await _loaded(watched, served.url)

    level = page.get_by_test_id("level")
    await expect(level).to_have_attribute("data-level", "basic")
    await expect(level).to_have_attribute("data-forced", "true")
    await expect(page.get_by_test_id("level-forced")).to_be_visible()
    override = page.get_by_test_id("override")
    await expect(override).to_be_visible()
    await expect(override).to_contain_text("basic")
    await expect(override.get_by_test_id("override-reason")).to_have_text("drill")
    await expect(page.get_by_test_id("health")).to_have_text("0.15")
    await expect(page.get_by_test_id("pressures").locator("[data-pressure]")).to_have_count(7)

    breakers = page.get_by_test_id("breakers").get_by_test_id("breaker-row")
    await expect(breakers).to_have_count(1)  # closed ones are not listed
    await expect(breakers).to_have_attribute("data-processor", "resize")
    await expect(breakers).to_have_attribute("data-state", "forced_open")
    await expect(breakers).to_contain_text("forced open")

    alerts = page.get_by_test_id("alerts").get_by_test_id("alert-row")
    await expect(alerts).to_have_count(1)  # the resolved one is not firing
    await expect(alerts).to_have_attribute("data-rule", "error_ratio")
    await expect(alerts).to_have_attribute("data-severity", "warning")
    await expect(alerts).to_contain_text("error ratio 15% over 5 min and 1 h")
    await expect(alerts).to_contain_text("0.15")
    await expect(alerts).to_contain_text("0.05")
    await expect(page.get_by_test_id("alerts-count")).to_have_text("1")

    workers = page.get_by_test_id("workers").get_by_test_id("worker-row")
    await expect(workers).to_have_count(2)
    gone = page.locator('[data-testid="worker-row"][data-worker-id="host-b-202"]')
    await expect(gone).to_have_attribute("data-missing", "true")
    await expect(gone.get_by_test_id("worker-missing")).to_have_text("missing")
    await expect(gone).to_have_class(re.compile(r"\bworker-missing\b"))
    live = page.locator('[data-testid="worker-row"][data-worker-id="host-a-101"]')
    await expect(live).to_have_attribute("data-missing", "false")
    await expect(live.get_by_test_id("worker-missing")).to_have_count(0)
    await expect(live).to_contain_text("0–2")  # partitions 0, 1, 2
    await expect(page.get_by_test_id("workers-count")).to_contain_text("1 missing")

    await expect(page.get_by_test_id("lag-total")).to_contain_text("12")
    await expect(page.get_by_test_id("lag").locator("tr[data-partition]")).to_have_count(2)
    await expect(page.get_by_test_id("retry-total")).to_contain_text("4")
    await expect(page.get_by_test_id("dlq-total")).to_contain_text("7")
    await expect(page.get_by_test_id("dlq-last-hour")).to_contain_text("2")
    await expect(page.locator('[data-testid="dlq"] tr[data-code="corrupt_image"]')).to_contain_text("5")

    await expect(page.locator('#throughput-svg path[data-series="completed_per_s"]')).to_have_count(1)
    await expect(page.locator('#latency-svg path[data-series="p50_ms"]')).to_have_count(1)
    await expect(page.locator('#latency-svg path[data-series="p99_ms"]')).to_have_count(2)  # the gap
    await expect(page.get_by_test_id("throughput-now")).to_contain_text("/s")

    await expect(page.get_by_test_id("banner")).to_be_hidden()
    await expect(page.get_by_test_id("section-error")).to_have_count(0)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert watched.page_errors == []
    assert watched.console_errors == []


async def test_a_failing_data_fetch_shows_the_stale_banner_and_the_page_recovers(
    served: Served, watched: Watched,
) -> None:
    page = await _loaded(watched, served.url)
    banner = page.get_by_test_id("banner")
    await expect(banner).to_be_hidden()

    # the data callable fails: the server answers 503, the page keeps the last data
    served.source.failing = True
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Cannot reach")
    await expect(banner).to_contain_text("HTTP 503")
    await expect(banner).to_contain_text("stale")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "error")
    await expect(page.locator("body")).to_have_class(re.compile(r"\bis-stale\b"))
    await expect(page.get_by_test_id("level")).to_have_attribute("data-level", "basic")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-stale.png"), full_page=True)

    # the server answers again but the network does not
    served.source.failing = False

    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.route("**/dashboard/data", refuse)
    await expect(banner).to_contain_text("network error")
    await expect(banner).to_be_visible()

    # everything is back, and the cluster healed meanwhile: the page shows the new document
    healed = copy.deepcopy(served.source.document)
    healed["status"]["alerts"] = []
    healed["status"]["breakers"][0]["state"] = "closed"
    healed["status"]["level"]["override"] = None
    healed["status"]["workers"][0].update(level="full", forced=False, health=0.93)
    served.source.document = healed
    await page.unroute("**/dashboard/data", refuse)
    await expect(banner).to_be_hidden()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "ok")
    await expect(page.locator("body")).not_to_have_class(re.compile(r"\bis-stale\b"))
    await expect(page.get_by_test_id("alerts")).to_contain_text("No alerts firing")
    await expect(page.get_by_test_id("breakers")).to_contain_text("all breakers closed")
    await expect(page.get_by_test_id("level")).to_have_attribute("data-level", "full")
    await expect(page.get_by_test_id("level")).to_have_attribute("data-forced", "false")
    await expect(page.get_by_test_id("override")).to_be_hidden()

    assert watched.page_errors == []
    # the only console errors are the browser's own lines for the failed requests
    assert watched.failed_loads_only() == []


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({}, id="empty"),
        pytest.param({"status": None, "local": None}, id="null-sections"),
        pytest.param(
            {
                "status": {
                    "at": None, "workers": [], "lag": None, "retry": {}, "dlq": {"by_code": {}},
                    "breakers": [], "level": {"override": None, "workers": {}}, "alerts": [],
                },
                "local": {"worker_id": None, "series": []},
            },
            id="nothing-yet",
        ),
        pytest.param(
            {
                "status": {
                    "workers": [None, {"id": "w", "missing": True}], "lag": {"partitions": [None]},
                    "retry": {"tiers": "30s"}, "dlq": [], "breakers": {"resize": "open"},
                    "level": {"override": "basic"}, "alerts": [{"rule": "x"}, 3],
                },
                "local": {"series": [{"t": 1.0}, {"t": 2.0, "completed_per_s": None}, None]},
            },
            id="odd-shapes",
        ),
    ],
)
async def test_missing_empty_and_null_sections_render_without_an_error(
    served: Served, watched: Watched, document: dict[str, Any],
) -> None:
    served.source.document = document
    page = await _loaded(watched, served.url)
    await expect(page.get_by_test_id("level")).to_be_visible()
    await expect(page.get_by_test_id("banner")).to_be_hidden()
    await expect(page.get_by_test_id("section-error")).to_have_count(0)
    if not (document.get("status") or {}).get("workers"):
        await expect(page.get_by_test_id("workers")).to_contain_text("no workers reported yet")
    await expect(page.get_by_test_id("override")).to_be_hidden()
    await expect(page.get_by_test_id("throughput-now")).to_contain_text("no samples yet")
    assert watched.page_errors == []
    assert watched.console_errors == []
