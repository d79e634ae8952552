"""The circuit breaker on the real broker, with PIXELPIPE_FAULTS (issue 5)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import (
    PipelineEnv,
    WorkerProcess,
    event_ids_on,
    json_lines,
    read_to_end,
    wait_for_records,
    wait_until,
)
from images import mixed_images

from pixelpipe.streams.client import FinalOutcome, Publisher
from pixelpipe.streams.topics import (
    breaker_topic,
    dlq_topic,
    outcomes_topic,
    processed_topic,
    retry_topic,
)

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


def breaker_records(pipeline: PipelineEnv, processor: str) -> list[dict[str, Any]]:
    """Every record the breaker agent published for ``processor``, oldest first (to the end of
    the breaker topic as of now; the test topics are far too small to be compacted yet)."""
    records = read_to_end(pipeline.bootstrap, [breaker_topic(pipeline.prefix)])
    return [orjson.loads(r.value) for r in records
            if r.value is not None and r.key == processor.encode()]


def wait_breaker_record(
    pipeline: PipelineEnv, processor: str, match: Any, what: str, timeout: float = 30
) -> dict[str, Any]:
    """The first record on the breaker topic for ``processor`` that ``match(record)`` accepts."""

    def found(records: list[Any]) -> dict[str, Any] | None:
        for r in records:
            if r.value is not None and r.key == processor.encode():
                record = orjson.loads(r.value)
                if match(record):
                    return record  # type: ignore[no-any-return]
        return None

    records = wait_for_records(pipeline.bootstrap, [breaker_topic(pipeline.prefix)], found,
                               timeout=timeout, what=f"a {processor} breaker record: {what}")
    result = found(records)
    assert result is not None
    return result


def retry_envelopes(pipeline: PipelineEnv, tiers: tuple[str, ...] = ("2s", "4s", "8s")
                    ) -> list[dict[str, Any]]:
    topics = [retry_topic(t, pipeline.prefix) for t in tiers]
    return [orjson.loads(r.value) for r in read_to_end(pipeline.bootstrap, topics)]


async def send_breaker_message(pipeline: PipelineEnv, body: dict[str, Any]) -> None:
    """Put one message on the breaker agent's input, as a worker's reporter (an outcome,
    ``pixelpipe.outcome/1``) or ``pixelpipe breaker`` (a command) would."""
    async with Publisher(pipeline.settings()) as publisher:
        await publisher.send_raw(outcomes_topic(pipeline.prefix), body["processor"].encode(),
                                 orjson.dumps(body))


def failures(processor: str, calls: int) -> dict[str, Any]:
    return {"schema": "pixelpipe.outcome/1", "processor": processor, "ok": False,
            "code": "worker_crashed", "calls": calls, "slow": 0, "duration_ms": 1.0}


def operator(processor: str, cmd: str) -> dict[str, Any]:
    return {"schema": "pixelpipe.breaker-command/1", "processor": processor, "command": cmd}


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
    # Given blur fails its first 9 calls (then heals), and min_calls is 4. A count, not a
    # duration: calls refused by the open breaker do not use it up, so whatever the start-up
    # time, the 7 first attempts open it and the calls left fail the first trial.
    worker = pipeline.start_worker("w", PIXELPIPE_FAULTS="blur:storage_unavailable:9",
                                   **BREAKER_ENV)
    try:
        images = [img.path for img in mixed_images(tmp_path / "in", 10, max_side=700)]
        jobs = [(p, [BLURRED]) for p in images[:7]] + [(p, [PLAIN]) for p in images[7:]]
        # When uploads needing blur and uploads not needing it are published
        outcomes = asyncio.run(publish_many(pipeline, jobs, timeout=120))
    finally:
        worker.stop()
    ids = [o.event.event_id for o in outcomes]
    blurred = set(ids[:7])
    # Then every upload was processed once, and none dead-lettered (read from the topics)
    assert [o.status for o in outcomes] == ["processed"] * 10
    on = event_ids_on(pipeline.bootstrap, [processed_topic(pipeline.prefix),
                                           dlq_topic(pipeline.prefix)])
    assert set(ids) <= set(on[processed_topic(pipeline.prefix)])
    assert set(ids).isdisjoint(on[dlq_topic(pipeline.prefix)]), on[dlq_topic(pipeline.prefix)]
    # ...the blur breaker opened on the failures...
    records = breaker_records(pipeline, "blur")
    states = [r["state"] for r in records]
    opens = [r for r in records if r["state"] == "open"]
    assert opens and opens[0]["trips"] == 1, records
    assert opens[0]["reason"].startswith("failure rate 100%"), opens[0]
    # ...its work was deferred (back to a tier with no attempt spent), not dead-lettered...
    deferred = [e for e in retry_envelopes(pipeline)
                if e["event_id"] in blurred and e.get("deferrals", 0) > 0]
    assert deferred
    # ...with the fault still on at the first trial, it re-opened with a longer wait...
    assert any(r["trips"] == 2 for r in opens), states
    second = next(r for r in opens if r["trips"] == 2)
    waits = [r["next_trial_at"] - r["since"] for r in (opens[0], second)]
    assert waits[1] > waits[0] * 1.5, waits  # 3 s then 6 s, each +-10 %
    # ...and closed on good trial calls once blur healed, as its last word
    assert states[-1] == "closed" and records[-1]["reason"].startswith("2 trial calls"), records[-1]
    # ...and the uploads without blur were processed on their first attempt
    assert all(o.event.attempts == 1 for o in outcomes[7:])
    print(f"\nblur deferrals: {len(deferred)}; trips before closing: "
          f"{max(r['trips'] for r in opens)}; waits {[round(w, 2) for w in waits]} s")


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
        # Given 8 uploads whose decode fails (corrupt_image), then one that decodes
        outcomes = asyncio.run(publish_many(pipeline, [(p, [PLAIN]) for p in broken], 60))
        (after,) = asyncio.run(publish_many(pipeline, [(good, [PLAIN])], 60))
        # the good upload's decode outcome reaches the agent after any of the broken ones
        # (one partition, in order): once its record is out, the agent has seen them all
        decode = wait_breaker_record(pipeline, "decode", lambda r: r["calls"] >= 1,
                                     "the good upload's decode counted")
        rows = status(pipeline)
    finally:
        worker.stop()
    assert {o.event.error.code for o in outcomes} == {"corrupt_image"}
    assert {o.event.error.processor for o in outcomes} == {"decode"}
    assert after.status == "processed"
    # 8 failures with min_calls 4 would open decode, if input errors counted: then the good
    # upload would have been deferred to a retry tier, and the topic would hold an open state
    assert decode["failure_rate"] == 0 and decode["state"] == "closed" and decode["trips"] == 0
    assert rows["decode"]["state"] == "closed" and rows["decode"]["failure_rate"] == 0
    assert all(row["state"] == "closed" for row in rows.values())
    assert after.event.event_id not in {e["event_id"] for e in retry_envelopes(pipeline)}
    published = [orjson.loads(r.value)
                 for r in read_to_end(pipeline.bootstrap, [breaker_topic(pipeline.prefix)])]
    assert published and {r["state"] for r in published} == {"closed"}, published


def deferrals(records: list[Any], event_id: str) -> int:
    """The most deferrals a retry envelope of ``event_id`` among ``records`` carries."""
    envelopes = [orjson.loads(r.value) for r in records]
    return max((e.get("deferrals", 0) for e in envelopes if e["event_id"] == event_id), default=0)


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
                # Then the upload is deferred, not processed, while it is open: it comes
                # back to the first tier again and again, and has no outcome meanwhile
                await asyncio.to_thread(wait_for_records, pipeline.bootstrap,
                                        [retry_topic("2s", pipeline.prefix)],
                                        lambda rs: deferrals(rs, upload.event_id) >= 2,
                                        timeout=60, what="the upload deferred twice")
                on = await asyncio.to_thread(event_ids_on, pipeline.bootstrap,
                                             [processed_topic(pipeline.prefix),
                                              dlq_topic(pipeline.prefix)])
                assert upload.event_id not in on[processed_topic(pipeline.prefix)]
                assert upload.event_id not in on[dlq_topic(pipeline.prefix)]
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
        # the agent logs the transition, then publishes it: wait for the record itself
        reopened = wait_breaker_record(pipeline, "blur", lambda r: r["trips"] >= 2,
                                       "re-opened after a failed trial", timeout=60)
        row = status(pipeline)["blur"]
    finally:
        worker.stop()
    opens = re.findall(r"breaker blur: (?:closed|half_open) -> open", worker.log())
    assert len(opens) >= 2
    assert reopened["state"] == "open" and reopened["reason"].endswith("trial calls failed")
    assert row["trips"] >= 2
    print(f"\nblur after a failed trial: {row['state']}, trips {row['trips']}, "
          f"since {row['since']}, next trial {row['next_trial']}")


def changelog_rows(pipeline: PipelineEnv, key: bytes) -> list[dict[str, Any]]:
    """The breaker agent's table rows for ``key`` on the table's changelog topic, in order."""
    topic = f"{pipeline.app_id}-breaker-window-changelog"
    return [orjson.loads(r.value) for r in read_to_end(pipeline.bootstrap, [topic])
            if r.key == key and r.value is not None]


def test_restarting_the_table_owner_keeps_the_state_and_old_windows_still_expire(
    pipeline: PipelineEnv,
) -> None:
    """What only a restored table can produce: the breaker topic still holds the old owner's
    last record whatever the new owner knows, so every check here is on a record the *new*
    owner published in answer to a message sent after it started."""
    window = 30.0  # longer than a restart, so the old calls are still in it afterwards
    env = dict(BREAKER_ENV, PIXELPIPE_BREAKER_WINDOW=f"{window:g}s",
               PIXELPIPE_BREAKER_WAIT="120s")
    worker = pipeline.start_worker("before", **env)
    try:
        # Given 4 failed blur calls open blur's breaker (min_calls 4)
        asyncio.run(send_breaker_message(pipeline, failures("blur", 4)))
        tripped = wait_breaker_record(pipeline, "blur", lambda r: r["state"] == "open",
                                      "opened by 4 failures")
        # and the table's changelog, which a new owner restores from, holds that row
        wait_until(lambda: any(row["trips"] == 1 for row in changelog_rows(pipeline, b"blur")),
                   30, "the open row on the table's changelog")
    finally:
        worker.stop()
    assert tripped["trips"] == 1 and tripped["calls"] == 4
    saved = changelog_rows(pipeline, b"blur")[-1]
    assert saved["state"] == "open" and sum(b[0] for b in saved["buckets"].values()) == 4
    # When the only worker (the table's owner) restarts, with a state directory of its own
    # (nothing local to restore from: only the changelog)
    again = pipeline.start_worker("after", **env)
    try:
        restarted = time.time()
        # Then an operator's close is applied to the restored row: the trip count and the
        # window's 4 calls survive (a fresh table would say trips 0, calls 0)
        asyncio.run(send_breaker_message(pipeline, operator("blur", "close")))
        closed = wait_breaker_record(pipeline, "blur", lambda r: r["reason"] == "operator: close",
                                     "the new owner's answer to close")
        assert closed["published_at"] > restarted
        assert time.time() < tripped["published_at"] + window, "the restart outlasted the window"
        assert (closed["state"], closed["trips"], closed["calls"]) == ("closed", 1, 4), closed
        # And the restored window still decides: one more failure trips it again (5 failed
        # calls of 5; from a fresh window it would be 1 call, under min_calls)
        asyncio.run(send_breaker_message(pipeline, failures("blur", 1)))
        retripped = wait_breaker_record(pipeline, "blur", lambda r: r["trips"] >= 2,
                                        "tripped again by one more failure")
        assert (retripped["state"], retripped["trips"], retripped["calls"]) == ("open", 2, 5)
        # And the restored buckets expire by wall clock like any others: once the window has
        # passed the first 4 calls, an override re-evaluates the row and only the 5th is left
        first = math.floor(tripped["published_at"])
        last = math.floor(retripped["published_at"])
        assert last - first >= 2, (first, last)  # room between the two expiries
        wait_until(lambda: math.floor(time.time() - window) >= first, window + 5,
                   "the first calls to leave the window")
        asyncio.run(send_breaker_message(pipeline, operator("blur", "open")))
        forced = wait_breaker_record(pipeline, "blur", lambda r: r["reason"] == "operator: open",
                                     "the answer to open")
    finally:
        again.stop()
    assert math.floor(forced["published_at"] - window) < last, "the 5th call left the window too"
    assert (forced["state"], forced["trips"], forced["calls"]) == ("forced_open", 2, 1), forced
