"""ControlView.apply/override fed records directly (no broker), and the status row.

What must hold: the latest degrade record wins; an override holds until its ``until`` and is
gone from then on (an override without ``until`` holds until cleared); ``level: null`` is auto;
a tombstone removes the row; records that are not ``pixelpipe.control/1``, or name a level
this version does not know, are counted and ignored (the last good override stays in force).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pixelpipe.config import Settings
from pixelpipe.policy.degradation import Override
from pixelpipe.schemas import CONTROL_SCHEMA
from pixelpipe.streams.control import (
    DEGRADE_KEY,
    ControlView,
    degrade_record,
    override_of,
    status_row,
)


def degrade(level: Any, until: float | None = None, reason: str = "") -> bytes:
    return orjson.dumps(degrade_record(level, until=until, reason=reason, by="op@host",
                                       at="2026-01-01T00:00:00.000Z"))


def view(*values: bytes | None) -> ControlView:
    v = ControlView(Settings())
    for value in values:
        v.apply(value, DEGRADE_KEY)
    return v


def test_no_record_is_auto() -> None:
    assert view().override(0.0) is None
    assert status_row(None, 0.0)["level"] == "auto"


def test_an_override_holds_until_it_expires() -> None:
    v = view(degrade("basic", until=1000.0, reason="incident 42"))
    assert v.override(999.9) == Override("basic", 1000.0, "incident 42")
    assert v.override(1000.0) is None
    assert v.override(5000.0) is None


def test_an_override_without_an_end_holds_until_cleared() -> None:
    v = view(degrade("emergency"))
    assert v.override(1e12) == Override("emergency", None, "")
    v.apply(degrade(None), DEGRADE_KEY)
    assert v.override(0.0) is None
    assert v.records["degrade"]["level"] is None


def test_the_latest_record_wins() -> None:
    v = view(degrade("cached_only", until=100.0), degrade("reduced_quality", until=200.0))
    assert v.override(150.0) == Override("reduced_quality", 200.0, "")
    v.apply(degrade("full"), DEGRADE_KEY)  # pin full: an override too, not auto
    assert v.override(150.0) == Override("full", None, "")


def test_a_tombstone_removes_the_override() -> None:
    v = view(degrade("basic"), None)
    assert v.records == {} and v.override(0.0) is None


@pytest.mark.parametrize("junk", [
    b"not json",
    b"[1, 2]",
    orjson.dumps({"schema": "someone.else/1", "kind": "degrade", "level": "basic"}),
    orjson.dumps({"schema": CONTROL_SCHEMA, "kind": "degrade", "level": "degraded",
                  "until": None}),
    orjson.dumps({"schema": CONTROL_SCHEMA, "kind": "degrade", "level": "basic",
                  "until": "tomorrow"}),
    orjson.dumps({"schema": CONTROL_SCHEMA, "level": "basic"}),
])
def test_what_it_cannot_read_is_counted_and_ignored(junk: bytes) -> None:
    v = view(degrade("basic"), junk)
    assert v.undecodable == 1
    assert v.override(0.0) == Override("basic", None, "")


def test_override_of_is_pure() -> None:
    record = orjson.loads(degrade("basic", until=10.0))
    assert override_of(record, 9.0) == Override("basic", 10.0, "")
    assert override_of(record, 10.0) is None
    assert override_of({**record, "level": None, "until": None}, 0.0) is None


def test_the_status_row() -> None:
    record = orjson.loads(degrade("basic", until=3600.0, reason="burst"))
    row = status_row(record, 0.0)
    assert row == {"level": "basic", "until": "1970-01-01T01:00:00Z", "remaining_s": 3600.0,
                   "reason": "burst", "by": "op@host", "at": "2026-01-01T00:00:00.000Z",
                   "expired": None, "expired_at": None}
    later = status_row(record, 4000.0)
    assert later["level"] == "auto" and later["until"] is None
    assert later["expired"] == "basic" and later["expired_at"] == "1970-01-01T01:00:00Z"
    cleared = status_row(orjson.loads(degrade(None)), 0.0)
    assert cleared["level"] == "auto" and cleared["expired"] is None
    assert cleared["by"] == "op@host"


def test_the_record_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown degradation level"):
        degrade_record("bogus", until=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auto has no end time"):
        degrade_record(None, until=10.0)
    with pytest.raises(ValueError, match="cannot end"):
        degrade_record("basic", until=float("nan"))
