"""Deliver the outcome of an attempt: processed event, retry record or dead letter.

``deliver`` returns only once Kafka has acknowledged the record (``await`` of the send's
future, not just the enqueue), so the caller may ack the source event afterwards. Headers
are set from the routing facts and never grow with the number of attempts.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from pixelpipe.agents import metrics, stages
from pixelpipe.agents.app import PipelineTopics
from pixelpipe.agents.recent import ACTIVITY
from pixelpipe.agents.upload_processor import AttemptResult, Failed, Processed
from pixelpipe.errors import INPUT_ERROR_CODES, BreakerOpen, PixelpipeError
from pixelpipe.policy.routing import DeadRoute, RetryPolicy, RetryRoute, route_failure
from pixelpipe.schemas import Origin, RetryEnvelope, encode
from pixelpipe.schemas import headers as h

log = logging.getLogger(__name__)


def attempt_result(error: PixelpipeError) -> str:
    """The ``result`` label of a failed attempt: ``deferred`` (an open breaker or overload, no
    attempt spent), ``input_error`` (the input's fault) or ``failed`` (the system's: what the
    error-ratio alert counts)."""
    if isinstance(error, BreakerOpen):
        return "deferred"
    if error.code in INPUT_ERROR_CODES:
        return "input_error"
    return "failed"


class AttemptRouter:
    """Sends each outcome where it belongs and waits for the broker's acknowledgement."""

    def __init__(self, topics: PipelineTopics, policy: RetryPolicy) -> None:
        self.topics = topics
        self.policy = policy

    async def deliver(
        self, outcome: AttemptResult, origin: Origin, *, tier: str, history: RetryEnvelope | None
    ) -> str:
        """Route ``outcome``; return where it went (``processed``, a tier name, ``dlq``)."""
        if isinstance(outcome, Processed):
            event = outcome.event
            sending = time.perf_counter()
            await self._send(
                self.topics.processed, event.image_id.encode(), encode(event),
                h.make_headers(event_id=event.event_id, schema=event.schema,
                               attempt=event.attempts),
            )
            outcome.stages["ack"] = (time.perf_counter() - sending) * 1000
            metrics.OUTCOMES.labels("processed", "").inc()
            metrics.ATTEMPTS.labels("ok").inc()
            ACTIVITY.record(event.processing_ms)
            metrics.PROCESSING_SECONDS.observe(event.processing_ms / 1000)
            log.info(
                "processed %s (image %s) from %s[%d]@%d, attempt %d, in %.0f ms (%s)",
                event.event_id, event.image_id, origin.topic, origin.partition, origin.offset,
                event.attempts, event.processing_ms, stages.describe(outcome.stages),
            )
            return "processed"
        assert isinstance(outcome, Failed)
        metrics.ATTEMPTS.labels(attempt_result(outcome.error)).inc()
        route = route_failure(
            outcome.error, upload=outcome.upload, original=outcome.original,
            event_id=outcome.event_id, origin=origin, tier=tier, history=history,
            policy=self.policy, now=datetime.now(UTC),
        )
        if isinstance(route, RetryRoute):
            envelope = route.envelope
            await self._send(
                self.topics.retries[route.tier],
                (envelope.image_id or envelope.event_id).encode(), encode(envelope),
                h.make_headers(
                    event_id=envelope.event_id, schema=envelope.schema,
                    attempt=len(envelope.attempts), due_at=envelope.due_at,
                    error_code=outcome.error.code, origin_topic=envelope.origin.topic,
                    origin_partition=envelope.origin.partition,
                    origin_offset=envelope.origin.offset,
                ),
            )
            metrics.OUTCOMES.labels(route.tier, outcome.error.code).inc()
            log.info(
                "retry %s in tier %s (due %s) after %s (%s); %d attempt(s), %d deferral(s)",
                envelope.event_id, route.tier, envelope.due_at, outcome.error.code,
                outcome.error.processor, len(envelope.attempts), envelope.deferrals,
            )
            return route.tier
        assert isinstance(route, DeadRoute)
        letter = route.letter
        await self._send(
            self.topics.dlq, letter.event_id.encode(), encode(letter),
            h.make_headers(
                event_id=letter.event_id, schema=letter.schema, error_code=letter.error.code,
                attempt=len(letter.attempts), origin_topic=letter.origin.topic,
                origin_partition=letter.origin.partition, origin_offset=letter.origin.offset,
            ),
        )
        metrics.OUTCOMES.labels("dlq", letter.error.code).inc()
        level = logging.ERROR if letter.error.code == "internal_error" else logging.WARNING
        log.log(
            level, "dead-lettered %s from %s[%d]@%d: %s (%s): %s",
            letter.event_id, origin.topic, origin.partition, origin.offset,
            letter.error.code, letter.error.processor, letter.error.message,
        )
        return "dlq"

    @staticmethod
    async def _send(topic: Any, key: bytes, value: bytes, headers: h.Headers) -> None:
        pending = await topic.send(key=key, value=value, headers=headers)
        await pending  # the broker's ack, not just the accumulator
