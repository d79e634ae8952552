"""Which degraded outcomes ``pixelpipe backfill`` asks for again, the upload that asks, and
whether the cluster is healthy enough to serve it. Pure: no Kafka, no clock.

**Selection.** From the processed events read (``pixelpipe.processed/1``, each with where it
was read), the *latest* one of each ``event_id`` decides:

- it has a rendition marked ``degraded`` (not None) at least as bad as the floor (``--level``;
  levels best first: ``full``, ``reduced_quality``, ``basic``, ``cached_only``, ``emergency``;
  no floor: any mark) -> selected, identified by where it was read: ``supersedes =
  "<partition>@<offset>"`` on the processed topic;
- its marks are all milder than the floor -> skipped (``milder``);
- no rendition is degraded -> nothing to do; when an earlier event of the same id was degraded,
  it was already upgraded (by an earlier backfill, or a redelivery served at full) and is
  counted as ``already_upgraded``.

"Latest" is offset order within a partition (what every consumer sees; an event's records share
a partition, as they share the image id that keys them); across partitions (the topic was
repartitioned), the later ``completed_at``.

**The upload.** A backfill re-publishes the event's original upload (the processed event does
not carry the requested renditions) with the same ``event_id`` and ``image_id`` (so the same
partition and key), ``priority: "low"`` (a still-stressed cluster defers it first), the new
``supersedes`` field, and a fresh ``submitted_at`` with no ``deadline``: the original request
was answered; the upgrade is a new one, and the old request's age must not dead-letter it as
``deadline_exceeded`` on its first transient error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from pixelpipe.policy.degradation import LEVELS, Level
from pixelpipe.schemas import UPLOAD_SCHEMA, ProcessedEvent, parse_time
from pixelpipe.schemas import headers as h

#: the priority a backfill upload carries: deferred first while a cluster is under stress
BACKFILL_PRIORITY = "low"
_RANK: dict[str, int] = {name: i for i, name in enumerate(LEVELS)}


def mark_rank(mark: str) -> int:
    """How bad a rendition mark is: its level's rank (``reduced_quality`` 1 ... ``emergency``
    4); a mark this version does not know ranks worse than every level (re-render it)."""
    return _RANK.get(mark, len(LEVELS))


def worst_mark(event: ProcessedEvent) -> str | None:
    """The worst ``degraded`` mark among the event's renditions; None when none is degraded."""
    marks = [r.degraded for r in event.renditions if r.degraded is not None]
    return max(marks, key=mark_rank) if marks else None


@dataclass(frozen=True, slots=True)
class SeenProcessed:
    """A processed event and where it was read on the processed topic."""

    event: ProcessedEvent
    partition: int
    offset: int

    @property
    def ref(self) -> str:
        """``<partition>@<offset>``: what a backfill of it puts in ``supersedes``."""
        return f"{self.partition}@{self.offset}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A degraded outcome to upgrade: the latest processed event of its ``event_id``."""

    seen: SeenProcessed
    #: the worst rendition mark (``reduced_quality`` ... ``emergency``)
    worst: str

    @property
    def event_id(self) -> str:
        return self.seen.event.event_id

    @property
    def image_id(self) -> str:
        return self.seen.event.image_id

    @property
    def level(self) -> str:
        return self.seen.event.level

    @property
    def completed_at(self) -> str:
        return self.seen.event.completed_at

    @property
    def supersedes(self) -> str:
        return self.seen.ref

    def summary(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "image_id": self.image_id, "level": self.level,
                "worst": self.worst, "completed_at": self.completed_at,
                "supersedes": self.supersedes}


@dataclass(frozen=True, slots=True)
class Selection:
    """What ``select`` chose: ``candidates`` oldest first, and what it left out, by reason."""

    candidates: tuple[Candidate, ...]
    #: ``already_upgraded``, ``milder`` (than the floor), ``over_limit``
    skipped: dict[str, int] = field(default_factory=dict)
    #: processed records read, and distinct event ids among them
    read: int = 0
    events: int = 0


def _instant(event: ProcessedEvent) -> datetime | None:
    try:
        return parse_time(event.completed_at)
    except ValueError:
        return None


def is_later(new: SeenProcessed, old: SeenProcessed) -> bool:
    """Whether ``new`` is a later outcome of its event than ``old`` (see the module doc)."""
    if new.partition == old.partition:
        return new.offset > old.offset
    a, b = _instant(new.event), _instant(old.event)
    if a is None or b is None:
        return True  # read later: the best we know
    return a >= b


