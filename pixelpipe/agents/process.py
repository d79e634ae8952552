"""The process agent: uploads in, processed events or dead letters out, nothing lost.

The shape that keeps the guarantee (FAUST-NOTES.md, "Acks, offsets"):

- one actor (``concurrency=1``) reads the stream with acks off (``noack``), so neither the
  loop nor an exception can ack an event behind our back;
- up to ``max_inflight`` uploads run at once (the CPU work in the process pool), so both cores
  stay busy while outcomes are delivered;
- each outcome record is sent and its *delivery* awaited (``await (await topic.send())``);
- events are acked strictly in offset order per partition (``InOrderAcks``), only once they
  and everything before them are delivered: faust's commit can never pass an unrouted event
  (faust-streaming issue 606).

If a delivery fails after the producer's own retries, the worker stops (``app.crash``): the
event stays unacked, Kafka redelivers it from the last commit, and the idempotent outputs make
the repeat harmless. Continuing would leave a hole the next commit could jump.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from pixelpipe.agents.pipeline import DeadLettered, Processed, UploadProcessor
from pixelpipe.schemas import Origin, encode
from pixelpipe.streams import headers as h
from pixelpipe.streams.app import PipelineTopics
from pixelpipe.streams.ordering import InOrderAcks

log = logging.getLogger(__name__)


def register_process_agent(
    app: faust.App, topics: PipelineTopics, processor: UploadProcessor, max_inflight: int
) -> Any:
    """Attach the process agent to ``app``; return it."""

    async def process_uploads(stream: Any) -> None:
        manual = stream.noack()
        acks: InOrderAcks[Any] = InOrderAcks()
        slots = asyncio.Semaphore(max_inflight)
        running: set[asyncio.Task[None]] = set()

        async def settle(event: Any) -> None:
            tp = event.message.tp
            try:
                await _route(event, topics, processor)
            except Exception as exc:
                # Delivery failed for good (or a bug in routing): never ack past this event.
                log.critical(
                    "cannot deliver the outcome of %s[%d]@%d; stopping the worker: %r",
                    tp.topic, tp.partition, event.message.offset, exc, exc_info=True,
                )
                slots.release()
                await app.crash(exc)
                return
            slots.release()
            for ready in acks.complete(tp, event):
                await manual.ack(ready)

        # Spawn the image processes before the first upload, not during it.
        await processor.pool.warm_up()
        try:
            async for event in manual.events():
                await slots.acquire()
                acks.track(event.message.tp, event)
                task = asyncio.create_task(settle(event))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # On shutdown, let in-flight uploads finish their delivery (bounded by the pool's
            # task timeout); anything unfinished stays unacked and is redelivered.
            if running:
                await asyncio.wait(running, timeout=30)

    return app.agent(topics.uploads, name="pixelpipe.process", concurrency=1)(process_uploads)


async def _route(event: Any, topics: PipelineTopics, processor: UploadProcessor) -> None:
    message = event.message
    origin = Origin(topic=message.topic, partition=message.partition, offset=message.offset)
    outcome = await processor.process(event.value, origin)
    if isinstance(outcome, Processed):
        processed = outcome.event
        pending = await topics.processed.send(
            key=processed.image_id.encode(),
            value=encode(processed),
            headers=h.make_headers(event_id=processed.event_id, schema=processed.schema),
        )
        await pending  # wait for the broker's ack, not just the accumulator
        log.info(
            "processed %s (image %s) from %s[%d]@%d in %.0f ms",
            processed.event_id, processed.image_id, origin.topic, origin.partition,
            origin.offset, processed.processing_ms,
        )
        return
    assert isinstance(outcome, DeadLettered)
    letter = outcome.letter
    pending = await topics.dlq.send(
        key=letter.event_id.encode(),
        value=encode(letter),
        headers=h.make_headers(
            event_id=letter.event_id,
            schema=letter.schema,
            error_code=letter.error.code,
            attempt=len(letter.attempts),
            origin_topic=origin.topic,
            origin_partition=origin.partition,
            origin_offset=origin.offset,
        ),
    )
    await pending
    log_level = logging.ERROR if letter.error.code == "internal_error" else logging.WARNING
    log.log(
        log_level,
        "dead-lettered %s from %s[%d]@%d: %s (%s): %s",
        letter.event_id, origin.topic, origin.partition, origin.offset,
        letter.error.code, letter.error.processor, letter.error.message,
    )
