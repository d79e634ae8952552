"""The error tree of pixelpipe: every failure an event can meet, with a stable code.

Each error knows its ``code`` (the string that travels in dead letters, headers and metrics)
and whether it is ``retryable``. Lower libraries' errors (``cv2.error``, OpenCV's silent
``None``, ``OSError``, aiokafka's errors) are translated into these at the edge, most specific
first, with ``raise ... from exc``.

    PixelpipeError                      root; never raised itself
    ├── InputError                      the input's fault: never retried, never a processor failure
    │   ├── MalformedEvent              malformed_event     not JSON, unknown schema, missing field
    │   ├── ForbiddenSource             forbidden_source    URI outside the blob store
    │   ├── UnsupportedFormat           unsupported_format  magic bytes not allowed
    │   ├── CorruptImage                corrupt_image       decoder fails, truncated data
    │   ├── ImageTooLarge               image_too_large     pixels or bytes over the limit
    │   └── InvalidOperation            invalid_operation   bad parameters, unknown preset
    ├── TransientError                  worth another attempt later
    │   ├── ChecksumMismatch            checksum_mismatch   source bytes differ from sha256 (once)
    │   ├── SourceMissing               source_missing      blob not (yet) there
    │   ├── ProcessingTimeout           processing_timeout  hard timeout hit
    │   ├── WorkerCrashed               worker_crashed      pool process died (OOM, signal)
    │   └── StorageUnavailable          storage_unavailable I/O error writing outputs
    ├── BreakerOpen                     breaker_open        deferred; does not spend an attempt
    │   └── Overloaded                  overloaded          deferred by the degradation ladder
    ├── Terminal                        routing verdicts, never raised by processors
    │   ├── RetriesExhausted            retries_exhausted
    │   └── DeadlineExceeded            deadline_exceeded
    └── OperationalError                stops a command or a worker, never an event's outcome:
        │                               the CLI prints it on one line and exits 1
        ├── ConfigError                 config_error        a setting we cannot use
        ├── BrokerUnavailable           broker_unavailable  Kafka unreachable or refusing
        │   └── TopicMissing            topic_missing       a topic no worker declared yet
        ├── DeliveryFailed              delivery_failed     a record Kafka did not acknowledge
        ├── OutcomeTimeout              outcome_timeout     no outcome within the wait asked for
        ├── DeadLetterNotFound          dead_letter_not_found
        └── ReplayRefused               replay_refused      a replay that would fail the same way

Only the event errors (every class above ``OperationalError``) travel on the wire:
``ERROR_CLASSES`` and ``error_for_code`` know just those.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERROR_CLASSES",
    "INPUT_ERROR_CODES",
    "BreakerOpen",
    "BrokerUnavailable",
    "ChecksumMismatch",
    "ConfigError",
    "CorruptImage",
    "DeadLetterNotFound",
    "DeadlineExceeded",
    "DeliveryFailed",
    "ForbiddenSource",
    "ImageTooLarge",
    "InputError",
    "InternalError",
    "InvalidOperation",
    "MalformedEvent",
    "OperationalError",
    "OutcomeTimeout",
    "Overloaded",
    "PixelpipeError",
    "ProcessingTimeout",
    "ReplayRefused",
    "RetriesExhausted",
    "SourceMissing",
    "StorageUnavailable",
    "Terminal",
    "TopicMissing",
    "TransientError",
    "UnsupportedFormat",
    "WorkerCrashed",
    "error_for_code",
]


class PixelpipeError(Exception):
    """Root of every pixelpipe error. ``code`` is stable and travels on the wire."""

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, processor: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        #: the named processor (operation, ``decode``, ``store``, ...) that failed, if known
        self.processor = processor

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword-only ``processor`` across pickling (errors cross the process pool).
        return (_rebuild_error, (type(self), self.message, self.processor))

    def __str__(self) -> str:
        return self.message


def _rebuild_error(cls: type[PixelpipeError], message: str, processor: str | None) -> PixelpipeError:
    return cls(message, processor=processor)


class InternalError(PixelpipeError):
    """A bug: something no input should be able to cause. Retryable, since a fix may land."""

    code = "internal_error"
    retryable = True


class InputError(PixelpipeError):
    """The input's fault. Never retried, and never counted against a processor's breaker."""

    retryable = False


class MalformedEvent(InputError):
    code = "malformed_event"


class ForbiddenSource(InputError):
    code = "forbidden_source"


class UnsupportedFormat(InputError):
    code = "unsupported_format"


class CorruptImage(InputError):
    code = "corrupt_image"


class ImageTooLarge(InputError):
    code = "image_too_large"


class InvalidOperation(InputError):
    code = "invalid_operation"


class TransientError(PixelpipeError):
    """Worth another attempt later."""

    retryable = True


class ChecksumMismatch(TransientError):
    """Retried once: a blob may still have been being written when the event arrived."""

    code = "checksum_mismatch"

    @classmethod
    def of_source(cls, actual: str, claimed: str) -> ChecksumMismatch:
        """A source whose bytes hash to ``actual`` where its event says ``claimed``."""
        return cls(f"source sha256 is {actual[:12]}..., the event says {claimed[:12]}...",
                   processor="fetch")


class SourceMissing(TransientError):
    code = "source_missing"


class ProcessingTimeout(TransientError):
    code = "processing_timeout"


class WorkerCrashed(TransientError):
    code = "worker_crashed"


class StorageUnavailable(TransientError):
    code = "storage_unavailable"


class BreakerOpen(PixelpipeError):
    """The processor's circuit is open: the work is deferred without spending an attempt."""

    code = "breaker_open"
    retryable = True


