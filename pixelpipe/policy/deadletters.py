"""Dead letters as an operator sees them: identity, filters, replay state, stats, replay plans.

Pure (no I/O), like its neighbours ``dlq_ledger`` (the replay ledger's records) and
``dlq_plan`` (which letters a replay run takes, and the records it publishes):
:mod:`pixelpipe.streams.deadletter_reader` reads the topics into these records and
:mod:`pixelpipe.streams.deadletter_replayer` acts on a plan. Unit-tested without a broker.

**Identity of a letter.** A letter is ``(event_id, replays)``: the upload's replay count when it
died. At-least-once delivery can dead-letter the same upload twice (a worker killed after the
letter was acknowledged but before the upload's offset was committed); both copies carry the
same ``event_id`` and ``replays`` (and differ only in ``dead_lettered_at``), so they are one
letter and are replayed once. A replayed upload carries ``replays + 1``: if it dies again, that
is a new letter (a new generation), and the older one is *superseded*.

**Cause.** A letter's ``cause`` is the code of its last attempt (``source_missing`` for a
missing blob that walked every tier and ended ``retries_exhausted``), else its final code.
``--code X`` matches a letter whose final code *or* cause is ``X``: ``--code source_missing``
finds the exhausted ones, ``--code retries_exhausted`` finds them too.

**Refusal.** A letter whose cause is an input error (``malformed_event``, ``corrupt_image``,
``invalid_operation``, ...) would fail the same way again: replaying it is refused unless
forced (after the cause was fixed, e.g. a raised size limit).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pixelpipe.config import parse_duration
from pixelpipe.errors import INPUT_ERROR_CODES, DeadLetterNotFound
from pixelpipe.schemas import DeadLetter, parse_time
from pixelpipe.schemas.replay import ReplayRecord, Target, letter_key

__all__ = [
    "REPLAYS_HEADER",
    "DeadLetterNotFound",
    "LetterFilter",
    "ReplayRecord",
    "Status",
    "StoredLetter",
    "Target",
    "cause_of",
    "collapse",
    "image_id_of",
    "letter_key",
    "parse_when",
    "raw_original",
    "refusal_reason",
    "stats_of",
]

#: header on every replayed record: the upload's replay count (to find it again after a crash)
REPLAYS_HEADER = "pixelpipe-replays"

Status = Literal["pending", "in_doubt", "replayed", "superseded"]


# --------------------------------------------------------------------------- identity


def cause_of(letter: DeadLetter) -> str:
    """The code of the last attempt (what actually went wrong), else the final code."""
    return letter.attempts[-1].code if letter.attempts else letter.error.code


def image_id_of(letter: DeadLetter) -> str | None:
    if letter.image_id:
        return letter.image_id
    value = letter.original.get("image_id")
    return value if isinstance(value, str) and value else None


def raw_original(letter: DeadLetter) -> bytes | None:
    """The bytes of an original that was not JSON (``{"base64": ...}``), else None."""
    if set(letter.original) != {"base64"}:
        return None
    encoded = letter.original["base64"]
    return base64.b64decode(encoded) if isinstance(encoded, str) else b""


def refusal_reason(letter: DeadLetter) -> str | None:
    """Why replaying ``letter`` unchanged would fail the same way (None: it may work now)."""
    cause = cause_of(letter)
    if letter.error.code in INPUT_ERROR_CODES:
        return letter.error.code
    if cause in INPUT_ERROR_CODES:
        return cause
    return None


# --------------------------------------------------------------------------- stored letters


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter as read from its topic, with where it is and what the ledger says."""

    letter: DeadLetter
    partition: int
    offset: int
    #: further copies of the same letter in the topic (at-least-once), collapsed into this one
    duplicates: int = 0
    replay: ReplayRecord | None = None
    #: a later generation of the same event exists (it was replayed and died again)
    superseded: bool = False

    @property
    def key(self) -> str:
        return letter_key(self.letter.event_id, self.letter.replays)

    @property
    def event_id(self) -> str:
        return self.letter.event_id

    @property
    def cause(self) -> str:
        return cause_of(self.letter)

    @property
    def status(self) -> Status:
        if self.replay is not None:
            return "replayed" if self.replay.state == "published" else "in_doubt"
        return "superseded" if self.superseded else "pending"

    def summary(self) -> dict[str, Any]:
        """One JSON line of ``dlq list --json``: the letter's facts, flat, and its status."""
        letter = self.letter
        return {
            "event_id": letter.event_id,
            "image_id": image_id_of(letter),
            "code": letter.error.code,
            "cause": self.cause,
            "processor": letter.error.processor,
            "message": letter.error.message,
            "attempts": len(letter.attempts),
            "first_failed_at": letter.first_failed_at,
            "dead_lettered_at": letter.dead_lettered_at,
            "replays": letter.replays,
            "status": self.status,
            "replayed_at": self.replay.replayed_at if self.replay else None,
            "partition": self.partition,
            "offset": self.offset,
            "duplicates": self.duplicates,
        }


