"""Stand-ins the uploads feed's unit tests share: a hand-off channel that only records."""

from __future__ import annotations

from pixelpipe.agents.uploads_feed import Handoff


class FakeChannel:
    """What the feed needs of ``HandoffChannel``: a reader, and ``put`` (recorded here)."""

    has_reader = True

    def __init__(self) -> None:
        self.handed: list[Handoff] = []

    async def put(self, value: Handoff) -> None:
        self.handed.append(value)
