"""The wire records: upload, processed-image and dead-letter events (version 1).

These are plain frozen dataclasses; ``pixelpipe.schemas.codec`` turns bytes into them and back.
The field names and meanings are a contract (ARCHITECTURE.md section 3): add optional fields,
never rename or retype one without a new schema version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pixelpipe.schemas.names import (
    DEADLETTER_SCHEMA,
    PROCESSED_SCHEMA,
    RETRY_SCHEMA,
    UPLOAD_SCHEMA,
)

Priority = Literal["low", "normal", "high"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high")

#: One operation as carried in an event: the command-line grammar as a string
#: (``"resize:width=800,fit=inside"``) or the JSON form (``{"op": "resize", "width": 800}``).
OperationItem = str | dict[str, Any]


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where the source image lives (a blob-store URI) and what its bytes must be."""

    uri: str
    sha256: str
    size: int
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class RenditionRequest:
    """One output wanted from the source: a named preset or an explicit operation list."""

    name: str
    preset: str | None = None
    operations: tuple[OperationItem, ...] | None = None
    #: processors that may be left out when their breaker is open or under degradation
    optional: tuple[str, ...] = ()
    #: an output format to use instead when this rendition's format processor is unavailable
    fallback_format: str | None = None


@dataclass(frozen=True, slots=True)
class UploadEvent:
    """``pixelpipe.upload/1``: a service asks for renditions of one stored image."""

    event_id: str
    image_id: str
    source: SourceRef
    renditions: tuple[RenditionRequest, ...]
    submitted_at: str
    priority: Priority = "normal"
    deadline: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: how many times an operator replayed this event from the dead-letter topic
    replays: int = 0
    #: set by ``pixelpipe backfill``: this upload re-requests an event whose outputs were
    #: degraded; the processed event it replaces, as ``<partition>@<offset>`` on the processed
    #: topic (None: an ordinary upload)
    supersedes: str | None = None
    schema: str = UPLOAD_SCHEMA


@dataclass(frozen=True, slots=True)
class RenditionResult:
    """One produced output."""

    name: str
    uri: str
    sha256: str
    size: int
    width: int
    height: int
    format: str
    degraded: str | None = None
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessedEvent:
    """``pixelpipe.processed/1``: every rendition of an upload is stored and verified."""

    event_id: str
    image_id: str
    source_sha256: str
    renditions: tuple[RenditionResult, ...]
    attempts: int
    processing_ms: float
    completed_at: str
    attributes: dict[str, Any] = field(default_factory=dict)
    #: the service level the worker served it at (``full`` ... ``emergency``); each rendition
    #: says in ``degraded`` whether (and how) it was served below ``full``
    level: str = "full"
    #: the processed event this one replaces (``<partition>@<offset>`` on the processed topic),
    #: copied from a backfill upload; None for a first outcome
    supersedes: str | None = None
    schema: str = PROCESSED_SCHEMA


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The final error of a dead letter."""

    code: str
    class_: str
    message: str
    processor: str | None
    retryable: bool


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One failed attempt: when, with what code, on which tier (``main`` for the uploads topic)."""

    at: str
    code: str
    tier: str


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the upload was read from when it failed for good."""

    topic: str
    partition: int
    offset: int

    @property
    def malformed_event_id(self) -> str:
        """The event id of a record read here that carries none: see ``malformed_event_id``."""
        return malformed_event_id(self.topic, self.partition, self.offset)


def malformed_event_id(topic: str, partition: int, offset: int) -> str:
    """The event id of a record that carries none (not JSON, no ``event_id``):
    ``malformed:<topic>:<partition>:<offset>``.

    Derived, not random: a redelivered copy of the same bad message gets the same id, so its
    dead letter is idempotent like every other outcome, and a publisher that knows where its
    record landed can wait for it.
    """
    return f"malformed:{topic}:{partition}:{offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """``pixelpipe.deadletter/1``: an upload that will not be processed without an operator.

    ``original`` is the upload exactly as received: the decoded JSON object when it was JSON,
    else ``{"base64": ...}`` holding the raw bytes.
    """

    event_id: str
    original: dict[str, Any]
    error: ErrorInfo
    attempts: tuple[AttemptRecord, ...]
    origin: Origin
    first_failed_at: str
    dead_lettered_at: str
    replays: int = 0
    image_id: str | None = None
    schema: str = DEADLETTER_SCHEMA


@dataclass(frozen=True, slots=True)
class RetryEnvelope:
    """``pixelpipe.retry/1``: an upload waiting in a retry tier until ``due_at``.

    The routing state travels in the body, so headers stay bounded however many attempts an
    event makes. ``original`` is the upload as first received (a JSON object: only decodable
    uploads are ever retried); ``attempts`` is every failed attempt so far, oldest first.
    """

    event_id: str
    original: dict[str, Any]
    attempts: tuple[AttemptRecord, ...]
    origin: Origin
    first_failed_at: str
    due_at: str
    tier: str
    image_id: str | None = None
    #: times the upload was deferred by an open breaker (not attempts: they spend none)
    deferrals: int = 0
    schema: str = RETRY_SCHEMA
