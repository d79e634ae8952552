"""Every record on every topic has a JSON Schema file, and what the code writes matches it.

The records are made by the code paths that write them (no hand-written dicts): the outcome
telemetry by ``TelemetryReporter`` sending to a fake topic, the breaker state by
``policy.breaker.status_record`` after real transitions, the breaker command by
``streams.breaker_client.command_record`` (what ``pixelpipe breaker open`` sends), the
degradation override by ``streams.control.degrade_record`` (what ``pixelpipe degrade`` sends),
and the replay ledger by ``ReplayRecord.encode`` in both of its states. Each schema also refuses one
record that breaks its contract. No broker.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import timedelta
from importlib import resources
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, ValidationError

import pixelpipe.agents.breaker as breaker_agent
from pixelpipe.agents.telemetry import TelemetryReporter
from pixelpipe.config import BreakerConfig
from pixelpipe.policy.breaker import COMMANDS, Breaker, command, record, status_record
from pixelpipe.policy.degradation import LEVELS
from pixelpipe.schemas import (
    BREAKER_SCHEMA,
    COMMAND_SCHEMA,
    CONTROL_SCHEMA,
    OUTCOME_SCHEMA,
    REPLAY_SCHEMA,
    parse_time,
    utc_now_iso,
)
from pixelpipe.schemas.names import ALL_SCHEMAS, schema_file
from pixelpipe.schemas.replay import ReplayRecord, decode_replay_record
from pixelpipe.streams.breaker_client import command_record
from pixelpipe.streams.control import degrade_record

CONFIG = BreakerConfig(window_s=10, min_calls=4, failure_rate=0.5, slow_rate=0.8,
                       slow_call_s=1.0, wait_s=5, max_wait_s=60, half_open_calls=2)


def schema_of(name: str) -> dict[str, Any]:
    """The schema file of record ``name``, read as package data (as from the wheel)."""
    text = resources.files("pixelpipe.schemas").joinpath("json", schema_file(name)).read_text()
    return dict(json.loads(text))


def validator(name: str) -> Draft202012Validator:
    schema = schema_of(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(name: str, body: dict[str, Any]) -> None:
    """Validate ``body`` against its schema, and its ``date-time`` fields as the wire's one
    time format (jsonschema checks formats only with optional packages this venv lacks)."""
    schema = schema_of(name)
    validator(name).validate(body)
    for field, spec in schema["properties"].items():
        if spec.get("format") == "date-time":
            assert body[field].endswith("Z"), (field, body[field])
            assert parse_time(body[field]).utcoffset() == timedelta(0)


def wire(value: bytes | None) -> dict[str, Any]:
    """What a reader gets from Kafka: the bytes the writer sent, parsed."""
    assert value is not None
    data = orjson.loads(value)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_record_name_has_its_schema_file(name: str) -> None:
    schema = schema_of(name)
    assert schema["$id"] == name
    assert schema["properties"]["schema"] == {"const": name}
    assert "schema" in schema["required"]


# --------------------------------------------------------------------------- outcome


class FakeTopic:
    """A faust topic that records what it was sent (``TelemetryReporter`` needs only send)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))


async def reported_outcomes() -> list[tuple[bytes, dict[str, Any]]]:
    topic = FakeTopic()
    reporter = TelemetryReporter(topic, slow_call_s=1.0)
    await reporter.report("blur", ok=False, code="internal_error", duration_ms=12.3456)
    await reporter.report("decode", ok=False, code="timeout", duration_ms=1500.0)
    for ms in (3.0, 1200.0, 40.0):
        await reporter.report("resize", ok=True, duration_ms=ms)
    await reporter.report("webp", ok=True, duration_ms=0.5)
    await reporter.flush()
    return [(key, wire(value)) for key, value in topic.sent]


async def test_the_outcomes_the_reporter_sends_match_their_schema() -> None:
    outcomes = await reported_outcomes()
    for key, body in outcomes:
        check(OUTCOME_SCHEMA, body)
        assert key == body["processor"].encode()
    by_processor = {body["processor"]: body for _, body in outcomes}
    assert set(by_processor) == {"blur", "decode", "resize", "webp"}
    assert by_processor["resize"]["calls"] == 3 and by_processor["resize"]["slow"] == 1
    assert by_processor["decode"]["slow"] == 1 and by_processor["blur"]["code"] == "internal_error"


async def test_the_breaker_agent_counts_what_the_reporter_sends() -> None:
    """The schema is the reader's contract too: the agent's ``record_outcomes`` takes them."""
    breaker = Breaker("resize")
    for _, body in await reported_outcomes():
        if body["processor"] == "resize":
            breaker_agent.record_outcomes(breaker, body, now=100.0, config=CONFIG)
    assert breaker.totals(100.0, CONFIG) == (3, 0, 1)


