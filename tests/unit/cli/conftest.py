"""Broker-free CLI tests: click's CliRunner, with the Kafka-facing classes replaced by fakes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # whatever the developer's shell says, these tests pick their own broker, prefix and debug
    for name in ("PIXELPIPE_DEBUG", "PIXELPIPE_KAFKA", "PIXELPIPE_TOPIC_PREFIX",
                 "PIXELPIPE_WEB_PORT", "PIXELPIPE_WEB_HOST"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()
