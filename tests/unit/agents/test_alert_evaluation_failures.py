"""A failed alert evaluation is visible and bounded (no broker: a stand-in reader).

What must hold: an evaluation whose cluster reads fail is counted
(``pixelpipe_alert_evaluations_total{result="failed"}``), logged with its reason at WARNING,
never raised out of the evaluator's loop, and the next good one is counted ``ok``, resets the
run of failures and sets ``pixelpipe_alert_last_evaluation_timestamp_seconds``; a read that
hangs ends at the evaluator's bound as a failed evaluation, not a silent stall.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pixelpipe.agents import alerts, metrics
from pixelpipe.agents.alerts import AlertEvaluator
from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable


class Reader:
    """Stands in for ``ClusterReader``: an empty cluster, or ``lag`` failing / hanging."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.hang = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def alerts(self) -> list[dict[str, Any]]:
        return []

    async def lag(self, now: float, *, ages: bool = True) -> dict[str, Any]:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        return {"partitions": []}

    async def workers(self, now: float) -> list[dict[str, Any]]:
        return []

    async def dead_letters_written(self) -> int:
        return 0


def counted(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value("pixelpipe_alert_evaluations_total",
                                              {"result": result})
    return value or 0.0


def evaluator() -> tuple[AlertEvaluator, Reader]:
    ev = AlertEvaluator(None, Settings(), None, None, "unit")  # type: ignore[arg-type]
    reader = Reader()
    ev.reader = reader  # type: ignore[assignment]
    return ev, reader


async def test_a_failed_evaluation_is_counted_logged_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ev, reader = evaluator()
    reader.fail = BrokerUnavailable("cannot read the committed offsets of g: 3 attempt(s)")
    failed, ok = counted("failed"), counted("ok")
    with caplog.at_level(logging.WARNING, logger=alerts.__name__):
        assert await ev.tick() is False
        assert await ev.tick() is False
    assert counted("failed") == failed + 2 and counted("ok") == ok
    assert ev.failures == 2 and "cannot read the committed offsets" in str(ev.last_failure)
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2
    assert "alert evaluation failed (1 in a row" in lines[0].getMessage()
    assert "cannot read the committed offsets of g" in lines[0].getMessage()
    assert lines[0].exc_info and not lines[1].exc_info  # one traceback a run of failures

    reader.fail = None
    assert await ev.tick() is True
    assert counted("ok") == ok + 1 and ev.failures == 0 and ev.last_failure is None
    stamp = metrics.REGISTRY.get_sample_value(
        "pixelpipe_alert_last_evaluation_timestamp_seconds")
    assert stamp is not None and stamp > 0


async def test_a_hanging_read_ends_at_the_bound_as_a_failed_evaluation() -> None:
    ev, reader = evaluator()
    reader.hang = True
    ev.sample_timeout_s = 0.2
    failed = counted("failed")
    assert await asyncio.wait_for(ev.tick(), 10) is False
    assert counted("failed") == failed + 1
    assert "reading the cluster took over 0.2 s" in str(ev.last_failure)
