"""The demo starting a broker prints no stray bootstrap line (issue 12, point 11)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import pixelpipe.demo as demo
from pixelpipe.config import Settings
from pixelpipe.streams.breaker_view import BreakerView


def test_starting_the_broker_does_not_echo_its_bootstrap_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "kafka.sh"
    script.write_text("#!/bin/sh\necho 127.0.0.1:9092\n")  # what infra/kafka.sh up prints
    script.chmod(0o755)
    monkeypatch.setattr(demo, "find_kafka_sh", lambda *a: script)
    demo._start_local_broker(Settings(broker="kafka://127.0.0.1:9092"))
    out, err = capfd.readouterr()
    assert "127.0.0.1:9092" not in out
    assert err.count("127.0.0.1:9092") == 1  # only the demo's own "[demo] ..." line


def test_a_breaker_change_is_logged_with_a_readable_time_and_no_empty_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = BreakerView(Settings())
    with caplog.at_level(logging.INFO, logger="pixelpipe.streams.breaker_view"):
        view.fold({"processor": "resize", "state": "open", "since": 1796106268.3, "reason": ""})
        view.fold({"processor": "blur", "state": "forced_open", "since": 1796106268.3,
                   "reason": "operator"})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["breaker view: resize is now open since 2026-12-01T06:24:28Z",
                     "breaker view: blur is now forced_open since 2026-12-01T06:24:28Z "
                     "(operator)"]
