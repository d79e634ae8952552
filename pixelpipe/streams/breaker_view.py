"""Every worker's view of the breakers: it tails the compacted ``pixelpipe.breaker`` topic.

A group-less aiokafka consumer reads the one partition from the beginning (the latest record
per processor survives compaction), so every worker sees every state change, and a worker
that starts catches up before it runs anything (``start`` returns once it has read to the end
as of start-up). ``fetch_max_wait_ms`` is short: a change reaches every worker well within a
second. This is the "tail the topic" option of FAUST-NOTES.md: a faust GlobalTable would hold
remote updates in a 1,000-event recovery buffer (faust-streaming issue 283).

``decide(processor)`` is what a worker obeys before running a processor: ``allow`` or
``refuse``. In HALF_OPEN each worker lets ``half_open_calls`` trial calls through per episode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer

from pixelpipe.config import Settings
from pixelpipe.errors import TopicMissing
from pixelpipe.policy.breaker import derived_state
from pixelpipe.schemas.names import BREAKER_SCHEMA
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import breaker_topic

log = logging.getLogger(__name__)

Decision = Literal["allow", "refuse"]


def effective(record: dict[str, Any], now: float) -> str:
    """The state a ``pixelpipe.breaker/1`` record means now (``policy.breaker.derived_state``:
    an OPEN record whose trial time has come is HALF_OPEN)."""
    return derived_state(str(record.get("state", "closed")), record.get("next_trial_at"), now)


class BreakerView:
    """The latest breaker record per processor, as this worker knows it."""

    def __init__(
        self, settings: Settings,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        on_undecodable: Callable[[], None] | None = None,
    ) -> None:
        """``on_failure``: called when following the topic fails for good (the worker passes
        ``app.crash``: obeying a frozen breaker map silently would be worse than stopping).
        ``on_undecodable``: called for each record skipped as unreadable (a metric)."""
        self.settings = settings
        self.on_failure = on_failure
        self.on_undecodable = on_undecodable
        self.records: dict[str, dict[str, Any]] = {}
        #: records on the breaker topic that were not ours or not decodable (counted in /metrics)
        self.undecodable = 0
        self._trials: dict[tuple[str, float], int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def apply(self, value: bytes | None, key: bytes | None = None) -> None:
        """Fold one breaker-topic record in. A tombstone (no value) removes its processor's
        row, as compaction eventually will (``breaker reset`` of an unknown name sends one)."""
        if value is None:
            if key is not None:
                self.records.pop(key.decode(errors="replace"), None)
            return
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or record.get("schema") != BREAKER_SCHEMA:
            self.undecodable += 1
            if self.on_undecodable is not None:
                self.on_undecodable()
            log.warning("breaker view: ignoring a record that is not %s", BREAKER_SCHEMA)
            return
        processor = str(record.get("processor"))
        previous = self.records.get(processor, {})
        self.records[processor] = record
        # a new state, or a new episode of the same one (re-opened after a failed trial)
        if (previous.get("state"), previous.get("since")) != (record.get("state"),
                                                               record.get("since")):
            log.info("breaker view: %s is now %s (since %.3f: %s)", processor,
                     record.get("state"), record.get("since") or 0.0, record.get("reason", ""))

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

    async def start(self) -> None:
        topic = breaker_topic(self.settings.topic_prefix)
        # one partition by declaration (streams/topics.py); TopicMissing when not declared yet
        tp = (await kafka.existing_partitions(self.settings, topic))[0]
        consumer = kafka.consumer(self.settings, group=None, role="breaker-view",
                                  fetch_max_wait_ms=50)
        await kafka.start(consumer, self.settings)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    self.apply(record.value, record.key)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        self.apply(record.value, record.key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.critical("breaker view: following %s failed; this worker's breaker map would "
                         "freeze: %r", breaker_topic(self.settings.topic_prefix), exc,
                         exc_info=True)
            if self.on_failure is None:
                raise
            await self.on_failure(exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


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
