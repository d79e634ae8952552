"""The time formats on the wire and in the CLI: ISO-8601 UTC with a ``Z``, one formatter.

Records carry milliseconds (``2026-11-28T00:00:00.000Z``); the CLI shows epoch times from
breaker records to the second (``2026-11-28T00:00:00Z``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

Timespec = Literal["seconds", "milliseconds"]


def iso(moment: datetime, timespec: Timespec = "milliseconds") -> str:
    """``moment`` as ISO-8601 UTC with a ``Z`` (an aware time is converted to UTC, a naive
    one is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def utc_now_iso() -> str:
    """Now, as ISO-8601 UTC with milliseconds and a ``Z``: the one time format on the wire."""
    return iso(datetime.now(UTC))


def epoch_iso(epoch: object, timespec: Timespec = "seconds") -> str | None:
    """An epoch time (seconds, as breaker records carry them) in ISO-8601 UTC; None when
    ``epoch`` is not a number."""
    if not isinstance(epoch, int | float):
        return None
    if timespec == "seconds":
        epoch = math.floor(epoch)  # truncated, never rounded up to the next second
    return iso(datetime.fromtimestamp(epoch, UTC), timespec)


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 time; a naive time is taken as UTC. Raises ``ValueError``."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
