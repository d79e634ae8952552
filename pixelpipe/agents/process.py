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

from pixelpipe.agents.delivery import OutcomeRouter
from pixelpipe.agents.pipeline import UploadProcessor
from pixelpipe.agents.routing import MAIN_TIER
from pixelpipe.schemas import Origin
from pixelpipe.streams.app import PipelineTopics
from pixelpipe.streams.ordering import InOrderAcks

log = logging.getLogger(__name__)


def register_process_agent(
    app: faust.App, topics: PipelineTopics, processor: UploadProcessor, router: OutcomeRouter,
    max_inflight: int,
) -> Any:
    """Attach the process agent to ``app``; return it."""

    async def process_uploads(stream: Any) -> None:
        manual = stream.noack()
        acks: InOrderAcks[Any] = InOrderAcks()
        slots = asyncio.Semaphore(max_inflight)
        running: set[asyncio.Task[None]] = set()

        async def settle(event: Any) -> None:
            message = event.message
            tp = message.tp
            origin = Origin(topic=message.topic, partition=message.partition,
                            offset=message.offset)
            try:
                outcome = await processor.process(event.value, origin)
                await router.deliver(outcome, origin, tier=MAIN_TIER, history=None)
            except Exception as exc:
                # Delivery failed for good (or a bug in routing): never ack past this event.
                log.critical(
                    "cannot deliver the outcome of %s[%d]@%d; stopping the worker: %r",
                    tp.topic, tp.partition, message.offset, exc, exc_info=True,
                )
                slots.release()
                await app.crash(exc)
                return
            slots.release()
            for ready in acks.complete(tp, event):
                await manual.ack(ready)

        # Spawn the image processes and catch up with the breakers before the first upload.
        await processor.start()
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