class Overloaded(BreakerOpen):
    """Deferred by the degradation ladder (``cached_only`` with nothing cached, or a ``low``
    priority upload from ``basic`` on): routed like an open breaker, no attempt spent."""

    code = "overloaded"


class Terminal(PixelpipeError):
    """A routing verdict: the event is dead-lettered with this code."""

    retryable = False


class RetriesExhausted(Terminal):
    code = "retries_exhausted"


class DeadlineExceeded(Terminal):
    code = "deadline_exceeded"


class OperationalError(PixelpipeError):
    """Stops a command or a worker; never an event's outcome (not in ``ERROR_CLASSES``)."""

    code = "operational_error"


class ConfigError(OperationalError, ValueError):
    """A setting has a value we cannot use; the message names the variable."""

    code = "config_error"


class BrokerUnavailable(OperationalError):
    """Kafka cannot be reached, or refused a request we cannot do without."""

    code = "broker_unavailable"


class TopicMissing(BrokerUnavailable):
    """A topic we need does not exist (no worker has declared it yet)."""

    code = "topic_missing"


class PoolBroken(OperationalError):
    """The image process pool stopped working and could not be rebuilt: the worker stops
    (nothing it holds is settled, so every upload is read again by the next owner) instead of
    failing upload after upload into the dead-letter topic."""

    code = "pool_broken"


class DeliveryFailed(OperationalError):
    """A record was not acknowledged by Kafka after the producer's retries."""

    code = "delivery_failed"


class OutcomeTimeout(OperationalError):
    """An event's outcome did not appear within the time we were asked to wait."""

    code = "outcome_timeout"


class DeadLetterNotFound(OperationalError):
    """No dead letter has the event id asked for."""

    code = "dead_letter_not_found"


class ReplayRefused(OperationalError):
    """A replay was asked for that would fail the same way (or is not allowed)."""

    code = "replay_refused"


ERROR_CLASSES: dict[str, type[PixelpipeError]] = {
    cls.code: cls
    for cls in (
        InternalError,
        MalformedEvent,
        ForbiddenSource,
        UnsupportedFormat,
        CorruptImage,
        ImageTooLarge,
        InvalidOperation,
        ChecksumMismatch,
        SourceMissing,
        ProcessingTimeout,
        WorkerCrashed,
        StorageUnavailable,
        BreakerOpen,
        Overloaded,
        RetriesExhausted,
        DeadlineExceeded,
    )
}

#: codes that are the input's fault: they never count as a processor failure
INPUT_ERROR_CODES: frozenset[str] = frozenset(
    code for code, cls in ERROR_CLASSES.items() if issubclass(cls, InputError)
)


def error_for_code(code: str, message: str = "", *, processor: str | None = None) -> PixelpipeError:
    """Build the error whose code is ``code`` (``InternalError`` for an unknown code)."""
    cls = ERROR_CLASSES.get(code, InternalError)
    return cls(message, processor=processor)
