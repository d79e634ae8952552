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
from pixelpipe.policy.breaker import COMMANDS, Command
from pixelpipe.schemas import COMMAND_SCHEMA, epoch_iso, utc_now_iso
from pixelpipe.streams.breaker_view import effective, read_breakers
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.topics import outcomes_topic


def command_record(
    processor: str, cmd: Command, *, at: str | None = None, by: str | None = None
) -> dict[str, Any]:
    """The ``pixelpipe.breaker-command/1`` record of an override (``at``: now, ``by``: the
    user running this); a ``ValueError`` for an unknown command."""
    if cmd not in COMMANDS:
        raise ValueError(f"unknown breaker command {cmd!r}")
    return {"schema": COMMAND_SCHEMA, "processor": processor, "command": cmd,
            "at": utc_now_iso() if at is None else at,
            "by": getpass.getuser() if by is None else by}


async def send_command(settings: Settings, processor: str, cmd: Command) -> dict[str, Any]:
    """Send ``open``/``close``/``disable``/``reset`` for ``processor``; delivered (acks=all)."""
    message = command_record(processor, cmd)
    async with Publisher(settings) as publisher:
        await publisher.send_raw(outcomes_topic(settings.topic_prefix), processor.encode(),
                                 orjson.dumps(message))
    return message


def status_row(processor: str, record: dict[str, Any], now: float) -> dict[str, Any]:
    """One row of ``pixelpipe breaker status``: a breaker record's state as workers obey it
    ``now``, its rates, calls and times (to the second)."""
    return {
        "processor": processor,
        "state": effective(record, now),
        "failure_rate": record.get("failure_rate", 0.0),
        "slow_rate": record.get("slow_rate", 0.0),
        "calls": record.get("calls", 0),
        "since": epoch_iso(record.get("since")),
        "next_trial": epoch_iso(record.get("next_trial_at")),
        "trips": record.get("trips", 0),
        "reason": record.get("reason", ""),
    }


async def breaker_status(settings: Settings) -> list[dict[str, Any]]:
    """One row per processor (``status_row``), from a reader that honours the tombstones of
    ``breaker reset``."""
    now = time.time()
    records = await read_breakers(settings)
    return [status_row(processor, record, now) for processor, record in sorted(records.items())]
