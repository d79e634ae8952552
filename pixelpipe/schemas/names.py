"""The name of every record on every topic: the ``schema`` field each record carries.

One definition each; every writer and reader imports them from here. Each name has a JSON
Schema file in ``schemas/json``: ``pixelpipe.<name>/<version>`` -> ``<name>-<version>.json``
(``schema_file``).
"""

from __future__ import annotations

from typing import Final

#: ``<prefix>.uploads``: what a client asks for (``events.UploadEvent``)
UPLOAD_SCHEMA: Final = "pixelpipe.upload/1"
#: ``<prefix>.processed``: an upload's renditions, stored (``events.ProcessedEvent``)
PROCESSED_SCHEMA: Final = "pixelpipe.processed/1"
#: ``<prefix>.dlq``: an upload that will not be processed (``events.DeadLetter``)
DEADLETTER_SCHEMA: Final = "pixelpipe.deadletter/1"
#: ``<prefix>.retry.<tier>``: an upload waiting for its next attempt (``events.RetryEnvelope``)
RETRY_SCHEMA: Final = "pixelpipe.retry/1"
#: ``<prefix>.outcomes``: a processor's call(s), the breaker's telemetry (``agents.telemetry``)
OUTCOME_SCHEMA: Final = "pixelpipe.outcome/1"
#: ``<prefix>.outcomes``: an operator's breaker override (``streams.breaker_client``)
COMMAND_SCHEMA: Final = "pixelpipe.breaker-command/1"
#: ``<prefix>.breaker`` (compacted): one processor's breaker state (``policy.breaker``)
BREAKER_SCHEMA: Final = "pixelpipe.breaker/1"
#: ``<prefix>.dlq.replays`` (compacted): the replay ledger (``schemas.replay``)
REPLAY_SCHEMA: Final = "pixelpipe.replay/1"
#: ``<prefix>.control`` (compacted): an operator's control, e.g. the degradation override
#: (``streams.control``)
CONTROL_SCHEMA: Final = "pixelpipe.control/1"

#: ``<prefix>.workers`` (compacted): one worker's heartbeat (``agents.heartbeat``)
WORKER_SCHEMA: Final = "pixelpipe.worker/1"
#: ``<prefix>.alerts``: an alert firing or resolved (``agents.alerts``)
ALERT_SCHEMA: Final = "pixelpipe.alert/1"

ALL_SCHEMAS: Final = (UPLOAD_SCHEMA, PROCESSED_SCHEMA, DEADLETTER_SCHEMA, RETRY_SCHEMA,
                      OUTCOME_SCHEMA, COMMAND_SCHEMA, BREAKER_SCHEMA, REPLAY_SCHEMA,
                      CONTROL_SCHEMA, WORKER_SCHEMA, ALERT_SCHEMA)


def schema_file(name: str) -> str:
    """The JSON Schema file (in ``schemas/json``) of a record name:
    ``pixelpipe.breaker-command/1`` -> ``breaker-command-1.json``."""
    base, _, version = name.removeprefix("pixelpipe.").partition("/")
    return f"{base}-{version}.json"
