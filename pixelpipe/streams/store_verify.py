"""``pixelpipe store verify``: every stored output against the sha256 its processed event
recorded, every source against its own; ``--repair`` re-renders bad outputs from their
immutable source by republishing the upload.

    async with StoreVerifier(settings) as verifier:
        report = await verifier.verify(since_ms=None)
        report = await verifier.repair(report, timeout_s=300)

What is read (group-less, nothing committed, to the end as of the call): the processed topic
(from ``since_ms``, a Kafka timestamp, when given) for what was stored and its sha256, and the
uploads topic for each event's upload (its source URI and, to repair, the upload itself). For
each output URI the **latest** processed event that names it is the reference (a repair's
new event supersedes the old record). An output equal to its upload's source (an
``emergency`` rendition) is checked as a source.

A repair deletes a corrupt output first when the store keeps existing keys (the S3 store's
writes are create-only; the local store overwrites), republishes the upload unchanged (same
``event_id``: downstream consumers drop the repeated processed event, the bytes under the same
URIs are what changes), waits for its outcome and checks the outputs again: ``repaired``
counts those that are right now. An output whose source is itself missing or corrupt, or whose
upload is no longer on the uploads topic, cannot be re-rendered: reported, not repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Literal

from pixelpipe.config import Settings
from pixelpipe.errors import (
    ChecksumMismatch,
    ForbiddenSource,
    MalformedEvent,
    OutcomeTimeout,
    SourceMissing,
)
from pixelpipe.schemas import ProcessedEvent, UploadEvent, decode_processed, decode_upload
from pixelpipe.storage import BlobStore, open_store
from pixelpipe.streams import kafka
from pixelpipe.streams.deadletter_reader import read_to_end
from pixelpipe.streams.publisher import Publisher
from pixelpipe.streams.topics import processed_topic, uploads_topic

Problem = Literal["missing", "corrupt", "unreadable"]

#: blobs checked at once (each a read in a thread)
CONCURRENCY = 4


@dataclass(slots=True)
class Finding:
    """One bad blob."""

    kind: Literal["output", "source"]
    uri: str
    problem: Problem
    detail: str
    event_id: str
    image_id: str
    #: '' (not asked), ``repaired``, or why not: ``not repaired: ...``
    repair: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class VerifyReport:
    checked_outputs: int = 0
    checked_sources: int = 0
    findings: list[Finding] = field(default_factory=list)
    repaired: int = 0
    republished: int = 0

    @property
    def checked(self) -> int:
        return self.checked_outputs + self.checked_sources

    @property
    def bad(self) -> int:
        return len(self.findings)

    def summary(self) -> dict[str, Any]:
        return {"checked": self.checked, "checked_outputs": self.checked_outputs,
                "checked_sources": self.checked_sources, "bad": self.bad,
                "repaired": self.repaired, "republished": self.republished,
                "unrepaired": self.bad - self.repaired}


@dataclass(frozen=True, slots=True)
class _Recorded:
    sha256: str
    size: int
    event_id: str
    image_id: str


class StoreVerifier:
    def __init__(self, settings: Settings, *, store: BlobStore | None = None,
                 stall_s: float = 10.0) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self._own_store = store is None
        self.stall_s = stall_s
        self.uploads: dict[str, UploadEvent] = {}
        self.outputs: dict[str, _Recorded] = {}
        self.sources: dict[str, _Recorded] = {}  # uri -> the source's own sha256

    async def __aenter__(self) -> StoreVerifier:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._own_store:
            self.store.close()

    # ------------------------------------------------------------------ reading

    async def _read(self, topic: str, since_ms: int | None) -> list[Any]:
        consumer = kafka.consumer(self.settings, group=None, role="store-verify")
        await kafka.start(consumer, self.settings)
        try:
            partitions = await kafka.existing_partitions(self.settings, topic)
            return [r async for r in read_to_end(consumer, partitions, start_ms=since_ms,
                                                 stall_s=self.stall_s)]
        finally:
            await consumer.stop()

    async def load(self, since_ms: int | None = None) -> None:
        """What the topics say is stored (see the module's docstring)."""
        prefix = self.settings.topic_prefix
        for record in await self._read(uploads_topic(prefix), None):
            try:
                upload = decode_upload(record.value)
            except MalformedEvent:
                continue
            self.uploads[upload.event_id] = upload
        for record in await self._read(processed_topic(prefix), since_ms):
            try:
                event = decode_processed(record.value)
            except MalformedEvent:
                continue
            self._add(event)

    def _add(self, event: ProcessedEvent) -> None:
        upload = self.uploads.get(event.event_id)
        source_uri = upload.source.uri if upload is not None else \
            self.store.source_uri(event.source_sha256)
        size = upload.source.size if upload is not None else -1
        self.sources[source_uri] = _Recorded(event.source_sha256, size, event.event_id,
                                             event.image_id)
        for rendition in event.renditions:
            if rendition.uri == source_uri:
                continue  # an emergency rendition is the source itself
            self.outputs[rendition.uri] = _Recorded(rendition.sha256, rendition.size,
                                                    event.event_id, event.image_id)

    # ------------------------------------------------------------------ checking

    async def verify(self, since_ms: int | None = None) -> VerifyReport:
        await self.load(since_ms)
        report = VerifyReport(checked_outputs=len(self.outputs),
                              checked_sources=len(self.sources))
        limit = asyncio.Semaphore(CONCURRENCY)

        async def check(kind: Literal["output", "source"], uri: str,
                        recorded: _Recorded) -> Finding | None:
            async with limit:
                problem = await asyncio.to_thread(self._check_one, uri, recorded)
            if problem is None:
                return None
            return Finding(kind=kind, uri=uri, problem=problem[0], detail=problem[1],
                           event_id=recorded.event_id, image_id=recorded.image_id)

        checks = [check("source", uri, r) for uri, r in sorted(self.sources.items())]
        checks += [check("output", uri, r) for uri, r in sorted(self.outputs.items())]
        report.findings = [f for f in await asyncio.gather(*checks) if f is not None]
        return report

    def _check_one(self, uri: str, recorded: _Recorded) -> tuple[Problem, str] | None:
        try:
            data = self.store.read(uri)
        except SourceMissing:
            return "missing", "not in the store"
        except ChecksumMismatch as error:  # the S3 store's own read check
            return "corrupt", str(error)
        except ForbiddenSource as error:
            return "unreadable", f"not a blob of this store ({self.settings.data_location}): {error}"
        except (FileNotFoundError, IsADirectoryError):
            return "missing", "not in the store"
        actual = hashlib.sha256(data).hexdigest()
        if actual != recorded.sha256:
            return "corrupt", (f"sha256 is {actual[:12]}..., recorded {recorded.sha256[:12]}... "
                               f"({len(data)} bytes, recorded {recorded.size})")
        if recorded.size >= 0 and len(data) != recorded.size:
            return "corrupt", f"{len(data)} bytes, recorded {recorded.size}"
        return None

    # ------------------------------------------------------------------ repairing

    async def repair(self, report: VerifyReport, *, timeout_s: float = 300.0) -> VerifyReport:
        """Republish the upload of every bad output that can be re-rendered, wait for the
        outcomes, check again (see the module's docstring)."""
        bad_sources = {f.uri for f in report.findings if f.kind == "source"}
        to_republish: dict[str, UploadEvent] = {}
        for finding in report.findings:
            if finding.kind == "source":
                finding.repair = "not repaired: a source is immutable (publish it again)"
                continue
            upload = self.uploads.get(finding.event_id)
            if upload is None:
                finding.repair = "not repaired: its upload is no longer on the uploads topic"
            elif upload.source.uri in bad_sources:
                finding.repair = "not repaired: its source is bad too"
            else:
                to_republish[upload.event_id] = upload
        if not to_republish:
            return report
        for finding in report.findings:
            if finding.kind == "output" and finding.event_id in to_republish \
                    and finding.problem == "corrupt":
                delete = getattr(self.store, "delete_output", None)
                if delete is not None:  # create-only writes would keep the corrupt bytes
                    await asyncio.to_thread(delete, finding.uri)
        outcomes: dict[str, Any] = {}
        async with Publisher(self.settings, declare_topics=False) as publisher:
            await publisher.watch_outcomes()
            for upload in to_republish.values():
                await publisher.publish_event(upload)
                report.republished += 1

            async def wait(event_id: str) -> None:
                with contextlib.suppress(OutcomeTimeout):  # reported per finding below
                    outcomes[event_id] = await publisher.wait_for(event_id, timeout_s)

            await asyncio.gather(*(wait(event_id) for event_id in to_republish))
        for finding in report.findings:
            if finding.kind != "output" or finding.event_id not in to_republish:
                continue
            outcome = outcomes.get(finding.event_id)
            if outcome is None:
                finding.repair = f"not repaired: no outcome within {timeout_s:g} s"
                continue
            if outcome.status != "processed":
                code = getattr(getattr(outcome.event, "error", None), "code", "?")
                finding.repair = f"not repaired: the upload was dead-lettered ({code})"
                continue
            event: ProcessedEvent = outcome.event
            self._add(event)
            recorded = self.outputs.get(finding.uri)
            if recorded is None:
                finding.repair = "not repaired: the new outcome does not name this output"
                continue
            problem = await asyncio.to_thread(self._check_one, finding.uri, recorded)
            if problem is None:
                finding.repair = "repaired"
                report.repaired += 1
            else:
                finding.repair = f"not repaired: still {problem[0]} ({problem[1]})"
        return report
