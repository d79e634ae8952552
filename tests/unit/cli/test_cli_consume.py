"""Issue 12 point 6: ``pixelpipe consume`` with no flags said nothing and printed nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main


@dataclass(frozen=True)
class FakeEvent:
    event_id: str
    schema: str = "pixelpipe.processed/1"


class FakeConsumer:
    """Stands in for ``streams.client.ProcessedConsumer``: records how it was opened."""

    opened: ClassVar[list[dict[str, Any]]] = []
    events: ClassVar[list[FakeEvent]] = []

    def __init__(self, settings: Any, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.topic_prefix = settings.topic_prefix

    async def __aenter__(self) -> FakeConsumer:
        FakeConsumer.opened.append(self.kwargs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[FakeEvent]:
        for event in self.events[: self.kwargs.get("limit")]:
            yield event


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    from dataclasses import asdict

    import pixelpipe.schemas
    import pixelpipe.streams.client

    FakeConsumer.opened = []
    FakeConsumer.events = [FakeEvent("e1"), FakeEvent("e2")]
    monkeypatch.setattr(pixelpipe.streams.client, "ProcessedConsumer", FakeConsumer)
    monkeypatch.setattr(pixelpipe.schemas, "to_dict", asdict)
    return FakeConsumer


def test_consume_with_no_flags_waits_for_new_events_and_says_so(
    runner: CliRunner, consumer: type[FakeConsumer]
) -> None:
    result = runner.invoke(main, ["consume"])
    assert result.exit_code == 0, result.output
    # it follows: starting at the end, stopping there at once could never print anything
    assert consumer.opened == [{"group": None, "from_beginning": False, "follow": True,
                                "limit": None}]
    first = result.stderr.splitlines()[0]
    assert "waiting for new processed events on pixelpipe.processed" in first
    assert "--from-beginning" in first and "Ctrl-C" in first
    assert [orjson.loads(line)["event_id"] for line in result.stdout.splitlines()] == ["e1", "e2"]


def test_consume_names_its_topic_prefix(runner: CliRunner, consumer: type[FakeConsumer]) -> None:
    result = runner.invoke(main, ["consume", "-n", "1"], env={"PIXELPIPE_TOPIC_PREFIX": "demo7"})
    assert "on demo7.processed, at most 1" in result.stderr
    assert result.stderr.splitlines()[-1] == "pixelpipe: 1 processed event(s)"


def test_from_beginning_reads_to_the_end_and_counts(
    runner: CliRunner, consumer: type[FakeConsumer]
) -> None:
    result = runner.invoke(main, ["consume", "--from-beginning"])
    assert result.exit_code == 0, result.output
    assert consumer.opened[0]["follow"] is False
    plan, count = result.stderr.splitlines()
    assert "from the beginning" in plan and "--follow keeps waiting" in plan
    assert count == "pixelpipe: 2 processed event(s)"


def test_nothing_to_read_still_says_so(runner: CliRunner, consumer: type[FakeConsumer]) -> None:
    consumer.events = []
    result = runner.invoke(main, ["consume", "--group", "g1"])
    assert result.exit_code == 0 and result.stdout == ""
    assert consumer.opened[0]["follow"] is False  # a group resumes, then stops at the end
    assert "group g1's committed offset" in result.stderr
    assert "0 processed event(s)" in result.stderr


def test_help_explains_where_consume_starts_and_stops(runner: CliRunner) -> None:
    text = runner.invoke(main, ["consume", "--help"]).output
    assert "(no flags)        waits for new events" in text
    assert "--from-beginning  every event so far" in text
