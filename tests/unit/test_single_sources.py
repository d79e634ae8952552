"""Issue 16 point 6: knowledge written once. Each table or rule below used to live in two to
five places; these tests hold the one place and the users that read it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelpipe.config import BreakerConfig, Settings
from pixelpipe.errors import ConfigError
from pixelpipe.imaging.formats import (
    IMAGE_SUFFIXES,
    OUTPUT_FORMATS,
    content_type_of,
    output_extension,
)
from pixelpipe.imaging.spec import parse_operation
from pixelpipe.policy.breaker import Breaker, command, effective_state, record, status_record
from pixelpipe.schemas import Origin, epoch_iso, iso, malformed_event_id
from pixelpipe.streams.breaker_view import effective
from pixelpipe.streams.topics import control_topic, pipeline_topic_specs


def test_breaker_settings_come_from_the_environment_into_one_config() -> None:
    assert Settings().breaker == BreakerConfig()
    settings = Settings.from_env({
        "PIXELPIPE_BREAKER_MIN_CALLS": "4", "PIXELPIPE_BREAKER_WINDOW": "6s",
        "PIXELPIPE_BREAKER_WAIT": "2m", "PIXELPIPE_BREAKER_HALF_OPEN_CALLS": "2",
        "PIXELPIPE_BREAKER_SLOW_CALL": "500ms", "PIXELPIPE_BREAKER_FAILURE_RATE": "0.25",
    })
    assert settings.breaker == BreakerConfig(min_calls=4, window_s=6.0, wait_s=120.0,
                                             half_open_calls=2, slow_call_s=0.5,
                                             failure_rate=0.25)
    with pytest.raises(ConfigError, match="PIXELPIPE_BREAKER_MIN_CALLS"):
        Settings.from_env({"PIXELPIPE_BREAKER_MIN_CALLS": "many"})


def test_the_record_every_worker_reads_turns_half_open_when_the_breaker_does() -> None:
    config = BreakerConfig(min_calls=2, half_open_calls=1)
    b = Breaker("blur")
    for _ in range(2):
        record(b, ok=False, code="internal_error", duration_s=0.1, now=100.0, config=config)
    assert b.state == "open" and b.next_trial_at is not None
    published = status_record(b, 100.0, config)
    for now in (100.0, b.next_trial_at - 0.001, b.next_trial_at, b.next_trial_at + 60):
        assert effective(published, now) == effective_state(b, now)
    assert effective(published, b.next_trial_at) == "half_open"
    command(b, "open", 200.0)  # forced open never turns half-open by itself
    assert effective(status_record(b, 200.0, config), 10**10) == "forced_open"


def test_one_time_format_for_records_and_one_for_the_cli() -> None:
    moment = datetime(2026, 11, 28, 12, 30, 5, 123456, tzinfo=UTC)
    assert iso(moment) == "2026-11-28T12:30:05.123Z"
    for epoch in (0, 1.9999999, moment.timestamp(), 2e9 + 0.5):
        assert epoch_iso(epoch) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    assert epoch_iso(None) is None and epoch_iso("1") is None


def test_the_format_tables() -> None:
    assert content_type_of(".JPG") == "image/jpeg" and content_type_of(".tif") == "image/tiff"
    assert content_type_of(".txt") == "application/octet-stream"
    assert {".jpg", ".jpeg", ".png", ".webp", ".avif", ".tif", ".tiff", ".gif",
            ".bmp", ".heic", ".heif"} == IMAGE_SUFFIXES
    assert [output_extension(f) for f in OUTPUT_FORMATS] == ["jpg", "png", "webp", "avif"]
    assert parse_operation("format:type=jpg").arguments["type"] == "jpeg"


def test_the_malformed_event_id() -> None:
    assert malformed_event_id("pixelpipe.uploads", 3, 41) == "malformed:pixelpipe.uploads:3:41"
    assert Origin("t", 0, 7).malformed_event_id == "malformed:t:0:7"


def test_the_faust_topics_have_the_declared_partitions(tmp_path: Path) -> None:
    from pixelpipe.agents.app import create_app, faust_topics

    settings = Settings(upload_partitions=5, state_dir=tmp_path, topic_prefix="p7")
    topics = faust_topics(create_app(settings), settings)
    # the control topic is followed by ``streams.control.ControlView``, not a faust topic
    declared = {spec.name: spec.partitions for spec in pipeline_topic_specs(
        "p7", 5, tuple(name for name, _ in settings.retry_tiers))
        if spec.name != control_topic("p7")}
    objects = [topics.uploads, topics.processed, topics.dlq, topics.outcomes, topics.breaker,
               topics.workers, topics.alerts, *topics.retries.values()]
    assert {t.get_topic_name(): t.partitions for t in objects} == declared
