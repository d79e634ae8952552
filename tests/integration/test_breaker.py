"""The circuit breaker on the real broker, with PIXELPIPE_FAULTS (issue 5)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from harness import PipelineEnv, WorkerProcess, json_lines
from images import mixed_images

from pixelpipe.streams.client import FinalOutcome, Publisher

pytestmark = [pytest.mark.broker]

BREAKER_ENV = {
    "PIXELPIPE_BREAKER_MIN_CALLS": "4",
    "PIXELPIPE_BREAKER_WINDOW": "30s",
    "PIXELPIPE_BREAKER_WAIT": "3s",
    "PIXELPIPE_BREAKER_HALF_OPEN_CALLS": "2",
    "PIXELPIPE_RETRY_TIERS": "2s,4s,8s",
}
BLURRED = {"name": "soft", "operations": ["resize:width=300,height=300,fit=inside",
                                          "blur:sigma=2", "format:type=jpeg,quality=80"]}
PLAIN = {"name": "plain", "operations": ["resize:width=300,height=300,fit=inside",
                                         "format:type=jpeg,quality=80"]}


async def publish_many(
    pipeline: PipelineEnv, jobs: list[tuple[Path, list[dict[str, Any]]]], timeout: float
) -> list[FinalOutcome]:
    async with Publisher(pipeline.settings()) as publisher:
        await publisher.watch_outcomes()
        uploads = [await publisher.publish_file(path, renditions) for path, renditions in jobs]
        return [await publisher.wait_for(u.event_id, timeout=timeout) for u in uploads]


def status(pipeline: PipelineEnv) -> dict[str, dict[str, Any]]:
    rows = json_lines(pipeline.cli("breaker", "status", "--json").stdout)
    return {row["processor"]: row for row in rows}


def stamp(log: str, pattern: str) -> float:
    """The time of the first log line matching ``pattern`` (faust's log format)."""
    from datetime import datetime

    for line in log.splitlines():
        if re.search(pattern, line):
            when = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
            assert when, line
            stamp_ = datetime.strptime(when.group(1), "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007
            return stamp_.timestamp()  # local time, like every other log line compared
    raise AssertionError(f"no log line matches {pattern!r}")


def wait_state(pipeline: PipelineEnv, processor: str, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(pipeline).get(processor, {}).get("state") == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"{processor} never became {state}: {status(pipeline).get(processor)}")


def test_a_failing_processor_opens_defers_its_work_and_closes_when_it_heals(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    # Given blur fails every call for its first 12 s (then heals), and min_calls is 4
    worker = pipeline.start_worker("w", PIXELPIPE_FAULTS="blur:storage_unavailable:12s",
                                   **BREAKER_ENV)
    try:
        images = [img.path for img in mixed_images(tmp_path / "in", 10, max_side=700)]
        jobs = [(p, [BLURRED]) for p in images[:7]] + [(p, [PLAIN]) for p in images[7:]]
        # When uploads needing blur and uploads not needing it are published
        outcomes = asyncio.run(publish_many(pipeline, jobs, timeout=120))
    finally:
        worker.stop()
    log = worker.log()
    # Then the blur breaker opened on the failures...
    assert re.search(r"breaker blur: closed -> open: failure rate 100%", log), log[-3000:]
    # ...its work was deferred, not dead-lettered, and completed once blur healed
    assert [o.status for o in outcomes] == ["processed"] * 10
    assert "dead-lettered" not in log
    # ...it went half-open after the wait and closed on good trial calls
    assert re.search(r"breaker blur: half_open -> closed", log)
    deferred = len(re.findall(r"retry \S+ in tier \S+ .* after breaker_open", log))
    assert deferred > 0
    # ...and the uploads without blur were processed on their first attempt
    assert all(o.event.attempts == 1 for o in outcomes[7:])
    # With the fault still on at the first trial, it re-opened with a longer wait
    reopen = re.search(r"breaker blur: half_open -> open", log)
    print(f"\nblur deferrals: {deferred}; re-opened before closing: {bool(reopen)}")


def test_corrupt_images_do_not_move_a_processors_failure_rate(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    worker = pipeline.start_worker("w", **BREAKER_ENV)
    try:
        good = mixed_images(tmp_path / "in", 1)[0].path
        broken = []
        for i in range(8):
            path = tmp_path / f"broken-{i}.jpg"
            path.write_bytes(good.read_bytes()[: 500 + 100 * i])
            broken.append(path)
        outcomes = asyncio.run(publish_many(pipeline, [(p, [PLAIN]) for p in broken], 60))
        time.sleep(2.5)  # past the agent's 2 s refresh of the published rates
        rows = status(pipeline)
    finally:
        worker.stop()
    assert {o.event.error.code for o in outcomes} == {"corrupt_image"}
    # 8 failures with min_calls 4 would open it, if input errors counted
    assert all(row["state"] == "closed" for row in rows.values())
    assert all(row["failure_rate"] == 0 for row in rows.values())
    assert "-> open" not in worker.log()


def test_operator_overrides_take_effect_on_every_worker_and_reset_restores(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    first = pipeline.start_worker("a", **BREAKER_ENV)
    second = pipeline.start_worker("b", **BREAKER_ENV)
    try:
        image = mixed_images(tmp_path / "in", 1)[0].path
        # Given an operator forces resize open
        pipeline.cli("breaker", "open", "resize")
        wait_state(pipeline, "resize", "forced_open")
        for worker in (first, second):
            deadline = time.monotonic() + 10
            while "breaker view: resize is now forced_open" not in worker.log():
                assert time.monotonic() < deadline, worker.log()[-2000:]
                time.sleep(0.1)

        async def publish_then_reset() -> FinalOutcome:
            async with Publisher(pipeline.settings()) as publisher:
                await publisher.watch_outcomes()
                upload = await publisher.publish_file(image, [PLAIN])
                # Then the upload is deferred, not processed, while it is open
                await asyncio.sleep(5)
                assert upload.event_id not in publisher._waiter._outcomes  # type: ignore[union-attr]
                # And after reset it is processed
                await asyncio.to_thread(pipeline.cli, "breaker", "reset", "resize")
                return await publisher.wait_for(upload.event_id, timeout=60)

        outcome = asyncio.run(publish_then_reset())
        assert outcome.status == "processed"
        wait_state(pipeline, "resize", "closed")
        # And disable is obeyed and shown
        pipeline.cli("breaker", "disable", "resize")
        wait_state(pipeline, "resize", "disabled")
        logs = first.log() + second.log()
    finally:
        first.stop()
        second.stop()
    assert "after breaker_open" in logs
    # How long the forced_open took from the agent's decision to each worker's view
    decided = stamp(logs, r"breaker resize: closed -> forced_open")
    seen = [stamp(w.log(), r"breaker view: resize is now forced_open") for w in (first, second)]
    delays = [round((t - decided) * 1000) for t in seen]
    print(f"\nforced_open propagation to the two workers: {delays} ms")
    assert all(0 <= d < 2000 for d in delays)


def test_an_open_avif_breaker_with_a_fallback_gives_a_degraded_webp(
    pipeline: PipelineEnv, worker: WorkerProcess, tmp_path: Path
) -> None:
    image = mixed_images(tmp_path / "in", 1)[0].path
    pipeline.cli("breaker", "open", "avif")
    wait_state(pipeline, "avif", "forced_open")
    deadline = time.monotonic() + 10
    while "breaker view: avif is now forced_open" not in worker.log():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    rendition = {"name": "modern", "fallback_format": "webp",
                 "operations": ["resize:width=300,height=300,fit=inside",
                                "format:type=avif,quality=60"]}
    (outcome,) = asyncio.run(publish_many(pipeline, [(image, [rendition])], timeout=60))
    assert outcome.status == "processed"
    (result,) = outcome.event.renditions
    assert result.format == "webp"
    assert result.degraded == "basic"
    assert result.skipped == ("avif",)
    data = (pipeline.data_dir / result.uri.removeprefix("blob://")).read_bytes()
    assert data[8:12] == b"WEBP"


def test_with_the_fault_still_there_a_trial_reopens_it_with_a_longer_wait(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    worker = pipeline.start_worker("w", PIXELPIPE_FAULTS="blur:worker_crashed:always",
                                   **BREAKER_ENV)
    try:
        images = [img.path for img in mixed_images(tmp_path / "in", 5, max_side=500)]

        async def publish() -> None:
            async with Publisher(pipeline.settings()) as publisher:
                for path in images:
                    await publisher.publish_file(path, [BLURRED])

        asyncio.run(publish())
        deadline = time.monotonic() + 60
        while "breaker blur: half_open -> open" not in worker.log():
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.3)
        time.sleep(2.5)
        row = status(pipeline)["blur"]
    finally:
        worker.stop()
    opens = re.findall(r"breaker blur: (?:closed|half_open) -> open", worker.log())
    assert len(opens) >= 2
    assert row["trips"] >= 2
    print(f"\nblur after a failed trial: {row['state']}, trips {row['trips']}, "
          f"since {row['since']}, next trial {row['next_trial']}")


def test_restarting_the_table_owner_keeps_the_state_and_old_windows_still_expire(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    env = dict(BREAKER_ENV, PIXELPIPE_BREAKER_WINDOW="6s", PIXELPIPE_BREAKER_WAIT="120s")
    worker = pipeline.start_worker("before", PIXELPIPE_FAULTS="blur:worker_crashed:always", **env)
    try:
        images = [img.path for img in mixed_images(tmp_path / "in", 4, max_side=400)]

        async def publish() -> None:
            async with Publisher(pipeline.settings()) as publisher:
                for path in images:
                    await publisher.publish_file(path, [BLURRED])

        asyncio.run(publish())
        wait_state(pipeline, "blur", "open", timeout=60)
    finally:
        worker.stop()
    # When the only worker (the table's owner) restarts, failures still configured
    again = pipeline.start_worker("after", PIXELPIPE_FAULTS="blur:worker_crashed:always", **env)
    try:
        # Then the state is the restored one, not a fresh CLOSED
        row = status(pipeline)["blur"]
        assert row["state"] == "open" and row["trips"] == 1
        time.sleep(7)  # longer than the 6 s window since the failures
        # And the restored window's old buckets expire: an override re-evaluates the row
        # (forced open, so no new call can land in the window meanwhile)
        pipeline.cli("breaker", "open", "blur")
        wait_state(pipeline, "blur", "forced_open")
        row = status(pipeline)["blur"]
    finally:
        again.stop()
    assert row["calls"] == 0, row
    assert "Recovery" in again.log()
