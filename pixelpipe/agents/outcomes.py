"""Every attempt of every processor becomes an outcome on ``pixelpipe.outcomes``.

Keyed by processor. Sent without waiting for delivery: outcomes are the breaker's telemetry,
not the upload's fate (that is the processed event or the dead letter, always awaited).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import orjson

from pixelpipe.schemas import utc_now_iso
from pixelpipe.streams.breaker import OUTCOME_SCHEMA

log = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class OutcomeReporter:
    def __init__(self, topic: Any | None) -> None:
        self.topic = topic

    async def report(
        self, processor: str, *, ok: bool, code: str | None = None, duration_ms: float = 0.0
    ) -> None:
        if self.topic is None:
            return
        value = orjson.dumps({
            "schema": OUTCOME_SCHEMA, "processor": processor, "ok": ok, "code": code,
            "duration_ms": round(duration_ms, 3), "worker": WORKER_ID, "at": utc_now_iso(),
        })
        try:
            await self.topic.send(key=processor.encode(), value=value)
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail an upload
            log.warning("cannot send the outcome of %s: %r", processor, exc)
