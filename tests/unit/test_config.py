"""Settings: environment in one place, overrides win, bad values name their variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpipe.config import Settings, bootstrap_from_url
from pixelpipe.errors import ConfigError
from pixelpipe.streams.topics import dlq_topic, processed_topic, retry_topic, uploads_topic


def test_defaults_env_and_overrides_in_that_order() -> None:
    env = {"PIXELPIPE_KAFKA": "kafka://h:1", "PIXELPIPE_WORKERS": "3", "PIXELPIPE_DATA": "/d"}
    settings = Settings.from_env(env, workers=5)
    assert settings.broker == "kafka://h:1"
    assert settings.workers == 5
    assert settings.max_inflight == 12
    assert settings.data_dir == Path("/d")
    assert Settings.from_env({}).broker == "kafka://127.0.0.1:9092"


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PIXELPIPE_WORKERS"):
        Settings.from_env({"PIXELPIPE_WORKERS": "many"})


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka://a:1,kafka://b:2", "a:1,b:2"),
        ("kafka://a:1;b:2", "a:1,b:2"),
        ("a:1", "a:1"),
    ],
)
def test_broker_urls_become_bootstrap_servers(url: str, servers: str) -> None:
    assert bootstrap_from_url(url) == servers


def test_unknown_broker_scheme_is_refused() -> None:
    with pytest.raises(ConfigError):
        bootstrap_from_url("http://a:1")


def test_default_topic_names_are_the_contract() -> None:
    assert uploads_topic() == "pixelpipe.uploads"
    assert processed_topic() == "pixelpipe.processed"
    assert retry_topic("5s") == "pixelpipe.retry.5s"
    assert dlq_topic() == "pixelpipe.dlq"
    assert uploads_topic("t1") == "t1.uploads"


def test_image_processes_are_replaced_rarely_unless_configured() -> None:
    # issue 15: replacing an image process stops it for a spawn and ``import cv2``; at the old
    # 200 renders it happened every few seconds under load and stalled the uploads behind it
    assert Settings.from_env({}).worker_max_tasks == 10_000
    assert Settings.from_env({"PIXELPIPE_WORKER_MAX_TASKS": "0"}).worker_max_tasks == 0
    with pytest.raises(ConfigError, match="PIXELPIPE_WORKER_MAX_TASKS"):
        Settings.from_env({"PIXELPIPE_WORKER_MAX_TASKS": "-1"})