def collapse(
    records: Iterable[tuple[DeadLetter, int, int]], ledger: dict[str, ReplayRecord]
) -> list[StoredLetter]:
    """Letters ``(letter, partition, offset)`` in topic order -> one ``StoredLetter`` per key.

    The first copy of a letter stands for it (its offset, its time); later copies only count
    as ``duplicates``. Each letter gets its ledger record, and ``superseded`` when the same
    event has a letter of a later generation.
    """
    firsts: dict[str, StoredLetter] = {}
    latest_generation: dict[str, int] = {}
    for letter, partition, offset in records:
        key = letter_key(letter.event_id, letter.replays)
        seen = firsts.get(key)
        if seen is not None:
            firsts[key] = replace(seen, duplicates=seen.duplicates + 1)
            continue
        firsts[key] = StoredLetter(letter, partition, offset, replay=ledger.get(key))
        generation = latest_generation.get(letter.event_id, -1)
        latest_generation[letter.event_id] = max(generation, letter.replays)
    return [
        replace(s, superseded=s.letter.replays < latest_generation[s.event_id])
        for s in firsts.values()
    ]


# --------------------------------------------------------------------------- filters


def parse_when(text: str, now: datetime) -> datetime:
    """An ISO-8601 time (naive = UTC), or an age such as ``90s``, ``30m``, ``2h``, ``1d``."""
    text = text.strip()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"not a time or an age: {text!r} (use e.g. 2h, 30m, 1d or 2024-05-01T12:00:00Z)"
        ) from None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters a command acts on; an empty filter matches every letter.

    Values within one field are alternatives (``codes=("a", "b")``: a or b); fields combine
    with *and*. ``codes`` match the final code or the cause (see the module docstring);
    ``since``/``until`` bound ``dead_lettered_at`` (inclusive).
    """

    codes: tuple[str, ...] = ()
    processors: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    statuses: tuple[Status, ...] = ()

    def matches(self, stored: StoredLetter) -> bool:
        letter = stored.letter
        if self.codes and letter.error.code not in self.codes and stored.cause not in self.codes:
            return False
        if self.processors and letter.error.processor not in self.processors:
            return False
        if self.image_ids and image_id_of(letter) not in self.image_ids:
            return False
        if self.event_ids and letter.event_id not in self.event_ids:
            return False
        if self.statuses and stored.status not in self.statuses:
            return False
        if self.since is not None or self.until is not None:
            try:
                when = parse_time(letter.dead_lettered_at)
            except ValueError:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True

    def apply(self, letters: Iterable[StoredLetter], limit: int | None = None) -> list[StoredLetter]:
        out: list[StoredLetter] = []
        for stored in letters:
            if limit is not None and len(out) >= limit:
                break
            if self.matches(stored):
                out.append(stored)
        return out


# --------------------------------------------------------------------------- stats


def _instant(text: str) -> datetime:
    # by time, not by string: "11:00:00.000Z" and "11:00:00Z" are the same instant
    try:
        return parse_time(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def stats_of(letters: Sequence[StoredLetter], *, undecodable: int = 0) -> dict[str, Any]:
    """``dlq stats`` as one object: counts by code, cause, processor and status; time span."""
    times = sorted((s.letter.dead_lettered_at for s in letters), key=_instant)
    by_status = Counter(s.status for s in letters)
    return {
        "total": len(letters),
        "by_code": dict(Counter(s.letter.error.code for s in letters).most_common()),
        "by_cause": dict(Counter(s.cause for s in letters).most_common()),
        "by_processor": dict(
            Counter(s.letter.error.processor or "-" for s in letters).most_common()
        ),
        "by_status": {status: by_status.get(status, 0)
                      for status in ("pending", "in_doubt", "replayed", "superseded")},
        "replayed": by_status.get("replayed", 0),
        "not_replayed": len(letters) - by_status.get("replayed", 0),
        "oldest": times[0] if times else None,
        "newest": times[-1] if times else None,
        "duplicates": sum(s.duplicates for s in letters),
        "undecodable": undecodable,
    }
