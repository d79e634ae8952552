"""The operator's degradation override, shared by every worker: ``pixelpipe degrade``.

``send_degrade`` writes a ``pixelpipe.control/1`` record keyed ``degrade`` on the compacted
``<prefix>.control`` topic (one partition): a level pinned until a time (or until cleared), or
``level: null`` for auto. Every worker follows that topic with a ``ControlView``, as it follows
the breaker topic with a ``BreakerView``: a group-less consumer reads the partition from the
beginning (compaction keeps the latest record per key), ``start`` returns once it has read to
the end as of start-up, and a change reaches every worker within milliseconds
(``CompactedFollower``). ``override(now)`` is what the ladder obeys
(``policy.degradation.Override``).

No faust here: the CLI and tests use it without a worker.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from pixelpipe.config import Settings
from pixelpipe.errors import TopicMissing
from pixelpipe.policy.degradation import LEVELS, Level, Override
from pixelpipe.schemas import epoch_iso, utc_now_iso
from pixelpipe.schemas.names import CONTROL_SCHEMA
from pixelpipe.streams.compacted import CompactedFollower
from pixelpipe.streams.topics import control_topic

log = logging.getLogger(__name__)

#: the key (and ``kind``) of the degradation override on the control topic
DEGRADE = "degrade"
DEGRADE_KEY = DEGRADE.encode()


def operator() -> str:
    """Who is sending a control: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def degrade_record(
    level: Level | None, *, until: float | None, reason: str = "",
    at: str | None = None, by: str | None = None,
) -> dict[str, Any]:
    """The ``pixelpipe.control/1`` record of a degradation override: ``level`` until ``until``
    (epoch seconds; None: until cleared), or ``level=None``: auto. ``at``: now, ``by``: who
    runs this. A ``ValueError`` for an unknown level or a meaningless ``until``."""
    if level is not None and level not in LEVELS:
        raise ValueError(f"unknown degradation level {level!r} (known: {', '.join(LEVELS)})")
    if until is not None and (level is None or not math.isfinite(until) or until < 0):
        raise ValueError(f"an override cannot end at {until!r}" if level is not None
                         else "auto has no end time")
    return {"schema": CONTROL_SCHEMA, "kind": DEGRADE, "level": level, "until": until,
            "reason": reason, "at": utc_now_iso() if at is None else at,
            "by": operator() if by is None else by}


def override_of(record: dict[str, Any] | None, now: float) -> Override | None:
    """The override a degrade record means ``now``: None for none, auto or an expired one."""
    if record is None or record.get("level") is None:
        return None
    override = Override(record["level"], record.get("until"), str(record.get("reason", "")))
    return override if override.active(now) else None


async def send_degrade(
    settings: Settings, level: Level | None, *, for_s: float | None, reason: str
) -> dict[str, Any]:
    """Pin every worker at ``level`` for ``for_s`` seconds (None: until cleared), or clear the
    override (``level=None``: auto). Declares the control topic when missing; delivered
    (acks=all); returns the record sent."""
    from pixelpipe.streams.admin import declare_control_topic
    from pixelpipe.streams.client import Publisher

    if for_s is not None and (not math.isfinite(for_s) or for_s <= 0):
        raise ValueError(f"an override must last a positive time, not {for_s!r} s")
    until = None if level is None or for_s is None else time.time() + for_s
    message = degrade_record(level, until=until, reason=reason)
    await declare_control_topic(settings)
    async with Publisher(settings) as publisher:
        await publisher.send_raw(control_topic(settings.topic_prefix), DEGRADE_KEY,
                                 orjson.dumps(message))
    return message


class ControlView(CompactedFollower):
    """The latest control record per key, as this worker knows it."""

    role = "control-view"
    schema = CONTROL_SCHEMA

    def __init__(
        self, settings: Settings,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        """``on_failure``: called when following the topic fails for good (the worker passes
        ``app.crash``: a worker deaf to the operator's override must not carry on)."""
        super().__init__(settings, on_failure)

    def accepts(self, record: dict[str, Any]) -> bool:
        return isinstance(record.get("kind"), str) and (
            record["kind"] != DEGRADE or _valid_degrade(record))

    def fold(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        previous = self.records.get(kind)
        self.records[kind] = record
        if kind == DEGRADE and previous != record:
            if record["level"] is None:
                log.info("control view: degradation override cleared by %s (auto)",
                         record.get("by", "?"))
            else:
                until = epoch_iso(record.get("until")) or "cleared"
                log.info("control view: degradation override %s until %s by %s: %s",
                         record["level"], until, record.get("by", "?"), record.get("reason", ""))

    def override(self, now: float) -> Override | None:
        """The operator's override in force ``now``: None when auto, expired or never set."""
        return override_of(self.records.get(DEGRADE), now)

    def topic(self) -> str:
        return control_topic(self.settings.topic_prefix)


def _valid_degrade(record: dict[str, Any]) -> bool:
    level, until = record.get("level"), record.get("until")
    if level is not None and level not in LEVELS:
        return False
    return until is None or (isinstance(until, int | float) and not isinstance(until, bool))


async def read_degrade(settings: Settings, timeout_s: float = 15.0) -> dict[str, Any] | None:
    """The latest degrade record (for ``pixelpipe degrade status``); None when none was ever
    sent or the control topic does not exist yet."""
    view = ControlView(settings)
    try:
        await asyncio.wait_for(view.start(), timeout_s)
    except TopicMissing:
        return None
    finally:
        await view.stop()
    return view.records.get(DEGRADE)


def status_row(record: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """``pixelpipe degrade status``: the level every worker is pinned at ``now`` (``auto``:
    none), until when, why and by whom; for auto, the last record's ``by`` and ``at`` (who
    cleared it) and the level of an override that has ``expired``."""
    override = override_of(record, now)
    record = record or {}
    expired = record.get("level") if override is None else None
    until = override.until if override is not None else None
    return {
        "level": "auto" if override is None else override.level,
        "until": epoch_iso(until),
        "remaining_s": None if until is None else round(until - now, 1),
        "reason": record.get("reason", ""),
        "by": record.get("by"),
        "at": record.get("at"),
        "expired": expired,
        "expired_at": epoch_iso(record.get("until")) if expired is not None else None,
    }


async def degrade_status(settings: Settings) -> dict[str, Any]:
    """``status_row`` of the latest degrade record, now."""
    return status_row(await read_degrade(settings), time.time())
