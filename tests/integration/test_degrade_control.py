"""The operator's degradation override on the real broker (issue 10): ``pixelpipe degrade``.

A ``ControlView`` (what every worker runs) follows the control topic while the CLI, a separate
process, pins ``basic`` for an hour: the view sees it within half a second of the record being
sent (its ``at``), well inside one of the view's idle fetch waits; a view started later catches
up on it, ``degrade status`` reports it, and ``degrade auto`` clears it just as fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from harness import PipelineEnv, json_lines

from pixelpipe.policy.degradation import Override
from pixelpipe.schemas import parse_time
from pixelpipe.streams.admin import declare_pipeline_topics
from pixelpipe.streams.compacted import FOLLOW_FETCH_WAIT_MS
from pixelpipe.streams.control import ControlView

pytestmark = [pytest.mark.broker]

#: a record answers the follower's waiting fetch at once: it must arrive well inside one wait
WELL_INSIDE_ONE_FETCH_WAIT_S = FOLLOW_FETCH_WAIT_MS / 1000 / 2


async def first_seen(view: ControlView, predicate: Callable[[Override | None], bool],
                     timeout: float = 30.0) -> float:
    """The time (epoch) the view's override first satisfied ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate(view.override(time.time())):
        if time.monotonic() > deadline:
            raise AssertionError(f"the view did not see it within {timeout} s: {view.records}")
        await asyncio.sleep(0.005)
    return time.time()


async def test_degrade_set_reaches_a_following_view_within_a_second_and_auto_clears_it(
    pipeline: PipelineEnv,
) -> None:
    # before any worker declared the control topic: auto, no error
    assert pipeline.cli("degrade", "status").stdout.startswith(b"auto: no override")
    settings = pipeline.settings()
    await declare_pipeline_topics(settings)  # what a worker does at start-up
    view = ControlView(settings)
    await view.start()
    try:
        assert view.override(time.time()) is None and view.records == {}

        watch = asyncio.create_task(first_seen(view, lambda o: o is not None))
        result = await asyncio.to_thread(pipeline.cli, "degrade", "set", "basic", "--for", "1h",
                                         "--reason", "integration test", "--json")
        assert b"every worker now serves at basic" in result.stderr
        (sent,) = json_lines(result.stdout)
        delay = await watch - parse_time(sent["at"]).timestamp()
        assert delay < WELL_INSIDE_ONE_FETCH_WAIT_S, f"the override took {delay:.3f} s"
        override = view.override(time.time())
        assert override == Override("basic", sent["until"], "integration test")
        assert override.until is not None and 3599 < override.until - time.time() <= 3600
        assert view.undecodable == 0

        late = ControlView(settings)  # a worker that starts now catches up before it runs
        await late.start()
        try:
            assert late.override(time.time()) == override
        finally:
            await late.stop()

        (row,) = json_lines(pipeline.cli("degrade", "status", "--json").stdout)
        assert row["level"] == "basic" and row["reason"] == "integration test"
        assert 3500 < row["remaining_s"] <= 3600 and row["by"] == sent["by"]

        watch = asyncio.create_task(first_seen(view, lambda o: o is None))
        result = await asyncio.to_thread(pipeline.cli, "degrade", "auto", "--json")
        (sent,) = json_lines(result.stdout)
        cleared = await watch - parse_time(sent["at"]).timestamp()
        assert cleared < WELL_INSIDE_ONE_FETCH_WAIT_S, f"clearing took {cleared:.3f} s"
        assert view.records["degrade"]["level"] is None
        (row,) = json_lines(pipeline.cli("degrade", "status", "--json").stdout)
        assert row["level"] == "auto" and row["expired"] is None
        print(f"override seen {delay * 1000:.0f} ms after it was sent, "
              f"cleared {cleared * 1000:.0f} ms after")
    finally:
        await view.stop()
