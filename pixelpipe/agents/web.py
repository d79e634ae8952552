"""The worker's web endpoints: ``/health``, ``/ready``, ``/status`` (JSON), ``/metrics``.

Bound to loopback unless ``PIXELPIPE_WEB_HOST`` says otherwise (faust binds 0.0.0.0 by
default); faust's own table views are off. With ``PIXELPIPE_WEB_TOKEN`` set (required when
bound beyond loopback), ``/status`` and the dashboard's data need ``Authorization: Bearer
<token>``; the probes (``/health``, ``/ready``) and ``/metrics`` stay open for orchestrators
and scrapers.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from typing import Any

import faust

from pixelpipe.agents import metrics
from pixelpipe.agents.retry import RetryScheduler
from pixelpipe.agents.service_level import ServiceLevel
from pixelpipe.agents.uploads_feed import UploadFeed
from pixelpipe.config import Settings
from pixelpipe.streams.breaker_view import BreakerView

_STARTED = time.time()


def bearer_guard(settings: Settings) -> Callable[[Any], bool] | None:
    """A request check for the token (constant-time compare), or None when none is set."""
    token = settings.web_token
    if not token:
        return None
    expected = f"Bearer {token}".encode()

    def allowed(request: Any) -> bool:
        given = str(request.headers.get("Authorization", "")).encode()
        return hmac.compare_digest(given, expected)

    return allowed


def register_web_views(
    app: faust.App, settings: Settings, scheduler: RetryScheduler,
    breakers: BreakerView | None = None, feed: UploadFeed | None = None,
    service: ServiceLevel | None = None,
) -> None:
    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        # Answering at all proves the event loop is not starved by CPU work.
        return web.json({"status": "ok", "pid": os.getpid(), "uptime_s": time.time() - _STARTED})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        # assigned_partitions: the uploads partitions this worker processes (its feed's)
        uploads = feed.status()["assigned"] if feed else []
        joined = feed.joined if feed else True
        body = {"ready": bool(app.started) and joined, "assigned_partitions": len(uploads)}
        return web.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        for processor in breakers.records if breakers else ():
            refusing = breakers.is_refusing(processor) if breakers else False
            metrics.BREAKER_OPEN.labels(processor).set(1 if refusing else 0)
        return web.text(metrics.exposition().decode(), content_type="text/plain")

    allowed = bearer_guard(settings)

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        if allowed is not None and not allowed(request):
            return web.json({"error": "a bearer token is required"}, status=401,
                            headers={"WWW-Authenticate": "Bearer"})
        assignment = sorted(
            f"{tp.topic}:{tp.partition}" for tp in (app.consumer.assignment() or ())
        ) if app.consumer else []
        return web.json(
            {
                "app_id": settings.app_id,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - _STARTED, 3),
                "broker": settings.broker,
                "workers": settings.workers,
                "max_inflight": settings.max_inflight,
                "assignment": assignment,
                "uploads": feed.status() if feed else None,
                "service": service.status() if service else None,
                "retry": {
                    "tiers": [name for name, _ in settings.retry_tiers],
                    "waiting": scheduler.waiting,
                    "dispatched": len(scheduler.lateness),
                    "lateness_ms_max": round(max(scheduler.lateness, default=0.0) * 1000, 1),
                },
            }
        )
