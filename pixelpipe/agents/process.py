"""The process agent: uploads in, processed events or dead letters out, nothing lost.

The agent does not read the uploads topic itself: ``UploadFeed`` (agents/uploads_feed.py)
owns that consumer and its offsets, and hands each record over a ``HandoffChannel``. faust's
commit bookkeeping passed records it had fetched and dropped at a rebalance (issue 9), so no
faust machinery decides any more which upload counts as done. Here:

- one actor (``concurrency=1``) takes hand-offs in order and starts each at once; the feed
  keeps at most ``max_inflight`` uploads in flight, the CPU work runs in the process pool;
- each outcome record is sent and its *delivery* awaited (``await (await topic.send())``);
- only then is the feed told the record is settled, and only settled prefixes are committed;
- a hand-off whose partition was revoked before it started is skipped: the new owner reads it.

If a delivery fails after the producer's own retries, the worker stops (``app.crash``): the
record is never settled, Kafka redelivers it from the last commit, and the idempotent outputs
make the repeat harmless. Continuing would leave a hole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from pixelpipe.agents.delivery import AttemptRouter
from pixelpipe.agents.upload_processor import Processed, UploadProcessor
from pixelpipe.agents.uploads_feed import Handoff, HandoffChannel, UploadFeed
from pixelpipe.policy.routing import MAIN_TIER
from pixelpipe.schemas import Origin

log = logging.getLogger(__name__)


def register_process_agent(
    app: faust.App, channel: HandoffChannel, feed: UploadFeed, processor: UploadProcessor,
    router: AttemptRouter,
) -> Any:
    """Attach the process agent to ``app``, reading hand-offs from ``channel``; return it."""

    async def settle(handoff: Handoff) -> None:
        record = handoff.record
        origin = Origin(topic=record.topic, partition=record.partition, offset=record.offset)
        started_at = time.time()
        try:
            outcome = await processor.process(record.value, origin)
            if isinstance(outcome, Processed) and handoff.fetched_at:
                outcome.stages["handoff"] = (started_at - handoff.fetched_at) * 1000
                if record.timestamp is not None and record.timestamp > 0:
                    outcome.stages["kafka"] = handoff.fetched_at * 1000 - record.timestamp
            await router.deliver(outcome, origin, tier=MAIN_TIER, history=None)
        except Exception as exc:
            # Delivery failed for good (or a bug in routing): never settle this record.
            log.critical(
                "cannot deliver the outcome of %s[%d]@%d; stopping the worker: %r",
                record.topic, record.partition, record.offset, exc, exc_info=True,
            )
            await app.crash(exc)
            return
        feed.settled(handoff)

    async def process_uploads(stream: Any) -> None:
        running: set[asyncio.Task[None]] = set()
        # Spawn the image processes and catch up with the breakers before the first upload.
        await processor.start()
        try:
            async for handoff in stream:
                if not feed.begin(handoff):
                    continue
                task = asyncio.create_task(settle(handoff))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # On shutdown, let in-flight uploads finish their delivery (bounded by the pool's
            # task timeout); anything unfinished is never settled and is redelivered.
            if running:
                await asyncio.wait(running, timeout=30)

    return app.agent(channel, name="pixelpipe.process", concurrency=1)(process_uploads)
