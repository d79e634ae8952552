"""The breaker agent: outcomes in, breaker states out.

It consumes ``pixelpipe.outcomes`` (one partition, keyed by processor; operator commands
travel on the same topic so they are ordered with the outcomes), keeps each processor's
``Breaker`` in a faust table (changelog-backed: a restarted owner resumes the same state and
window), runs the state machine of ``pixelpipe.policy.breaker``, and publishes each state
change, and the current rates at most every 2 s per processor, to the compacted
``pixelpipe.breaker`` topic that every worker follows. A state change is logged once, with
the numbers that caused it, and its record's delivery is awaited.

Outcomes are telemetry: an outcome lost in a crash only makes a window slightly thinner, so the
agent acks normally, unlike the upload path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from pixelpipe.agents import metrics
from pixelpipe.agents.app import PipelineTopics
from pixelpipe.config import Settings
from pixelpipe.policy.breaker import (
    COMMANDS,
    Breaker,
    BreakerConfig,
    Transition,
    command,
    effective_state,
    record,
    status_record,
)
from pixelpipe.schemas.names import COMMAND_SCHEMA, OUTCOME_SCHEMA
from pixelpipe.streams.topics import BREAKER_TABLE, breaker_changelog_topic

log = logging.getLogger(__name__)

REFRESH_S = 2.0


def record_outcomes(
    breaker: Breaker, message: dict[str, Any], now: float, config: BreakerConfig
) -> Transition | None:
    """Count an outcome message: one call, or ``calls`` aggregated ones (``slow`` of them
    slow); return the last transition they caused."""
    ok = bool(message.get("ok"))
    code = message.get("code")
    calls = max(1, int(message.get("calls", 1)))
    slow = min(calls, max(0, int(message.get("slow", 0))))
    if "calls" not in message:  # a single call with its own duration
        slow = int(float(message.get("duration_ms", 0.0)) / 1000 >= config.slow_call_s)
    transition = None
    for i in range(calls):
        duration = config.slow_call_s if i < slow else 0.0
        step = record(breaker, ok=ok, code=code, duration_s=duration, now=now, config=config)
        transition = step or transition
    return transition


def register_breaker_agent(app: faust.App, settings: Settings, topics: PipelineTopics) -> Any:
    config = settings.breaker
    table = app.Table(
        BREAKER_TABLE,
        partitions=1,
        # bytes in, bytes out: the app's serializers are raw, our codec is orjson
        key_type=bytes,
        value_type=bytes,
        help="per processor: breaker state and its window of 1 s buckets",
    )
    # The worker declares this changelog before faust starts (``admin.declare_worker_topics``,
    # with the outcomes topic's partitions, listed by every node): a name of our own that
    # drifted from faust's would leave faust to create the real one, racing its own check.
    changelog = table.changelog_topic.get_topic_name()
    if changelog != breaker_changelog_topic(settings.app_id):
        raise RuntimeError(f"faust names the breaker table's changelog {changelog!r}, "
                           f"pixelpipe declares {breaker_changelog_topic(settings.app_id)!r}")
    published: dict[str, float] = {}

    async def publish(breaker: Breaker, now: float, *, wait: bool) -> None:
        pending = await topics.breaker.send(
            key=breaker.processor.encode(),
            value=orjson.dumps(status_record(breaker, now, config)),
        )
        if wait:
            await pending
        published[breaker.processor] = now

    async def breakers(stream: Any) -> None:
        async for value in stream:
            try:
                message = orjson.loads(value)
                processor = str(message["processor"])
                schema = message.get("schema")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                metrics.RECORDS_UNDECODABLE.labels("outcomes").inc()
                log.warning("breaker agent: ignoring an undecodable message")
                continue
            key = processor.encode()
            now = time.time()
            stored = table.get(key)
            breaker = (Breaker.from_dict(orjson.loads(stored)) if stored
                       else Breaker(processor, since=now))
            before = effective_state(breaker, now)
            transition: Transition | None = None
            if schema == OUTCOME_SCHEMA:
                transition = record_outcomes(breaker, message, now, config)
            elif schema == COMMAND_SCHEMA and message.get("command") in COMMANDS:
                transition = command(breaker, message["command"], now)
            else:
                continue
            table[key] = orjson.dumps(breaker.to_dict())
            changed = transition is not None or breaker.state != before
            if transition is not None:
                log.warning("breaker %s: %s -> %s: %s", processor, transition.old,
                            transition.new, transition.reason)
            elif breaker.state != before:
                log.warning("breaker %s: %s -> %s (wait over, trial calls allowed)",
                            processor, before, breaker.state)
            if changed or now - published.get(processor, 0.0) >= REFRESH_S:
                await publish(breaker, now, wait=changed)

    return app.agent(topics.outcomes, name="pixelpipe.breaker", concurrency=1)(breakers)
