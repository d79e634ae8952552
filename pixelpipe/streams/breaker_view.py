"""Every worker's view of the breakers: it tails the compacted ``pixelpipe.breaker`` topic.

A group-less aiokafka consumer reads the one partition from the beginning (the latest record
per processor survives compaction), so every worker sees every state change, and a worker
that starts catches up before it runs anything (``start`` returns once it has read to the end
as of start-up); a change reaches every worker within milliseconds (``CompactedFollower``).
This is the "tail the topic" option of FAUST-NOTES.md: a faust GlobalTable would hold remote
updates in a 1,000-event recovery buffer (faust-streaming issue 283).

``decide(processor)`` is what a worker obeys before running a processor: ``allow`` or
``refuse``. In HALF_OPEN each worker lets ``half_open_calls`` trial calls through per episode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pixelpipe.config import Settings
from pixelpipe.errors import TopicMissing
from pixelpipe.policy.breaker import derived_state
from pixelpipe.schemas.names import BREAKER_SCHEMA
from pixelpipe.schemas.times import epoch_iso
from pixelpipe.streams.compacted import CompactedFollower
from pixelpipe.streams.topics import breaker_topic

log = logging.getLogger(__name__)

Decision = Literal["allow", "refuse"]


def effective(record: dict[str, Any], now: float) -> str:
    """The state a ``pixelpipe.breaker/1`` record means now (``policy.breaker.derived_state``:
    an OPEN record whose trial time has come is HALF_OPEN)."""
    return derived_state(str(record.get("state", "closed")), record.get("next_trial_at"), now)


class BreakerView(CompactedFollower):
    """The latest breaker record per processor, as this worker knows it."""

    role = "breaker-view"
    schema = BREAKER_SCHEMA

    def __init__(
        self, settings: Settings,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        on_undecodable: Callable[[], None] | None = None,
    ) -> None:
        """``on_failure``: called when following the topic fails for good (the worker passes
        ``app.crash``: obeying a frozen breaker map silently would be worse than stopping).
        ``on_undecodable``: called for each record skipped as unreadable (a metric)."""
        super().__init__(settings, on_failure, on_undecodable)
        #: half-open trials used per (processor, episode)
        self._trials: dict[tuple[str, float], int] = {}

    def fold(self, record: dict[str, Any]) -> None:
        processor = str(record.get("processor"))
        previous = self.records.get(processor, {})
        self.records[processor] = record
        # a new state, or a new episode of the same one (re-opened after a failed trial)
        if (previous.get("state"), previous.get("since")) != (record.get("state"),
                                                               record.get("since")):
            reason = record.get("reason") or ""
            log.info("breaker view: %s is now %s since %s%s", processor, record.get("state"),
                     epoch_iso(record.get("since")) or "?", f" ({reason})" if reason else "")

    def is_refusing(self, processor: str, now: float | None = None) -> bool:
        """Whether calls to ``processor`` are refused now (uses no half-open trial)."""
        record = self.records.get(processor)
        if record is None:
            return False
        return effective(record, time.time() if now is None else now) in ("open", "forced_open")

    def decide(self, processor: str, now: float | None = None) -> Decision:
        record = self.records.get(processor)
        if record is None:
            return "allow"
        now = time.time() if now is None else now
        state = effective(record, now)
        if state in ("closed", "disabled"):
            return "allow"
        if state == "half_open":
            episode = (processor, float(record.get("next_trial_at") or record.get("since") or 0))
            used = self._trials.get(episode, 0)
            if used < self.settings.breaker.half_open_calls:
                self._trials[episode] = used + 1
                return "allow"
        return "refuse"

    def topic(self) -> str:
        return breaker_topic(self.settings.topic_prefix)


async def read_breakers(settings: Settings, timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """The latest record of every breaker (for ``pixelpipe breaker status``); none when the
    breaker topic does not exist yet."""
    view = BreakerView(settings)
    try:
        await asyncio.wait_for(view.start(), timeout_s)
    except TopicMissing:
        return {}
    finally:
        await view.stop()
    return view.records
