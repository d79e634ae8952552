"""The live dashboard: ``/dashboard`` on the worker's web server, fed by ``/dashboard/data``.

The page is three static files beside this module (``index.html``, ``dashboard.js``,
``dashboard.css``: hand-written, no external library, no CDN) read from the package with
:mod:`importlib.resources`. The page polls ``dashboard/data`` (a relative URL, so it also works
behind a path prefix) every 2 s and renders whatever JSON the ``data`` callable returns (the
cluster status and this worker's recent series; see the JSON contract in the README).

The serving is framework-free at its core (:class:`Dashboard` turns a path into a
:class:`Reply`), wrapped twice:

- :func:`register_dashboard` adds the pages to a faust app (``@app.page``, answered with
  ``web.bytes``), which is what the worker uses;
- :func:`dashboard_routes` / :func:`mount_dashboard` give plain aiohttp handlers, so a test can
  serve the very same files and JSON from an ``aiohttp.web.Application`` without a broker.

Routes: ``/dashboard`` (HTML), ``/dashboard/dashboard.js``, ``/dashboard/dashboard.css``,
``/dashboard/data`` (JSON, never cached; 503 with ``{"error": ...}`` when ``data`` raises) and
``/dashboard/`` (a redirect to ``/dashboard``, so the page's relative URLs resolve).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import faust
import orjson
from aiohttp import web as aioweb

log = logging.getLogger(__name__)

#: The data callable: the JSON document of ``/dashboard/data``.
DataSource = Callable[[], Awaitable[dict[str, Any]]]

#: An aiohttp request handler.
Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]

PAGE_PATH = "/dashboard"
DATA_PATH = "/dashboard/data"

#: URL path -> (file beside this module, content type)
ASSETS: Mapping[str, tuple[str, str]] = {
    PAGE_PATH: ("index.html", "text/html"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css"),
}

# /dashboard/ -> /dashboard, said relative to /dashboard/ so a path prefix in front of the
# worker (a reverse proxy) survives; the page's own URLs are relative to /dashboard.
_REDIRECT_TO = "../dashboard"

_NO_STORE = {"Cache-Control": "no-store"}
# The assets change only with a new version of the package; revalidate rather than pin them.
_NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer, independent of the web framework that sends it."""

    body: bytes
    content_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


def asset_bytes(name: str) -> bytes:
    """The content of one of the dashboard's static files, read from the package."""
    return resources.files(__name__).joinpath(name).read_bytes()


def _json(value: Any) -> bytes:
    # orjson: NaN/inf become null (JSON.parse would reject them), datetimes become ISO 8601,
    # anything else unknown is its str().
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


class Dashboard:
    """The dashboard's answers: the static files (read once) and the JSON of ``data``."""

    def __init__(self, data: DataSource) -> None:
        self._data = data
        self._assets: dict[str, bytes] = {}

    def asset(self, path: str) -> Reply:
        name, content_type = ASSETS[path]
        body = self._assets.get(name)
        if body is None:
            body = self._assets[name] = asset_bytes(name)
        return Reply(body, content_type, headers=_NO_CACHE)

    async def data(self) -> Reply:
        try:
            document = await self._data()
            body = _json(document)
        except Exception as exc:  # noqa: BLE001 - the page shows its banner; keep serving
            log.warning("dashboard data failed: %r", exc)
            return Reply(
                _json({"error": f"{type(exc).__name__}: {exc}"}), "application/json",
                status=503, headers=_NO_STORE,
            )
        return Reply(body, "application/json", headers=_NO_STORE)

    def replies(self) -> dict[str, Callable[[], Awaitable[Reply]]]:
        """URL path -> a coroutine function giving its reply (every route but the redirect)."""
        routes: dict[str, Callable[[], Awaitable[Reply]]] = {}
        for path in ASSETS:
            routes[path] = self._asset_route(path)
        routes[DATA_PATH] = self.data
        return routes

    def _asset_route(self, path: str) -> Callable[[], Awaitable[Reply]]:
        async def reply() -> Reply:
            return self.asset(path)

        return reply


def _aiohttp_response(reply: Reply) -> aioweb.Response:
    return aioweb.Response(
        body=reply.body, status=reply.status, content_type=reply.content_type,
        charset="utf-8", headers=dict(reply.headers),
    )


def dashboard_routes(data: DataSource) -> list[tuple[str, Handler]]:
    """The dashboard as ``(path, handler)`` pairs of plain aiohttp GET handlers."""
    routes: list[tuple[str, Handler]] = []
    for path, make in Dashboard(data).replies().items():
        routes.append((path, _aiohttp_handler(make)))
    routes.append((PAGE_PATH + "/", _redirect_handler))
    return routes


def _aiohttp_handler(make: Callable[[], Awaitable[Reply]]) -> Handler:
    async def handler(request: aioweb.Request) -> aioweb.StreamResponse:
        return _aiohttp_response(await make())

    return handler


async def _redirect_handler(request: aioweb.Request) -> aioweb.StreamResponse:
    raise aioweb.HTTPFound(_REDIRECT_TO)


def mount_dashboard(webapp: aioweb.Application, data: DataSource) -> None:
    """Add the dashboard's routes to a plain aiohttp application (tests, tools)."""
    for path, handler in dashboard_routes(data):
        webapp.router.add_get(path, handler)


def register_dashboard(app: faust.App, data: DataSource,
                       allowed: Callable[[Any], bool] | None = None) -> None:
    """Add ``/dashboard`` and ``/dashboard/data`` (and the page's two assets) to a faust app.

    ``allowed(request)``: when given, ``/dashboard/data`` answers 401 unless it says yes (the
    worker's bearer-token check); the page and its assets hold no data and stay open."""
    for path, make in Dashboard(data).replies().items():
        guard = allowed if path == DATA_PATH else None
        app.page(path, name=_view_name(path))(_faust_page(make, guard))

    @app.page(PAGE_PATH + "/", name="dashboard_slash")
    async def dashboard_slash(web: Any, request: Any) -> Any:
        return web.bytes(
            b"", content_type="text/plain", status=302, headers={"Location": _REDIRECT_TO},
        )


def _view_name(path: str) -> str:
    return "dashboard" + path[len(PAGE_PATH):].replace("/", "_").replace(".", "_")


def _faust_page(make: Callable[[], Awaitable[Reply]],
                allowed: Callable[[Any], bool] | None = None,
                ) -> Callable[[Any, Any], Awaitable[Any]]:
    async def page(web: Any, request: Any) -> Any:
        if allowed is not None and not allowed(request):
            return web.json({"error": "a bearer token is required"}, status=401,
                            headers={"WWW-Authenticate": "Bearer"})
        reply = await make()
        # faust's ``web.bytes`` passes ``content_type`` to aiohttp, which refuses a charset in
        # it: say the full type in the header instead.
        headers = {**reply.headers, "Content-Type": f"{reply.content_type}; charset=utf-8"}
        return web.bytes(reply.body, status=reply.status, headers=headers)

    return page


__all__ = [
    "ASSETS",
    "DATA_PATH",
    "PAGE_PATH",
    "Dashboard",
    "DataSource",
    "Reply",
    "asset_bytes",
    "dashboard_routes",
    "mount_dashboard",
    "register_dashboard",
]
