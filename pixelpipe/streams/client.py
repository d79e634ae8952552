"""The async Python API for services: publish uploads, wait for outcomes, consume results.

    async with Publisher(settings) as publisher:
        upload = await publisher.publish_file("cat.jpg", renditions=[{"name": "t", "preset": "thumbnail"}])
        outcome = await publisher.wait_for(upload.event_id, timeout=60)

    async with ProcessedConsumer(settings, from_beginning=True) as consumer:
        async for event in consumer:
            ...

Producers here are built on aiokafka directly, whose defaults are unsafe for us (``acks=1``, no
idempotence): they set ``acks="all"`` and ``enable_idempotence=True``, and ``publish`` returns
only once the broker has acknowledged the event.
"""

from pixelpipe.streams.processed_consumer import ProcessedConsumer
from pixelpipe.streams.publisher import FinalOutcome, OutcomeWaiter, PublishedUpload, Publisher

__all__ = ["FinalOutcome", "OutcomeWaiter", "ProcessedConsumer", "PublishedUpload", "Publisher"]
