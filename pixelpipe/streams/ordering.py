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

    def complete(self, partition: Hashable, item: E) -> list[E]:
        """Mark ``item`` done; return the items that may now be acked, in order."""
        slot = self._slots.pop(id(item), None)
        if slot is None:
            raise KeyError(f"item was not tracked: {item!r:.100}")
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
