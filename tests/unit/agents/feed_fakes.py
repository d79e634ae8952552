"""Stand-ins the uploads feed's unit tests share: a record, and a hand-off channel that only
records what it is given."""

from __future__ import annotations

from dataclasses import dataclass

from pixelpipe.agents.uploads_feed import Handoff


@dataclass
class Record:
    """The fields of an aiokafka ``ConsumerRecord`` the feed reads."""

    topic: str
    partition: int
    offset: int
    value: bytes = b"{}"
    timestamp: int = 1_000_000  # ms


class FakeChannel:
    """What the feed needs of ``HandoffChannel``: a reader, and ``put`` (recorded here)."""

    has_reader = True

    def __init__(self) -> None:
        self.handed: list[Handoff] = []

    async def put(self, value: Handoff) -> None:
        self.handed.append(value)