async def test_the_outcome_schema_refuses_a_failure_without_a_code() -> None:
    (_, body), *_ = await reported_outcomes()
    assert body["ok"] is False
    with pytest.raises(ValidationError):
        validator(OUTCOME_SCHEMA).validate({**body, "code": None})


# --------------------------------------------------------------------------- breaker state


def breaker_records() -> list[dict[str, Any]]:
    """Status records of one breaker through closed, open, half-open, closed and overrides,
    as the breaker agent publishes them, round-tripped through the wire encoding."""
    rng = random.Random(7)
    b = Breaker("blur")
    records = [status_record(b, 0.0, CONFIG)]  # never called: no rates yet
    now = 100.0
    for i in range(4):
        transition = record(b, ok=i == 0, code="internal_error", duration_s=0.2, now=now,
                            config=CONFIG, rng=rng)
    assert transition is not None and transition.new == "open"
    records.append(status_record(b, now, CONFIG))
    assert b.next_trial_at is not None
    now = b.next_trial_at + 0.1
    for _ in range(CONFIG.half_open_calls):
        transition = record(b, ok=True, code=None, duration_s=0.1, now=now, config=CONFIG)
    assert transition is not None and transition.new == "closed"
    records.append(status_record(b, now, CONFIG))
    for cmd in COMMANDS:
        command(b, cmd, now)
        records.append(status_record(b, now, CONFIG))
    return [wire(orjson.dumps(r)) for r in records]


def test_the_breaker_records_the_agent_publishes_match_their_schema() -> None:
    records = breaker_records()
    for body in records:
        check(BREAKER_SCHEMA, body)
    assert {r["state"] for r in records} == {"closed", "open", "forced_open", "disabled"}


def test_the_breaker_schema_refuses_an_unknown_state() -> None:
    body = breaker_records()[1]
    with pytest.raises(ValidationError):
        validator(BREAKER_SCHEMA).validate({**body, "state": "ajar"})


# --------------------------------------------------------------------------- breaker command


@pytest.mark.parametrize("cmd", COMMANDS)
def test_the_commands_the_cli_sends_match_their_schema(cmd: Any) -> None:
    message = command_record("webp", cmd, by="operator")
    check(COMMAND_SCHEMA, wire(orjson.dumps(message)))
    assert message["at"] <= utc_now_iso()


def test_the_command_schema_refuses_an_unknown_command() -> None:
    message = wire(orjson.dumps(command_record("webp", "open", by="operator")))
    with pytest.raises(ValidationError):
        validator(COMMAND_SCHEMA).validate({**message, "command": "explode"})
    with pytest.raises(ValueError, match="unknown breaker command"):
        command_record("webp", "explode", by="operator")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- replay ledger


def replay_records() -> list[ReplayRecord]:
    """The two records the replayer writes for one letter: the intent, then where it landed."""
    intent = ReplayRecord(
        event_id="e-1", letter_replays=0, state="publishing", replays=1, times=1,
        to="uploads", topic="pixelpipe.uploads", run_id="run-1", replayed_at=utc_now_iso(),
        code="internal_error", dead_lettered_at="2026-11-28T00:00:00.000Z",
    )
    return [intent, dataclasses.replace(intent, state="published", partition=3, offset=41)]


def test_the_replay_ledger_records_match_their_schema_and_decode_back() -> None:
    for ledger in replay_records():
        raw = ledger.encode()
        check(REPLAY_SCHEMA, wire(raw))
        assert decode_replay_record(raw) == ledger


def test_the_replay_schema_refuses_a_published_record_without_its_offset() -> None:
    published = wire(replay_records()[1].encode())
    with pytest.raises(ValidationError):
        validator(REPLAY_SCHEMA).validate({**published, "offset": None})


# --------------------------------------------------------------------------- control


@pytest.mark.parametrize("level", [*LEVELS, None])
@pytest.mark.parametrize("until", [None, 1_900_000_000.5])
def test_the_degrade_overrides_the_cli_sends_match_their_schema(
    level: Any, until: float | None
) -> None:
    if level is None and until is not None:
        with pytest.raises(ValueError, match="auto has no end time"):
            degrade_record(level, until=until)
        return
    message = degrade_record(level, until=until, reason="load test")
    body = wire(orjson.dumps(message))
    check(CONTROL_SCHEMA, body)
    assert body["kind"] == "degrade" and body["level"] == level and body["until"] == until
    assert "@" in body["by"] and body["at"] <= utc_now_iso()


def test_the_control_schema_refuses_an_unknown_level() -> None:
    message = wire(orjson.dumps(degrade_record("basic", until=None, by="op@host")))
    with pytest.raises(ValidationError):
        validator(CONTROL_SCHEMA).validate({**message, "level": "degraded"})
    with pytest.raises(ValidationError):
        validator(CONTROL_SCHEMA).validate({**message, "until": "tomorrow"})
    with pytest.raises(ValueError, match="unknown degradation level"):
        degrade_record("degraded", until=None)  # type: ignore[arg-type]
