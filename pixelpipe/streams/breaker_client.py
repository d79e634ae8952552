"""Operator side of the breakers: read every breaker's state, send overrides.

Overrides travel on ``pixelpipe.outcomes`` (keyed by processor), so the breaker agent, the
only writer of ``pixelpipe.breaker``, applies them in order with the outcomes; every worker
then sees the new state through its ``BreakerView``.
"""

from __future__ import annotations

import getpass
import time
from typing import Any

import orjson

from pixelpipe.config import Settings
from pixelpipe.policy.breaker import COMMAND_SCHEMA, COMMANDS, Command
from pixelpipe.schemas import utc_now_iso
from pixelpipe.streams.breaker_view import effective, read_breakers
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import outcomes_topic


async def send_command(settings: Settings, processor: str, cmd: Command) -> dict[str, Any]:
    """Send ``open``/``close``/``disable``/``reset`` for ``processor``; delivered (acks=all)."""
    if cmd not in COMMANDS:
        raise ValueError(f"unknown breaker command {cmd!r}")
    message = {"schema": COMMAND_SCHEMA, "processor": processor, "command": cmd,
               "at": utc_now_iso(), "by": getpass.getuser()}
    async with Publisher(settings) as publisher:
        await publisher.send_raw(outcomes_topic(settings.topic_prefix), processor.encode(),
                                 orjson.dumps(message))
    return message


def _iso(epoch: object) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def breaker_status(settings: Settings) -> list[dict[str, Any]]:
    """One row per processor: state (as workers obey it now), rates, calls, times."""
    now = time.time()
    rows = []
    for processor, record in sorted((await read_breakers(settings)).items()):
        rows.append({
            "processor": processor,
            "state": effective(record, now),
            "failure_rate": record.get("failure_rate", 0.0),
            "slow_rate": record.get("slow_rate", 0.0),
            "calls": record.get("calls", 0),
            "since": _iso(record.get("since")),
            "next_trial": _iso(record.get("next_trial_at")),
            "trips": record.get("trips", 0),
            "reason": record.get("reason", ""),
        })
    return rows
