"""Which dead letters a replay run takes, and the record that replays each one. Pure.

A letter whose cause is an input error (``malformed_event``, ``corrupt_image``,
``invalid_operation``, ...) would fail the same way again: replaying it is refused unless
forced (after the cause was fixed, e.g. a raised size limit).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from pixelpipe.errors import ReplayRefused
from pixelpipe.policy.deadletters import (
    REPLAYS_HEADER,
    StoredLetter,
    Target,
    image_id_of,
    raw_original,
    refusal_reason,
)
from pixelpipe.schemas import RETRY_SCHEMA, DeadLetter, RetryEnvelope, encode, utc_now_iso
from pixelpipe.schemas import headers as h


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What one ``dlq replay`` run will do: ``letters`` in topic order, none refused."""

    letters: tuple[StoredLetter, ...]
    to: Target
    #: letters of the selection left out, by reason (already replayed, superseded)
    skipped: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def plan_replay(
    selected: Sequence[StoredLetter], *, to: Target = "uploads", again: bool = False,
    force: bool = False, limit: int | None = None,
) -> ReplayPlan:
    """Choose the letters to replay among ``selected`` (already filtered), or refuse.

    - ``pending`` and ``in_doubt`` letters are replayed; ``replayed`` ones only with ``again``;
      ``superseded`` ones never (the event's newest letter is the one to act on);
    - a letter whose cause is an input error is refused unless ``force``: the whole run is
      refused (``ReplayRefused``) before anything is published, naming the codes;
    - a letter whose original was not JSON can only go back to the uploads topic, as it was.
    """
    chosen: list[StoredLetter] = []
    skipped: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for stored in selected:
        status = stored.status
        if status == "superseded":
            skipped["superseded"] += 1
            continue
        if status == "replayed" and not again:
            skipped["already_replayed"] += 1
            continue
        reason = refusal_reason(stored.letter)
        if reason is not None and not force:
            refused[reason] += 1
        if to == "retry" and raw_original(stored.letter) is not None:
            raise ReplayRefused(
                f"dead letter {stored.event_id} holds an original that is not JSON; it can only "
                "be replayed --to uploads"
            )
        chosen.append(stored)
    if refused:
        codes = ", ".join(f"{code} ({n})" for code, n in refused.most_common())
        raise ReplayRefused(
            f"refusing to replay {sum(refused.values())} dead letter(s) caused by input errors: "
            f"{codes}; the same input would fail the same way. Fix the cause (e.g. raise a "
            "limit) and pass --force, or narrow the selection with --code"
        )
    if limit is not None:
        chosen = chosen[:limit]
    return ReplayPlan(letters=tuple(chosen), to=to, skipped=dict(skipped))


def next_replays(stored: StoredLetter) -> int:
    """The replay count the replayed upload carries: one more than any before it."""
    previous = stored.replay.replays if stored.replay is not None else stored.letter.replays
    return max(stored.letter.replays, previous) + 1


@dataclass(frozen=True, slots=True)
class ReplayMessage:
    """The record that replays a letter: where it goes and its key, value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: h.Headers


def replay_message(
    letter: DeadLetter, replays: int, *, to: Target, uploads_topic: str,
    first_tier: tuple[str, str] | None = None, now_iso: str | None = None,
) -> ReplayMessage:
    """Build the replayed record of ``letter`` carrying ``replays``.

    ``uploads``: the original upload exactly as received, with ``replays`` set (its
    ``event_id``, ``submitted_at`` and every other field kept; an original that was not JSON
    goes back as its raw bytes). ``retry``: a ``pixelpipe.retry/1`` envelope due now on the
    first tier (``first_tier`` = (tier name, topic)) with a fresh attempt history, so the
    replay gets every tier again; the letter keeps the old history.
    """
    extra = [(REPLAYS_HEADER, str(replays).encode())]
    raw = raw_original(letter)
    if raw is not None:
        return ReplayMessage(
            uploads_topic, letter.event_id.encode(), raw,
            h.make_headers(event_id=letter.event_id) + extra,
        )
    original = dict(letter.original, replays=replays)
    key = (image_id_of(letter) or letter.event_id).encode()
    if to == "uploads":
        schema = original.get("schema")
        return ReplayMessage(
            uploads_topic, key, orjson.dumps(original),
            h.make_headers(event_id=letter.event_id,
                           schema=schema if isinstance(schema, str) else None) + extra,
        )
    if first_tier is None:
        raise ReplayRefused("no retry tier is configured (PIXELPIPE_RETRY_TIERS)")
    now = now_iso or utc_now_iso()
    tier, topic = first_tier
    envelope = RetryEnvelope(
        event_id=letter.event_id, original=original, attempts=(), origin=letter.origin,
        first_failed_at=now, due_at=now, tier=tier, image_id=image_id_of(letter),
    )
    return ReplayMessage(
        topic, key, encode(envelope),
        h.make_headers(
            event_id=letter.event_id, schema=RETRY_SCHEMA, attempt=0, due_at=now,
            origin_topic=letter.origin.topic, origin_partition=letter.origin.partition,
            origin_offset=letter.origin.offset,
        ) + extra,
    )
