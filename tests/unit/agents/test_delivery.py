"""AttemptRouter without a broker: fake topics record each send and hand back the future of
its delivery, which one variant fails as a broker would.

What must hold: a processed event goes to the processed topic, a retryable failure to the
right retry tier with its due time, a non-retryable one (or one out of retries) to the
dead-letter topic, each with the routing headers; and ``deliver`` returns only once the
broker has acknowledged, raising when it did not, so the caller never settles the record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pixelpipe.agents.app import PipelineTopics
from pixelpipe.agents.delivery import AttemptRouter
from pixelpipe.agents.upload_processor import Failed, Processed
from pixelpipe.errors import (
    BreakerOpen,
    CorruptImage,
    DeliveryFailed,
    PixelpipeError,
    StorageUnavailable,
)
from pixelpipe.policy.routing import RetryPolicy
from pixelpipe.schemas import (
    AttemptRecord,
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    RetryEnvelope,
    SourceRef,
    UploadEvent,
    decode_deadletter,
    decode_processed,
    decode_retry,
    parse_time,
    to_dict,
    utc_now_iso,
)
from pixelpipe.schemas import headers as h

ORIGIN = Origin(topic="pixelpipe.uploads", partition=2, offset=17)
POLICY = RetryPolicy(tiers=(("5s", 5.0), ("30s", 30.0)), low_priority_retries=1,
                     max_age_s=3600.0)


@dataclass
class Sent:
    key: bytes
    value: bytes
    headers: dict[str, str]


@dataclass
class FakeTopic:
    """``send`` enqueues and returns the delivery future; ``fail`` makes the broker refuse it."""

    name: str
    fail: BaseException | None = None
    sent: list[Sent] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes, headers: h.Headers) -> asyncio.Future[None]:
        self.sent.append(Sent(key, value, h.header_map(headers)))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            future.set_result(None)
        self.futures.append(future)
        return future


def topics(**failing: BaseException) -> PipelineTopics:
    def topic(name: str) -> FakeTopic:
        return FakeTopic(name, fail=failing.get(name))

    return PipelineTopics(
        uploads=topic("uploads"), processed=topic("processed"), dlq=topic("dlq"),
        retries={"5s": topic("5s"), "30s": topic("30s")}, outcomes=topic("outcomes"),
        breaker=topic("breaker"), workers=topic("workers"), alerts=topic("alerts"),
    )


def all_sent(t: PipelineTopics) -> dict[str, int]:
    named = [t.uploads, t.processed, t.dlq, *t.retries.values(), t.outcomes, t.breaker]
    return {topic.name: len(topic.sent) for topic in named if topic.sent}


def upload(priority: str = "normal") -> UploadEvent:
    return UploadEvent(
        event_id="evt-9", image_id="img-9",
        source=SourceRef(uri="blob://sources/ab/ab", sha256="ab" * 32, size=10),
        renditions=(RenditionRequest(name="thumb", preset="thumbnail"),),
        submitted_at=utc_now_iso(), priority=priority,  # type: ignore[arg-type]
    )


def failed(error: PixelpipeError, event: UploadEvent | None = None) -> Failed:
    event = event or upload()
    return Failed(error=error, upload=event, original=to_dict(event), event_id=event.event_id)


def processed() -> Processed:
    return Processed(ProcessedEvent(
        event_id="evt-9", image_id="img-9", source_sha256="ab" * 32,
        renditions=(RenditionResult(name="thumb", uri="blob://outputs/cd/cd.jpg", sha256="cd" * 32,
                                    size=100, width=20, height=20, format="jpeg"),),
        attempts=3, processing_ms=12.5, completed_at=utc_now_iso(),
    ))


def history(*codes: str, tier: str = "5s") -> RetryEnvelope:
    event = upload()
    return RetryEnvelope(
        event_id=event.event_id, original=to_dict(event),
        attempts=tuple(AttemptRecord(utc_now_iso(), code, "main") for code in codes),
        origin=Origin("pixelpipe.uploads", 0, 5), first_failed_at=utc_now_iso(),
        due_at=utc_now_iso(), tier=tier, image_id=event.image_id,
    )


async def test_a_processed_event_goes_to_the_processed_topic_with_headers() -> None:
    t = topics()
    where = await AttemptRouter(t, POLICY).deliver(processed(), ORIGIN, tier="main",
                                                   history=None)
    assert where == "processed"
    assert all_sent(t) == {"processed": 1}
    (sent,) = t.processed.sent
    assert sent.key == b"img-9"
    assert decode_processed(sent.value).event_id == "evt-9"
    assert sent.headers == {h.EVENT_ID: "evt-9", h.SCHEMA: "pixelpipe.processed/1",
                            h.ATTEMPT: "3"}


async def test_a_retryable_failure_goes_to_the_first_tier_due_after_its_delay() -> None:
    t = topics()
    before = datetime.now(UTC)
    where = await AttemptRouter(t, POLICY).deliver(
        failed(StorageUnavailable("disk full", processor="store")), ORIGIN, tier="main",
        history=None)
    after = datetime.now(UTC)
    assert where == "5s"
    assert all_sent(t) == {"5s": 1}
    (sent,) = t.retries["5s"].sent
    envelope = decode_retry(sent.value)
    assert sent.key == b"img-9"
    assert envelope.tier == "5s" and envelope.origin == ORIGIN
    assert [(a.code, a.tier) for a in envelope.attempts] == [("storage_unavailable", "main")]
    due = parse_time(envelope.due_at)
    # the tier's delay plus at most 10 % jitter (ms precision on the wire)
    assert before + timedelta(seconds=4.999) <= due <= after + timedelta(seconds=5.501)
    assert sent.headers == {
        h.EVENT_ID: "evt-9", h.SCHEMA: "pixelpipe.retry/1", h.ATTEMPT: "1",
        h.DUE_AT: envelope.due_at, h.ERROR_CODE: "storage_unavailable",
        h.ORIGIN_TOPIC: "pixelpipe.uploads", h.ORIGIN_PARTITION: "2", h.ORIGIN_OFFSET: "17",
    }


async def test_a_second_failure_goes_to_the_next_tier_keeping_the_first_origin() -> None:
    t = topics()
    where = await AttemptRouter(t, POLICY).deliver(
        failed(StorageUnavailable("disk full", processor="store")),
        Origin("pixelpipe.retry.5s", 1, 3), tier="5s", history=history("storage_unavailable"))
    assert where == "30s"
    assert all_sent(t) == {"30s": 1}
    envelope = decode_retry(t.retries["30s"].sent[0].value)
    assert envelope.origin == Origin("pixelpipe.uploads", 0, 5)
    assert [a.tier for a in envelope.attempts] == ["main", "5s"]
    assert t.retries["30s"].sent[0].headers[h.ATTEMPT] == "2"


async def test_a_breaker_deferral_goes_back_to_a_tier_without_spending_an_attempt() -> None:
    t = topics()
    where = await AttemptRouter(t, POLICY).deliver(
        failed(BreakerOpen("open", processor="resize")), ORIGIN, tier="main", history=None)
    assert where == "5s"
    envelope = decode_retry(t.retries["5s"].sent[0].value)
    assert envelope.attempts == () and envelope.deferrals == 1


async def test_a_non_retryable_failure_is_dead_lettered_at_once() -> None:
    t = topics()
    where = await AttemptRouter(t, POLICY).deliver(
        failed(CorruptImage("bad huffman table", processor="decode")), ORIGIN, tier="main",
        history=None)
    assert where == "dlq"
    assert all_sent(t) == {"dlq": 1}
    (sent,) = t.dlq.sent
    letter = decode_deadletter(sent.value)
    assert sent.key == b"evt-9"
    assert letter.error.code == "corrupt_image" and letter.error.processor == "decode"
    assert letter.origin == ORIGIN and letter.image_id == "img-9"
    assert sent.headers == {
        h.EVENT_ID: "evt-9", h.SCHEMA: "pixelpipe.deadletter/1",
        h.ERROR_CODE: "corrupt_image", h.ATTEMPT: "1", h.ORIGIN_TOPIC: "pixelpipe.uploads",
        h.ORIGIN_PARTITION: "2", h.ORIGIN_OFFSET: "17",
    }


async def test_a_retryable_failure_past_the_last_tier_is_dead_lettered_exhausted() -> None:
    t = topics()
    where = await AttemptRouter(t, POLICY).deliver(
        failed(StorageUnavailable("disk full", processor="store")),
        Origin("pixelpipe.retry.30s", 0, 1), tier="30s",
        history=history("storage_unavailable", "storage_unavailable", tier="30s"))
    assert where == "dlq"
    assert all_sent(t) == {"dlq": 1}
    letter = decode_deadletter(t.dlq.sent[0].value)
    assert letter.error.code == "retries_exhausted"
    assert len(letter.attempts) == 3


@pytest.mark.parametrize(("outcome", "topic"), [
    (processed(), "processed"),
    (failed(StorageUnavailable("disk full", processor="store")), "5s"),
    (failed(CorruptImage("bad", processor="decode")), "dlq"),
])
async def test_a_failed_delivery_raises_instead_of_returning(outcome: Any, topic: str) -> None:
    refused = DeliveryFailed("broker refused: not enough replicas")
    t = topics(**{topic: refused})
    with pytest.raises(DeliveryFailed):
        await AttemptRouter(t, POLICY).deliver(outcome, ORIGIN, tier="main", history=None)
    assert all_sent(t) == {topic: 1}  # it was sent, and the refusal was awaited, not dropped


async def test_deliver_waits_for_the_broker_ack_not_just_the_enqueue() -> None:
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class SlowTopic(FakeTopic):
        async def send(self, *, key: bytes, value: bytes,
                       headers: h.Headers) -> asyncio.Future[None]:
            self.sent.append(Sent(key, value, h.header_map(headers)))
            return ack

    t = replace(topics(), processed=SlowTopic("processed"))
    delivery = asyncio.create_task(
        AttemptRouter(t, POLICY).deliver(processed(), ORIGIN, tier="main", history=None))
    await asyncio.sleep(0.05)
    assert len(t.processed.sent) == 1 and not delivery.done()
    ack.set_result(None)
    assert await asyncio.wait_for(delivery, 1) == "processed"
