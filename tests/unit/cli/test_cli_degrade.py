"""``pixelpipe degrade status|set|auto`` with the control topic replaced by fakes (no broker)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable
from pixelpipe.streams.control import degrade_record, status_row


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, float | None, str]]:
    """Replaces ``send_degrade`` and records (level, for_s, reason)."""
    import pixelpipe.streams.control

    overrides: list[tuple[str | None, float | None, str]] = []

    async def fake_send_degrade(settings: Settings, level: Any, *, for_s: float | None,
                                reason: str) -> dict[str, Any]:
        overrides.append((level, for_s, reason))
        return degrade_record(level, until=None if for_s is None else 1000.0 + for_s,
                              reason=reason, by="op@host")

    monkeypatch.setattr(pixelpipe.streams.control, "send_degrade", fake_send_degrade)
    return overrides


def fake_status(monkeypatch: pytest.MonkeyPatch, record: dict[str, Any] | None,
                now: float) -> None:
    import pixelpipe.streams.control

    async def fake_degrade_status(settings: Settings) -> dict[str, Any]:
        return status_row(record, now)

    monkeypatch.setattr(pixelpipe.streams.control, "degrade_status", fake_degrade_status)


def test_set_sends_the_level_and_confirms_in_words(
    runner: CliRunner, sent: list[tuple[str | None, float | None, str]]
) -> None:
    result = runner.invoke(main, ["degrade", "set", "basic", "--for", "10m",
                                  "--reason", "burst"])
    assert result.exit_code == 0, result.output
    assert sent == [("basic", 600.0, "burst")]
    assert result.stdout == ""
    assert result.stderr.startswith("pixelpipe: every worker now serves at basic (")
    assert "for 10m, then auto" in result.stderr


def test_set_without_for_holds_until_auto(
    runner: CliRunner, sent: list[tuple[str | None, float | None, str]]
) -> None:
    result = runner.invoke(main, ["degrade", "set", "emergency", "--json"])
    assert result.exit_code == 0, result.output
    assert sent == [("emergency", None, "")]
    body = orjson.loads(result.stdout)
    assert body["level"] == "emergency" and body["until"] is None
    assert "until 'pixelpipe degrade auto'" in result.stderr


def test_auto_clears(runner: CliRunner, sent: list[tuple[str | None, float | None, str]]) -> None:
    result = runner.invoke(main, ["degrade", "auto"])
    assert result.exit_code == 0, result.output
    assert sent == [(None, None, "")]
    assert "cleared the degradation override" in result.stderr


@pytest.mark.parametrize("args", [["set", "degraded"], ["set", "basic", "--for", "10x"],
                                  ["set", "basic", "--for", "0s"], ["set"]])
def test_a_bad_level_or_duration_is_a_usage_error(
    runner: CliRunner, sent: list[tuple[str | None, float | None, str]], args: list[str]
) -> None:
    result = runner.invoke(main, ["degrade", *args])
    assert result.exit_code == 2, result.output
    assert sent == []


def test_a_broker_failure_is_one_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelpipe.streams.control

    async def down(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise BrokerUnavailable("cannot reach Kafka at 127.0.0.1:1 (KafkaConnectionError)")

    monkeypatch.setattr(pixelpipe.streams.control, "send_degrade", down)
    result = runner.invoke(main, ["degrade", "set", "basic"])
    assert result.exit_code == 1
    assert result.stderr == ("pixelpipe: error: cannot reach Kafka at 127.0.0.1:1 "
                             "(KafkaConnectionError)\n")


def test_status_of_an_override(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    record = degrade_record("basic", until=1000.0 + 3600, reason="burst", by="op@host",
                            at="2026-01-01T00:00:00.000Z")
    fake_status(monkeypatch, record, now=1000.0)
    result = runner.invoke(main, ["degrade", "status"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("basic: every worker, until 1970-01-01T01:16:40Z (1h left)")
    assert "op@host" in result.stdout and result.stdout.rstrip().endswith(": burst")
    as_json = orjson.loads(runner.invoke(main, ["degrade", "status", "--json"]).stdout)
    assert as_json["level"] == "basic" and as_json["remaining_s"] == 3600.0
    assert as_json["reason"] == "burst" and as_json["by"] == "op@host"


@pytest.mark.parametrize(("record", "words"), [
    (None, "auto: no override"),
    (degrade_record(None, until=None, by="op@host"), "(cleared by op@host"),
    (degrade_record("basic", until=10.0, by="op@host"), "the override basic by op@host expired"),
])
def test_status_when_auto(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                          record: dict[str, Any] | None, words: str) -> None:
    fake_status(monkeypatch, record, now=1000.0)
    result = runner.invoke(main, ["degrade", "status"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("auto: no override") and words in result.stdout
    assert orjson.loads(runner.invoke(main, ["degrade", "status", "--json"]).stdout)[
        "level"] == "auto"
