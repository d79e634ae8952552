"""Issue 12 point 10: ``breaker open bogus`` was accepted, and ``reset`` could not remove it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.cli.breaker import known_processors
from pixelpipe.config import Settings
from pixelpipe.schemas import BREAKER_SCHEMA
from pixelpipe.streams.breaker_view import BreakerView


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replaces ``send_command`` (the outcomes topic) and records (processor, command)."""
    import pixelpipe.streams.breaker_client

    commands: list[tuple[str, str]] = []

    async def fake_send_command(settings: Settings, processor: str, cmd: str) -> dict[str, Any]:
        commands.append((processor, cmd))
        return {"processor": processor, "command": cmd}

    monkeypatch.setattr(pixelpipe.streams.breaker_client, "send_command", fake_send_command)
    return commands


@pytest.fixture
def raw(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes | None, bytes | None]]:
    """Replaces the ``Publisher`` and records what ``send_raw`` sent."""
    import pixelpipe.streams.client

    records: list[tuple[str, bytes | None, bytes | None]] = []

    class FakePublisher:
        def __init__(self, settings: Settings) -> None:
            pass

        async def __aenter__(self) -> FakePublisher:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
            records.append((topic, key, value))
            return 0, 0

    monkeypatch.setattr(pixelpipe.streams.client, "Publisher", FakePublisher)
    return records


def test_the_known_processors_are_the_pipelines() -> None:
    known = known_processors()
    for name in ("decode", "fetch", "store", "pool", "render", "resize", "blur", "watermark",
                 "jpeg", "png", "webp", "avif"):
        assert name in known
    for name in ("format", "strip", "auto-orient", "bogus"):  # not processors of their own
        assert name not in known


def test_an_unknown_processor_is_refused_in_one_line(
    runner: CliRunner, sent: list[tuple[str, str]]
) -> None:
    result = runner.invoke(main, ["breaker", "open", "bogus"])
    assert result.exit_code == 1 and sent == []
    (line,) = result.stderr.splitlines()
    assert line.startswith("pixelpipe: error: unknown processor 'bogus' (known: fetch, decode")
    assert "resize" in line and "avif" in line and "--force" in line


@pytest.mark.parametrize("cmd", ["close", "disable"])
def test_every_override_checks_the_name(
    runner: CliRunner, sent: list[tuple[str, str]], cmd: str
) -> None:
    assert runner.invoke(main, ["breaker", cmd, "resise"]).exit_code == 1
    assert sent == []


def test_force_sends_an_unknown_name(runner: CliRunner, sent: list[tuple[str, str]]) -> None:
    result = runner.invoke(main, ["breaker", "open", "bogus", "--force"])
    assert result.exit_code == 0, result.output
    assert sent == [("bogus", "open")]


def test_an_override_is_confirmed_in_words_not_json(
    runner: CliRunner, sent: list[tuple[str, str]]
) -> None:
    result = runner.invoke(main, ["breaker", "open", "resize"])
    assert result.exit_code == 0, result.output
    assert sent == [("resize", "open")]
    assert result.stdout == ""
    assert result.stderr.startswith("pixelpipe: forced the breaker of resize open on every "
                                    "worker")
    as_json = runner.invoke(main, ["breaker", "close", "avif", "--json"])
    assert orjson.loads(as_json.stdout) == {"processor": "avif", "command": "close"}
    assert "closed the breaker of avif" in as_json.stderr


def test_reset_of_an_unknown_name_removes_its_row(
    runner: CliRunner, sent: list[tuple[str, str]],
    raw: list[tuple[str, bytes | None, bytes | None]],
) -> None:
    result = runner.invoke(main, ["breaker", "reset", "bogus"],
                           env={"PIXELPIPE_TOPIC_PREFIX": "p9"})
    assert result.exit_code == 0, result.output
    # a tombstone on the compacted breaker topic, not a command the agent would turn into a row
    assert raw == [("p9.breaker", b"bogus", None)] and sent == []
    assert "removed the breaker row of 'bogus'" in result.stderr


def test_reset_of_a_known_name_is_a_command(
    runner: CliRunner, sent: list[tuple[str, str]],
    raw: list[tuple[str, bytes | None, bytes | None]],
) -> None:
    assert runner.invoke(main, ["breaker", "reset", "webp"]).exit_code == 0
    assert sent == [("webp", "reset")] and raw == []


def record(processor: str, state: str) -> bytes:
    return orjson.dumps({"schema": BREAKER_SCHEMA, "processor": processor, "state": state,
                         "since": 1.0})


def fold(view: BreakerView, records: list[tuple[bytes | None, bytes | None]]) -> None:
    for key, value in records:
        view.apply(value, key)


def test_the_view_honours_the_tombstone_and_counts_what_it_cannot_read() -> None:
    view = BreakerView(Settings())
    fold(view, [
        (b"bogus", record("bogus", "forced_open")),
        (b"resize", record("resize", "open")),
        (b"bogus", None),
        (None, None),
        (b"junk", b"not json"),
        (b"other", orjson.dumps({"schema": "someone.else/1"})),
    ])
    assert list(view.records) == ["resize"]
    assert view.undecodable == 2
    fold(view, [(b"bogus", record("bogus", "forced_open"))])  # forced again: back
    assert set(view.records) == {"resize", "bogus"}
