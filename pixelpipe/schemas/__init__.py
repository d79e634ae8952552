"""The wire contracts: event records, their codec, and JSON Schema files (``schemas/json``).

Imports nothing of ``imaging``, ``streams`` or ``agents``.
"""

from pixelpipe.schemas.codec import (
    decode_deadletter,
    decode_processed,
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
    UPLOAD_SCHEMA,
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    SourceRef,
    UploadEvent,
)

__all__ = [
    "DEADLETTER_SCHEMA",
    "PROCESSED_SCHEMA",
    "UPLOAD_SCHEMA",
    "AttemptRecord",
    "DeadLetter",
    "ErrorInfo",
    "Origin",
    "ProcessedEvent",
    "RenditionRequest",
    "RenditionResult",
    "SourceRef",
    "UploadEvent",
    "decode_deadletter",
    "decode_processed",
    "decode_upload",
    "encode",
    "original_of",
    "parse_time",
    "to_dict",
    "utc_now_iso",
]
