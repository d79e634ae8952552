"""The heartbeat and alert records match their JSON Schemas (``pixelpipe.worker/1``,
``pixelpipe.alert/1``), and the cluster status reads them back."""

from __future__ import annotations

import time

from test_record_schemas import check

from pixelpipe.agents.alerts import alert_record, worker_samples
from pixelpipe.agents.heartbeat import Heartbeat, attempt_counts
from pixelpipe.config import Settings
from pixelpipe.policy.alerts import AlertEvent
from pixelpipe.schemas.names import ALERT_SCHEMA, WORKER_SCHEMA
from pixelpipe.streams.cluster_status import active_alerts, workers_section


def test_a_heartbeat_matches_its_schema_and_reads_back_as_a_worker_row() -> None:
    now = time.time()
    beat = Heartbeat(Settings(), topic=None).record(now)
    check(WORKER_SCHEMA, beat)
    (row,) = workers_section([beat], now + 2, missing_after=3)
    assert row["id"] == beat["id"] and row["missing"] is False and row["age_s"] == 2.0
    (late,) = workers_section([beat], now + 16, missing_after=3)  # 3 intervals of 5 s passed
    assert late["missing"] is True
    assert workers_section([beat], now + 7200, missing_after=3) == []  # long gone: forgotten
    (sample,) = worker_samples([beat])
    # the process-wide counters (other tests in this process may have counted attempts)
    assert sample.attempts == attempt_counts()
    assert set(sample.attempts) == {"ok", "failed", "input_error", "deferred"}


def test_an_alert_record_matches_its_schema_and_only_firing_ones_are_active() -> None:
    now = time.time()
    firing = alert_record(AlertEvent("partition_stalled:3", "partition_stalled", "warning",
                                     "firing", 12.0, 600.0, now - 5, "stalled", "3"), now, "w-1")
    resolved = alert_record(AlertEvent("queue_depth", "queue_depth", "warning", "resolved",
                                       10.0, 1000.0, now, "ok again"), now, "w-1")
    for record in (firing, resolved):
        check(ALERT_SCHEMA, record)
    assert active_alerts([firing, resolved]) == [firing]
