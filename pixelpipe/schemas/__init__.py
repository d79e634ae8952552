"""The wire contracts: event records, their codec, and JSON Schema files (``schemas/json``).

Imports nothing of ``imaging``, ``streams`` or ``agents``.
"""

from pixelpipe.schemas.codec import (
    decode_deadletter,
    decode_processed,
    decode_retry,
    decode_upload,
    encode,
    original_of,
    parse_time,
    to_dict,
    utc_now_iso,
)
from pixelpipe.schemas.events import (
    DEADLETTER_SCHEMA,
    PROCESSED_SCHEMA,
    RETRY_SCHEMA,
    UPLOAD_SCHEMA,
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    RetryEnvelope,
    SourceRef,
    UploadEvent,
)

__all__ = [
    "DEADLETTER_SCHEMA",
    "PROCESSED_SCHEMA",
    "RETRY_SCHEMA",
    "UPLOAD_SCHEMA",
    "AttemptRecord",
    "DeadLetter",
    "ErrorInfo",
    "Origin",
    "ProcessedEvent",
    "RenditionRequest",
    "RenditionResult",
    "RetryEnvelope",
    "SourceRef",
    "UploadEvent",
    "decode_deadletter",
    "decode_processed",
    "decode_retry",
    "decode_upload",
    "encode",
    "original_of",
    "parse_time",
    "to_dict",
    "utc_now_iso",
]