def select(
    records: Iterable[SeenProcessed], *, level: Level | None = None, limit: int | None = None,
) -> Selection:
    """The latest processed event of each ``event_id`` that is degraded at least as badly as
    ``level`` (None: any degraded mark), oldest ``completed_at`` first, at most ``limit``."""
    floor = 0 if level is None else LEVELS.index(level)
    latest: dict[str, SeenProcessed] = {}
    was_degraded: set[str] = set()
    read = 0
    for seen in records:
        read += 1
        event_id = seen.event.event_id
        if worst_mark(seen.event) is not None:
            was_degraded.add(event_id)
        current = latest.get(event_id)
        if current is None or is_later(seen, current):
            latest[event_id] = seen
    skipped: Counter[str] = Counter()
    chosen: list[Candidate] = []
    for event_id, seen in latest.items():
        worst = worst_mark(seen.event)
        if worst is None:
            if event_id in was_degraded:
                skipped["already_upgraded"] += 1
            continue
        if mark_rank(worst) < floor:
            skipped["milder"] += 1
            continue
        chosen.append(Candidate(seen=seen, worst=worst))
    chosen.sort(key=lambda c: (c.completed_at, c.seen.partition, c.seen.offset))
    if limit is not None and len(chosen) > limit:
        skipped["over_limit"] += len(chosen) - limit
        chosen = chosen[:limit]
    return Selection(candidates=tuple(chosen), skipped=dict(skipped), read=read,
                     events=len(latest))


# --------------------------------------------------------------------------- the upload


@dataclass(frozen=True, slots=True)
class BackfillMessage:
    """The upload record that asks for a candidate again: key, value and headers."""

    event_id: str
    key: bytes
    value: bytes
    headers: h.Headers


def backfill_message(original: Mapping[str, Any], supersedes: str, now_iso: str) -> BackfillMessage:
    """The original upload (a decoded ``pixelpipe.upload/1`` object, exactly as it was on the
    uploads topic) asked again: same ``event_id``, ``image_id`` and every other field (unknown
    ones too), with ``priority: low``, ``supersedes``, ``submitted_at = now_iso`` and no
    ``deadline`` (see the module doc)."""
    body = dict(original, priority=BACKFILL_PRIORITY, supersedes=supersedes,
                submitted_at=now_iso)
    body.pop("deadline", None)
    event_id = str(body["event_id"])
    return BackfillMessage(
        event_id=event_id,
        key=str(body["image_id"]).encode(),
        value=orjson.dumps(body),
        headers=h.make_headers(event_id=event_id, schema=UPLOAD_SCHEMA),
    )


# --------------------------------------------------------------------------- health gate


def unhealthy(status: Mapping[str, Any]) -> list[str]:
    """What keeps the cluster from serving a backfill at full quality, read from a
    ``pixelpipe status --json`` object: a degradation override in force, a live worker not at
    ``full``, or no live worker at all (the uploads would wait for one whose level nobody
    knows). [] when healthy. Missing workers (no recent heartbeat) are not counted."""
    problems: list[str] = []
    override = (status.get("level") or {}).get("override")
    if override:
        until = override.get("until")
        by = override.get("by")
        words = f"degradation override {override.get('level')} in force"
        details = [f"set by {by}" if by else "", f"until {until}" if until else
                   "until 'pixelpipe degrade auto'"]
        problems.append(f"{words} ({', '.join(d for d in details if d)})")
    live = [w for w in status.get("workers") or () if not w.get("missing")]
    if not live:
        problems.append("no live worker")
    for worker in live:
        worker_level = worker.get("level", "full")
        if worker_level != "full":
            forced = " (forced)" if worker.get("forced") else ""
            problems.append(f"worker {worker.get('id', '?')} at {worker_level}{forced}")
    return problems


def refusal(status: Mapping[str, Any], count: int) -> str | None:
    """The one line that refuses a backfill of ``count`` uploads on ``status``; None: go."""
    problems = unhealthy(status)
    if not problems:
        return None
    return (f"refusing to backfill {count} upload(s): the cluster is not healthy: "
            f"{'; '.join(problems)} (wait until every worker is at full, or pass --force)")

