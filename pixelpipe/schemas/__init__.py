"""The wire contracts: every record's name (``names``), the event records, their codec, the
time format (``times``) and a JSON Schema file per record (``schemas/json``).

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
    malformed_event_id,
)
from pixelpipe.schemas.names import (
    BREAKER_SCHEMA,
    COMMAND_SCHEMA,
    CONTROL_SCHEMA,
    DEADLETTER_SCHEMA,
    OUTCOME_SCHEMA,
    PROCESSED_SCHEMA,
    REPLAY_SCHEMA,
    RETRY_SCHEMA,
    UPLOAD_SCHEMA,
)
from pixelpipe.schemas.times import epoch_iso, iso

__all__ = [
    "BREAKER_SCHEMA",
    "COMMAND_SCHEMA",
    "CONTROL_SCHEMA",
    "DEADLETTER_SCHEMA",
    "OUTCOME_SCHEMA",
    "PROCESSED_SCHEMA",
    "REPLAY_SCHEMA",
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
    "epoch_iso",
    "iso",
    "malformed_event_id",
    "original_of",
    "parse_time",
    "to_dict",
    "utc_now_iso",
]
