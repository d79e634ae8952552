"""Alert notifications: each firing/resolved alert POSTed as JSON to ``PIXELPIPE_ALERT_WEBHOOK``.

Never blocks processing: ``notify`` only enqueues (a bounded queue; when full, the oldest
notification is dropped and counted), one background task delivers, each POST with a timeout
and a few retries with growing waits. A webhook that is down costs a log line per alert, not
throughput. The URL may carry a token: it is never logged, only its scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from pixelpipe.agents import metrics

log = logging.getLogger(__name__)


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


class WebhookNotifier:
    def __init__(self, url: str, *, timeout_s: float = 5.0, attempts: int = 4,
                 backoff_s: float = 0.5, queue_size: int = 1000) -> None:
        self.url = url
        self.timeout_s, self.attempts, self.backoff_s = timeout_s, attempts, backoff_s
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    def notify(self, alert: dict[str, Any]) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
            log.warning("alert webhook queue full: dropped the oldest notification")
        self.queue.put_nowait(alert)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pixelpipe-webhook")

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued was delivered or given up (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                alert = await self.queue.get()
                try:
                    await self._deliver(session, alert)
                finally:
                    self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, alert: dict[str, Any]) -> None:
        body = orjson.dumps(alert)
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(self.url, data=body,
                                        headers={"Content-Type": "application/json"}) as reply:
                    if reply.status < 300:
                        self.delivered += 1
                        metrics.WEBHOOK_DELIVERIES.labels("ok").inc()
                        return
                    problem = f"HTTP {reply.status}"
                    if 400 <= reply.status < 500 and reply.status != 429:
                        break  # the receiver refuses this body: retrying will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        log.warning("alert %s not delivered to the webhook at %s: %s", alert.get("id"),
                    redacted(self.url), problem)
