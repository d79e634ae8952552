"""The replay ledger's record, ``pixelpipe.replay/1``: one per replayed dead letter.

The ledger is the compacted topic ``<prefix>.dlq.replays``, keyed by the letter
(``<event_id>#<replays>``, see ``streams.deadletters``); its latest record per key is the
letter's replay state. Written by ``streams.dlq_replay`` (which explains the two states).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

from pixelpipe.schemas.names import REPLAY_SCHEMA

Target = Literal["uploads", "retry"]


def letter_key(event_id: str, replays: int) -> str:
    """The ledger key of a letter: ``<event_id>#<replays>`` (see ``streams.deadletters``)."""
    return f"{event_id}#{replays}"


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """``pixelpipe.replay/1``: the ledger's latest word on one letter (compacted by key).

    ``state`` is ``publishing`` (written, acknowledged, *before* the replayed record is
    published) or ``published`` (after Kafka acknowledged the replayed record). ``replays`` is
    the count the replayed upload carries; ``times`` how often this letter was replayed.
    """

    event_id: str
    letter_replays: int
    state: Literal["publishing", "published"]
    replays: int
    times: int
    to: Target
    topic: str
    run_id: str
    replayed_at: str
    code: str
    dead_lettered_at: str
    partition: int | None = None
    offset: int | None = None
    #: the Kafka timestamp (ms) of the ``publishing`` record, filled in when read
    intent_timestamp_ms: int | None = None
    schema: str = REPLAY_SCHEMA

    @property
    def key(self) -> str:
        return letter_key(self.event_id, self.letter_replays)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        data = self.to_json()
        data.pop("intent_timestamp_ms")
        return orjson.dumps(data)


def decode_replay_record(raw: bytes | None, timestamp_ms: int | None = None) -> ReplayRecord | None:
    """A ledger record, or None for a tombstone or anything that is not ``pixelpipe.replay/1``."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("schema") != REPLAY_SCHEMA:
            return None
        return ReplayRecord(
            event_id=str(data["event_id"]),
            letter_replays=int(data["letter_replays"]),
            state="published" if data["state"] == "published" else "publishing",
            replays=int(data["replays"]),
            times=int(data.get("times", 1)),
            to="retry" if data.get("to") == "retry" else "uploads",
            topic=str(data["topic"]),
            run_id=str(data.get("run_id", "")),
            replayed_at=str(data["replayed_at"]),
            code=str(data.get("code", "")),
            dead_lettered_at=str(data.get("dead_lettered_at", "")),
            partition=data.get("partition"),
            offset=data.get("offset"),
            intent_timestamp_ms=timestamp_ms,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
