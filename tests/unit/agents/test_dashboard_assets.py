"""The dashboard package serves its three files and the data callable's JSON, both ways.

No browser here (tests/integration/test_dashboard_browser.py drives chromium): the routes are
served by aiohttp's test server, once mounted on a plain ``aiohttp.web.Application``
(``mount_dashboard``, what the browser test uses) and once registered on a faust app
(``register_dashboard``, what the worker uses; faust's aiohttp application, no broker).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import faust
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pixelpipe.agents.dashboard import (
    ASSETS,
    DATA_PATH,
    PAGE_PATH,
    asset_bytes,
    mount_dashboard,
    register_dashboard,
)

FILES = ("index.html", "dashboard.js", "dashboard.css")

DOCUMENT: dict[str, Any] = {
    "status": {
        "at": "2026-12-01T10:00:00.000Z",
        "workers": [],
        "alerts": [],
        "level": {"override": None, "workers": {"full": 1}},
        "breakers": [{"processor": "resize", "state": "forced_open", "error_rate": 0.0, "calls": 0}],
    },
    "local": {"worker_id": "host-1", "series": []},
}


class Source:
    """A data callable that returns ``document`` or raises, counting its calls."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.document


def _aiohttp_app(source: Source) -> web.Application:
    app = web.Application()
    mount_dashboard(app, source)
    return app


def _faust_app(source: Source, tmp_path: Path) -> web.Application:
    app = faust.App(
        "pixelpipe-dashboard-unit", broker="kafka://127.0.0.1:9", datadir=str(tmp_path),
        web_host="127.0.0.1",
    )
    register_dashboard(app, source)
    webapp: web.Application = app.web.web_app
    return webapp


@pytest.fixture(params=["aiohttp", "faust"])
async def served(
    request: pytest.FixtureRequest, tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Source]]:
    source = Source(DOCUMENT)
    app = _aiohttp_app(source) if request.param == "aiohttp" else _faust_app(source, tmp_path)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, source


def test_the_three_files_are_package_resources() -> None:
    package = resources.files("pixelpipe.agents.dashboard")
    for name in FILES:
        assert package.joinpath(name).is_file(), name
        assert asset_bytes(name) == package.joinpath(name).read_bytes()
    assert sorted(name for name, _ in ASSETS.values()) == sorted(FILES)


@pytest.mark.parametrize(
    ("path", "name", "content_type"),
    [
        (PAGE_PATH, "index.html", "text/html"),
        ("/dashboard/dashboard.js", "dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "dashboard.css", "text/css"),
    ],
)
async def test_each_asset_is_served_with_its_content_type(
    served: tuple[TestClient[web.Request, web.Application], Source],
    path: str, name: str, content_type: str,
) -> None:
    client, _ = served
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type == content_type
    assert resp.charset == "utf-8"
    assert await resp.read() == asset_bytes(name)


async def test_the_data_page_is_the_json_of_the_data_callable_never_cached(
    served: tuple[TestClient[web.Request, web.Application], Source],
) -> None:
    client, source = served
    resp = await client.get(DATA_PATH)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.json() == DOCUMENT
    await client.get(DATA_PATH)
    assert source.calls == 2  # called per request, nothing cached


async def test_a_failing_data_callable_is_a_503_with_the_error(
    served: tuple[TestClient[web.Request, web.Application], Source],
) -> None:
    client, source = served
    source.error = ConnectionError("status source down")
    resp = await client.get(DATA_PATH)
    assert resp.status == 503
    assert await resp.json() == {"error": "ConnectionError: status source down"}
    source.error = None
    assert (await client.get(DATA_PATH)).status == 200


async def test_values_json_cannot_say_are_made_safe_for_the_browser(
    served: tuple[TestClient[web.Request, web.Application], Source],
) -> None:
    client, source = served
    at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    source.document = {"health": math.nan, "at": at, "by_partition": {0: 1}, "path": Path("/x")}
    resp = await client.get(DATA_PATH)
    # NaN would make JSON.parse throw: it becomes null; int keys become strings
    assert await resp.json() == {
        "health": None, "at": "2026-12-01T10:00:00+00:00", "by_partition": {"0": 1}, "path": "/x",
    }


async def test_dashboard_with_a_trailing_slash_redirects_to_the_page(
    served: tuple[TestClient[web.Request, web.Application], Source],
) -> None:
    client, _ = served
    resp = await client.get(PAGE_PATH + "/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "../dashboard"
    followed = await client.get(PAGE_PATH + "/")
    assert followed.status == 200
    assert followed.content_type == "text/html"


@pytest.mark.parametrize("name", FILES)
def test_no_asset_names_an_absolute_url(name: str) -> None:
    text = asset_bytes(name).decode()
    assert "http://" not in text
    assert "https://" not in text
    assert "//cdn" not in text.lower()


def test_the_page_references_only_relative_urls() -> None:
    html = asset_bytes("index.html").decode()
    urls = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert "dashboard/dashboard.js" in urls
    assert "dashboard/dashboard.css" in urls
    for url in urls:
        if url == "data:,":  # the empty favicon: no request at all
            continue
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I), url  # no scheme
        assert not url.startswith("/"), url  # relative to the page, so a path prefix works
    js = asset_bytes("dashboard.js").decode()
    assert re.search(r"""DATA_URL\s*=\s*"dashboard/data\"""", js)
    assert "fetch(DATA_URL" in js
    assert html.count("<script") == 1  # the one script is ours: no library, no inline loader
