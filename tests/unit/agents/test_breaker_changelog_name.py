"""The breaker table's changelog as the worker declares it is the one faust uses (no broker).

The worker creates the changelog before faust starts (so every node lists it when faust's
table checks its partitions against the outcomes topic's): that only helps if the name is
faust's own and the shape the outcomes topic's.
"""

from __future__ import annotations

from pathlib import Path

from pixelpipe.agents.app import create_app, faust_topics
from pixelpipe.agents.breaker import register_breaker_agent
from pixelpipe.config import Settings
from pixelpipe.streams.topics import (
    BREAKER_TABLE,
    breaker_changelog_topic,
    co_partitioned_topics,
    outcomes_topic,
    pipeline_topic_specs,
    worker_topic_specs,
)


def test_the_declared_changelog_is_fausts_with_the_outcomes_shape(tmp_path: Path) -> None:
    settings = Settings(app_id="unit-app", topic_prefix="unit", state_dir=tmp_path)
    app = create_app(settings)
    register_breaker_agent(app, settings, faust_topics(app, settings))
    table = app.tables[BREAKER_TABLE]
    name = table.changelog_topic.get_topic_name()
    assert name == breaker_changelog_topic("unit-app") == "unit-app-breaker-window-changelog"

    specs = {s.name: s for s in worker_topic_specs("unit", "unit-app", 12, ("5s",))}
    assert set(specs) - {s.name for s in pipeline_topic_specs("unit", 12, ("5s",))} == {name}
    assert specs[name].partitions == specs[outcomes_topic("unit")].partitions == table.partitions
    assert specs[name].compacted  # as faust declares a non-windowed table's changelog
    assert co_partitioned_topics("unit", "unit-app") == ((outcomes_topic("unit"), name),)
