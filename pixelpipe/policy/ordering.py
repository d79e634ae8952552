"""Acknowledge events in offset order per partition, however their processing interleaves.

faust commits the last *contiguous* acked offset + 1, but when a head offset is unacked and
later ones are acked, the next commit can jump over the head (faust-streaming issue 606, still
in 0.15.3). Several uploads of one partition are processed at once here, and finish in any
order. So an event is handed back for acking only when it and every event read before it from
the same partition are done: acks reach faust strictly in offset order, and a commit can never
pass an event whose outcome is not yet delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

E = TypeVar("E")
P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class _Slot(Generic[E]):
    item: E
    done: bool = False


@dataclass(slots=True)
class InOrderAcks(Generic[E]):
    """Track in-flight items per partition; release them in arrival order once done."""

    _queues: dict[Hashable, deque[_Slot[E]]] = field(default_factory=dict)
    _slots: dict[int, _Slot[E]] = field(default_factory=dict)

    def track(self, partition: Hashable, item: E) -> None:
        """Register ``item`` as read from ``partition``, after everything tracked before it."""
        slot = _Slot(item)
        self._queues.setdefault(partition, deque()).append(slot)
        self._slots[id(item)] = slot

    def complete(self, partition: Hashable, item: E) -> list[E] | None:
        """Mark ``item`` done; return the items that may now be acked, in order, or None when
        ``item`` is not tracked (its partition was forgotten after a revoke)."""
        slot = self._slots.pop(id(item), None)
        if slot is None:
            return None
        slot.done = True
        queue = self._queues[partition]
        ready: list[E] = []
        while queue and queue[0].done:
            ready.append(queue.popleft().item)
        if not queue:
            del self._queues[partition]
        return ready

    def forget(self, partitions: set[Hashable] | None = None) -> None:
        """Drop partitions (after a revoke: their events are redelivered to the new owner)."""
        for partition in list(self._queues) if partitions is None else partitions:
            for slot in self._queues.pop(partition, ()):
                self._slots.pop(id(slot.item), None)

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def pending(self, partition: Hashable) -> int:
        return len(self._queues.get(partition, ()))


@dataclass(frozen=True, slots=True)
class Ticket(Generic[P]):
    """One record handed out for processing: its partition, offset and the partition's epoch.

    The epoch changes whenever this worker loses (or resets) the partition, so a ticket from
    before that can never move the partition's commit point.
    """

    partition: P
    offset: int
    epoch: int


@dataclass(slots=True)
class _Entry:
    offset: int
    handed_at: float
    started_at: float | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Stall(Generic[P]):
    """The head of a partition that has waited too long: a hole the commit would wait on."""

    partition: P
    offset: int
    reason: str  # "not_started" (the hand-off never reached the agent) or "not_finished"
    waited_s: float


@dataclass(slots=True)
class _Partition:
    epoch: int
    entries: deque[_Entry] = field(default_factory=deque)
    by_offset: dict[int, _Entry] = field(default_factory=dict)
    committed: int | None = None  # the offset last committed (next to read), if any


@dataclass(slots=True)
class OffsetLedger(Generic[P]):
    """Which offsets of each owned partition are settled, and so how far a commit may go.

    The one rule: the commit point of a partition is the offset after the longest prefix of
    tracked records that are all ``done`` (their outcome acknowledged by Kafka). Records are
    tracked in the order the consumer returned them; gaps between offsets (transaction markers,
    compaction) are fine because only tracked records count.

    Pure and clock-free (callers pass ``now``), so every rule is unit-tested without a broker.
    """

    _parts: dict[P, _Partition] = field(default_factory=dict)
    _epochs: dict[P, int] = field(default_factory=dict)

    # ------------------------------------------------------------ ownership

    def assign(self, partitions: set[P]) -> None:
        """Start owning ``partitions`` (a fresh epoch: nothing of an earlier ownership counts)."""
        for tp in partitions:
            self._parts[tp] = _Partition(epoch=self._next_epoch(tp))

    def revoke(self, partitions: set[P]) -> list[int]:
        """Stop owning ``partitions``; return the offsets dropped unsettled (redone elsewhere)."""
        dropped: list[int] = []
        for tp in partitions:
            part = self._parts.pop(tp, None)
            if part is not None:
                dropped += [e.offset for e in part.entries if not e.done]
            self._next_epoch(tp)
        return dropped

    def reset(self, partition: P) -> int | None:
        """Forget everything tracked of ``partition`` (before re-seeking it); return the offset
        to seek to, the unsettled head, or None when nothing was tracked."""
        part = self._parts.get(partition)
        if part is None:
            return None
        head = part.entries[0].offset if part.entries else None
        self._parts[partition] = _Partition(epoch=self._next_epoch(partition),
                                            committed=part.committed)
        return head

    def owns(self, partition: P) -> bool:
        return partition in self._parts

    @property
    def partitions(self) -> set[P]:
        return set(self._parts)

    # ------------------------------------------------------------ records

    def track(self, partition: P, offset: int, now: float) -> Ticket[P] | None:
        """Register a record returned by the consumer; None if the partition is not owned
        (a record fetched across a revoke: its new owner reads it again) or already tracked."""
        part = self._parts.get(partition)
        if part is None or offset in part.by_offset:
            return None
        if part.entries and offset < part.entries[-1].offset:
            return None  # older than what is tracked: only a re-seek may go back (reset first)
        if part.committed is not None and offset < part.committed:
            return None  # settled and committed already
        entry = _Entry(offset=offset, handed_at=now)
        part.entries.append(entry)
        part.by_offset[offset] = entry
        return Ticket(partition, offset, part.epoch)

    def is_current(self, ticket: Ticket[P]) -> bool:
        part = self._parts.get(ticket.partition)
        return part is not None and part.epoch == ticket.epoch and ticket.offset in part.by_offset

    def start(self, ticket: Ticket[P], now: float) -> bool:
        """The agent picked the record up; False if the ticket is stale (do not process)."""
        if not self.is_current(ticket):
            return False
        self._parts[ticket.partition].by_offset[ticket.offset].started_at = now
        return True

    def finish(self, ticket: Ticket[P]) -> bool:
        """The record's outcome is acknowledged by Kafka; False if the ticket was stale."""
        if not self.is_current(ticket):
            return False
        part = self._parts[ticket.partition]
        part.by_offset[ticket.offset].done = True
        return True

    # ------------------------------------------------------------ commits

    def committable(self) -> dict[P, int]:
        """Per owned partition whose commit point moved: the offset to commit (next to read)."""
        out: dict[P, int] = {}
        for tp, part in self._parts.items():
            last: int | None = None
            for entry in part.entries:
                if not entry.done:
                    break
                last = entry.offset
            if last is not None and (part.committed is None or last + 1 > part.committed):
                out[tp] = last + 1
        return out

    def committed(self, offsets: dict[P, int]) -> None:
        """``offsets`` (from ``committable``) are committed: release the settled records below
        them, so memory stays bounded by what is in flight. A failed commit just isn't
        reported here, and the next ``committable`` offers the same (or a later) point."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is None:
                continue
            while part.entries and part.entries[0].done and part.entries[0].offset < offset:
                del part.by_offset[part.entries.popleft().offset]
            part.committed = offset if part.committed is None else max(part.committed, offset)

    # ------------------------------------------------------------ health

    def in_flight(self, partitions: set[P] | None = None) -> int:
        """Tracked records not yet done (of ``partitions``, or of all)."""
        return sum(
            sum(1 for e in part.entries if not e.done)
            for tp, part in self._parts.items() if partitions is None or tp in partitions
        )

    def stalls(self, now: float, *, start_within_s: float, finish_within_s: float) -> list[Stall[P]]:
        """Heads that will never let the commit move on their own: handed out but not picked
        up within ``start_within_s``, or picked up but not done within ``finish_within_s``."""
        found: list[Stall[P]] = []
        for tp, part in self._parts.items():
            head = next((e for e in part.entries if not e.done), None)
            if head is None:
                continue
            if head.started_at is None and now - head.handed_at > start_within_s:
                found.append(Stall(tp, head.offset, "not_started", now - head.handed_at))
            elif head.started_at is not None and now - head.started_at > finish_within_s:
                found.append(Stall(tp, head.offset, "not_finished", now - head.started_at))
        return found

    def _next_epoch(self, partition: P) -> int:
        epoch = self._epochs.get(partition, 0) + 1
        self._epochs[partition] = epoch
        return epoch
