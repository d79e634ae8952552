"""Dead-letter tooling on the real broker (issue 6): list, show, stats, replay, consumer API.

Letters come from a real worker (bad uploads, missing sources walking the 1s,2s tiers), and, for
the replay-bookkeeping tests that need no image work, straight from the codec.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import PipelineEnv, consume_all, json_lines, read_to_end, wait_for_records
from images import mixed_images

from pixelpipe.policy.replay_plan import plan_replay, replay_message
from pixelpipe.schemas import (
    UPLOAD_SCHEMA,
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    ProcessedEvent,
    RenditionRequest,
    RenditionResult,
    SourceRef,
    UploadEvent,
    encode,
    utc_now_iso,
)
from pixelpipe.storage.local import LocalBlobStore, sha256_bytes
from pixelpipe.streams.client import ProcessedConsumer, Publisher
from pixelpipe.streams.deadletter_reader import DeadLetterReader
from pixelpipe.streams.deadletter_replayer import Replayer
from pixelpipe.streams.topics import dlq_replays_topic, dlq_topic, processed_topic, uploads_topic

pytestmark = [pytest.mark.broker]

RENDITIONS: list[dict[str, Any]] = [{"name": "w", "operations": ["resize:width=64,height=64,fit=inside",
                                           "format:type=webp,quality=70"]}]
# The breaker (issue 5) would count 30 missing sources as fetch failures and defer the rest;
# these tests are about dead letters, so it is kept out of the way.
NO_BREAKER = {"PIXELPIPE_BREAKER_MIN_CALLS": "1000000"}
COUNTS = {"malformed_event": 70, "invalid_operation": 70, "unsupported_format": 60}


def records_of(pipeline: PipelineEnv, topic: str) -> list[Any]:
    """Every record on ``topic`` up to its end now (not whatever a fixed 3 s read found)."""
    return read_to_end(pipeline.bootstrap, [topic])


def upload_ids(pipeline: PipelineEnv) -> Counter[tuple[str, int]]:
    """(event_id, replays) of every record on the uploads topic."""
    out: Counter[tuple[str, int]] = Counter()
    for record in records_of(pipeline, uploads_topic(pipeline.prefix)):
        data = orjson.loads(record.value)
        out[(data["event_id"], data.get("replays", 0))] += 1
    return out


def wait_for_letters(pipeline: PipelineEnv, count: int, timeout: float = 120) -> None:
    records = consume_all(pipeline.bootstrap, [dlq_topic(pipeline.prefix)], expect=count,
                          timeout=timeout)
    assert len({orjson.loads(r.value)["event_id"] for r in records}) >= count


def upload_event(event_id: str, image_id: str, data: bytes, store: LocalBlobStore) -> UploadEvent:
    sha = sha256_bytes(data)
    return UploadEvent(
        event_id=event_id, image_id=image_id,
        source=SourceRef(uri=store.source_uri(sha), sha256=sha, size=len(data)),
        renditions=(RenditionRequest("w", operations=tuple(RENDITIONS[0]["operations"])),),
        submitted_at=utc_now_iso(),
    )


# --------------------------------------------------------------------------- 200 letters


async def publish_bad_uploads(pipeline: PipelineEnv) -> dict[str, set[str]]:
    """200 uploads a worker dead-letters at once, across three codes; event ids by code."""
    ids: dict[str, set[str]] = {code: set() for code in COUNTS}
    async with Publisher(pipeline.settings()) as publisher:
        text = await asyncio.to_thread(publisher.store.put_source, b"plain text, not an image")
        topic = uploads_topic(pipeline.prefix)
        base = {
            "schema": UPLOAD_SCHEMA, "submitted_at": utc_now_iso(),
            "source": {"uri": text.uri, "sha256": text.sha256, "size": text.size},
        }
        sends = []
        for code, count in COUNTS.items():
            for i in range(count):
                event_id = str(uuid.uuid4())
                ids[code].add(event_id)
                event = dict(base, event_id=event_id, image_id=f"{code}-{i}",
                             renditions=RENDITIONS)
                if code == "malformed_event":
                    event["schema"] = "pixelpipe.upload/9"
                elif code == "invalid_operation":
                    event["renditions"] = [{"name": "w", "preset": "no-such-preset"}]
                sends.append(publisher.send_raw(topic, event["image_id"].encode(),
                                                orjson.dumps(event)))
        await asyncio.gather(*sends)
    return ids


@pytest.fixture(scope="module")
def two_hundred(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PipelineEnv, dict[str, set[str]]]]:
    """A pipeline whose worker dead-lettered 200 bad uploads (three codes)."""
    pipeline = PipelineEnv(bootstrap=kafka_bootstrap, root=tmp_path_factory.mktemp("dlq200"))
    worker = pipeline.start_worker("w", **NO_BREAKER)
    try:
        ids = asyncio.run(publish_bad_uploads(pipeline))
        wait_for_letters(pipeline, 200)
    finally:
        worker.stop()
    yield pipeline, ids


def test_stats_and_list_by_code_count_200_letters_exactly(
    two_hundred: tuple[PipelineEnv, dict[str, set[str]]],
) -> None:
    pipeline, ids = two_hundred
    # When stats are asked for
    stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    # Then every count is exact
    assert stats["total"] == 200
    assert stats["by_code"] == COUNTS
    assert stats["by_status"]["pending"] == 200 and stats["replayed"] == 0
    assert stats["oldest"] <= stats["newest"]
    # And list --code X lists exactly the letters of X
    for code, expected in ids.items():
        lines = json_lines(pipeline.cli("dlq", "list", "--code", code, "--json").stdout)
        assert {line["event_id"] for line in lines} == expected
        assert len(lines) == len(expected)
        assert {line["code"] for line in lines} == {code}
    # And the other filters narrow it
    one = next(iter(ids["invalid_operation"]))
    (line,) = json_lines(pipeline.cli("dlq", "list", "--event-id", one, "--json").stdout)
    assert line["event_id"] == one
    assert json_lines(pipeline.cli("dlq", "list", "--limit", "7", "--json").stdout).__len__() == 7
    assert json_lines(pipeline.cli("dlq", "list", "--since", "1h", "--json").stdout).__len__() == 200
    assert json_lines(pipeline.cli("dlq", "list", "--until", "1h", "--json").stdout) == []
    listed = pipeline.cli("dlq", "list", "--code", "unsupported_format")
    # not a terminal: the plain layout on stdout (a header and one line per letter), the
    # table's title on stderr
    assert "60 dead letter(s)" in listed.stderr.decode()
    assert len(listed.stdout.decode().splitlines()) == 1 + 60
    # And show prints the whole envelope
    (shown,) = json_lines(pipeline.cli("dlq", "show", one, "--json").stdout)
    assert shown["letter"]["error"]["code"] == "invalid_operation"
    assert shown["letter"]["original"]["event_id"] == one
    assert shown["letter"]["origin"]["topic"] == uploads_topic(pipeline.prefix)
    assert [a["tier"] for a in shown["letter"]["attempts"]] == ["main"]
    assert shown["replay"] is None and shown["status"] == "pending"
    missing = pipeline.cli("dlq", "show", "no-such-event", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "pixelpipe: error: no dead letter with event id no-such-event"


def ledger_of(pipeline: PipelineEnv) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async with DeadLetterReader(pipeline.settings()) as reader:
            return await reader.ledger()

    return asyncio.run(read())


def ledger_and_uploads(pipeline: PipelineEnv) -> tuple[int, Counter[tuple[str, int]]]:
    return len(ledger_of(pipeline)), upload_ids(pipeline)


def test_replaying_input_errors_is_refused_without_force_and_publishes_nothing(
    two_hundred: tuple[PipelineEnv, dict[str, set[str]]],
) -> None:
    pipeline, _ids = two_hundred
    before = ledger_and_uploads(pipeline)
    # When malformed_event letters are replayed without --force
    result = pipeline.cli("dlq", "replay", "--code", "malformed_event", check=False)
    # Then it is refused in one clear line, and nothing was published or recorded
    assert result.returncode == 1
    (line,) = result.stderr.decode().strip().splitlines()
    assert "refusing to replay 70 dead letter(s)" in line
    assert "malformed_event (70)" in line and "--force" in line
    assert ledger_and_uploads(pipeline) == before


def test_dry_run_shows_the_letters_and_publishes_nothing(
    two_hundred: tuple[PipelineEnv, dict[str, set[str]]],
) -> None:
    pipeline, ids = two_hundred
    before = ledger_and_uploads(pipeline)
    result = pipeline.cli("dlq", "replay", "--code", "invalid_operation", "--force",
                          "--dry-run", "--json")
    lines = json_lines(result.stdout)
    assert {line["event_id"] for line in lines} == ids["invalid_operation"]
    assert {line["action"] for line in lines} == {"would_replay"}
    assert "would replay 70 dead letter(s)" in result.stderr.decode()
    assert ledger_and_uploads(pipeline) == before
    stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    assert stats["replayed"] == 0


# --------------------------------------------------------------------------- source_missing


async def publish_missing_sources(pipeline: PipelineEnv, sources: list[bytes]) -> list[str]:
    """Uploads whose source bytes are not (yet) in the blob store."""
    store = LocalBlobStore(pipeline.data_dir)
    ids = []
    async with Publisher(pipeline.settings()) as publisher:
        for i, data in enumerate(sources):
            event = upload_event(str(uuid.uuid4()), f"missing-{i}", data, store)
            await publisher.publish_event(event)
            ids.append(event.event_id)
    return ids


def test_source_missing_letters_replayed_after_the_fix_end_processed_once_each(
    pipeline: PipelineEnv, tmp_path: Path
) -> None:
    worker = pipeline.start_worker("w", **NO_BREAKER)
    try:
        # Given 30 uploads whose sources are missing: they walk main, 1s, 2s and die
        sources = [img.path.read_bytes() for img in mixed_images(tmp_path / "in", 30,
                                                                  max_side=300)]
        ids = asyncio.run(publish_missing_sources(pipeline, sources))
        wait_for_letters(pipeline, 30)
        listed = json_lines(pipeline.cli("dlq", "list", "--code", "source_missing",
                                         "--json").stdout)
        assert {line["event_id"] for line in listed} == set(ids)
        assert {(line["code"], line["cause"]) for line in listed} == {
            ("retries_exhausted", "source_missing")}
        # When the sources are put in place
        store = LocalBlobStore(pipeline.data_dir)
        for data in sources:
            store.put_source(data)
        # And a replay is interrupted half-way (--limit), then run again at a bounded rate
        first = pipeline.cli("dlq", "replay", "--code", "source_missing", "--limit", "15",
                             "--json")
        assert len(json_lines(first.stdout)) == 15
        began = time.monotonic()
        second = pipeline.cli("dlq", "replay", "--code", "source_missing", "--rate", "10")
        wall = time.monotonic() - began
        summary = second.stderr.decode()
        # And once more
        third = pipeline.cli("dlq", "replay", "--code", "source_missing", "--json")
        # Then every one of them ends processed
        processed = asyncio.run(collect_processed(pipeline, set(ids), timeout=90))
        stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    finally:
        worker.stop()
    assert processed == set(ids)
    assert "replayed 15 dead letter(s)" in summary, summary
    rate = float(summary.rsplit("(", 1)[1].split("/s")[0])
    print(f"\nreplay --rate 10: 15 letters, measured {rate:.2f}/s (command wall time {wall:.2f} s)")
    assert 5 <= rate <= 10.0
    # The third run replays nothing
    assert json_lines(third.stdout) == []
    assert "replayed 0 dead letter(s)" in third.stderr.decode()
    assert "already_replayed 30" in third.stderr.decode()
    # Each letter was replayed exactly once, keeping its event_id, with replays = 1
    uploads = upload_ids(pipeline)
    assert {key: n for key, n in uploads.items() if key[1] == 1} == {(i, 1): 1 for i in ids}
    assert stats["replayed"] == 30 and stats["by_status"]["pending"] == 0
    (shown,) = json_lines(pipeline.cli("dlq", "show", ids[0], "--json").stdout)
    assert shown["status"] == "replayed"
    assert shown["replay"]["replays"] == 1 and shown["replay"]["state"] == "published"


async def collect_processed(pipeline: PipelineEnv, wanted: set[str], timeout: float) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    async with ProcessedConsumer(pipeline.settings(), from_beginning=True, follow=True) as events:
        iterator = events.__aiter__()
        while seen < wanted and time.monotonic() < deadline:
            try:
                event = await asyncio.wait_for(iterator.__anext__(), deadline - time.monotonic())
            except TimeoutError:
                break
            seen.add(event.event_id)
    return seen & wanted


# --------------------------------------------------------------------------- crash windows


async def write_letters(pipeline: PipelineEnv, count: int) -> list[str]:
    """``count`` retries_exhausted/source_missing letters, written as the router writes them."""
    store = LocalBlobStore(pipeline.data_dir)
    ids = []
    async with Publisher(pipeline.settings()) as publisher:
        for i in range(count):
            event_id = str(uuid.uuid4())
            upload = upload_event(event_id, f"img-{i}", f"bytes {i}".encode(), store)
            original = orjson.loads(encode(upload))
            now = utc_now_iso()
            letter = DeadLetter(
                event_id=event_id, original=original,
                error=ErrorInfo("retries_exhausted", "RetriesExhausted", "3 attempts failed",
                                "fetch", False),
                attempts=tuple(AttemptRecord(now, "source_missing", t)
                               for t in ("main", "1s", "2s")),
                origin=Origin(uploads_topic(pipeline.prefix), 0, i), first_failed_at=now,
                dead_lettered_at=now, image_id=f"img-{i}",
            )
            await publisher.send_raw(dlq_topic(pipeline.prefix), event_id.encode(),
                                     encode(letter))
            ids.append(event_id)
    return ids


def replayed_once_each(pipeline: PipelineEnv, ids: list[str]) -> None:
    uploads = upload_ids(pipeline)
    assert sorted(uploads.items()) == sorted(((i, 1), 1) for i in ids)


def test_a_replay_killed_mid_way_and_run_again_replays_each_letter_exactly_once(
    pipeline: PipelineEnv,
) -> None:
    ids = asyncio.run(write_letters(pipeline, 60))
    # Given a replay at 10/s (6 s for all 60), killed -9 as soon as the ledger shows 10
    # letters replayed: mid-way whatever the start-up time of the command
    process = subprocess.Popen([sys.executable, "-m", "pixelpipe", "dlq", "replay", "--rate", "10"],
                               env=pipeline.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def published(records: list[Any]) -> int:
        return len({r.key for r in records if orjson.loads(r.value)["state"] == "published"})

    try:
        wait_for_records(pipeline.bootstrap, [dlq_replays_topic(pipeline.prefix)],
                         lambda rs: published(rs) >= 10, timeout=60,
                         what="10 replayed letters on the ledger")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished
    stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    done = stats["replayed"] + stats["by_status"]["in_doubt"]
    assert 0 < done < 60, stats
    # When it is run again
    again = pipeline.cli("dlq", "replay")
    # Then every letter is replayed exactly once in all
    replayed_once_each(pipeline, ids)
    stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    assert stats["replayed"] == 60
    print(f"\nkilled after {done} of 60; the re-run: {again.stderr.decode().strip()}")


def test_a_crash_between_intent_publish_and_confirmation_leaves_no_duplicate(
    pipeline: PipelineEnv,
) -> None:
    ids = asyncio.run(write_letters(pipeline, 12))

    async def crash_mid_batch() -> None:
        # Given a run that recorded its intent for 8 letters, published 4 of them, and died
        async with Replayer(pipeline.settings()) as replayer:
            plan = plan_replay(await replayer.reader.letters(), limit=8)
            publisher = replayer._require_publisher()
            ledger = dlq_replays_topic(pipeline.prefix)
            records = [replayer._record(s, plan, utc_now_iso()) for s in plan.letters]
            for record in records:
                await publisher.send_raw(ledger, record.key.encode(), record.encode())
            for stored, record in list(zip(plan.letters, records, strict=True))[:4]:
                message = replay_message(stored.letter, record.replays, to="uploads",
                                         uploads_topic=uploads_topic(pipeline.prefix))
                await publisher.send_raw(message.topic, message.key, message.value,
                                         message.headers)

    asyncio.run(crash_mid_batch())
    stats = orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)
    assert stats["by_status"] == {"pending": 4, "in_doubt": 8, "replayed": 0, "superseded": 0}
    # When the replay is run again
    result = pipeline.cli("dlq", "replay")
    # Then the 4 published ones are only confirmed, the rest are published: once each
    assert "replayed 8 dead letter(s)" in result.stderr.decode()
    assert "4 of an interrupted run were already published" in result.stderr.decode()
    replayed_once_each(pipeline, ids)
    assert orjson.loads(pipeline.cli("dlq", "stats", "--json").stdout)["replayed"] == 12


def test_replay_to_retry_sends_an_envelope_due_now_to_the_first_tier(
    pipeline: PipelineEnv,
) -> None:
    (event_id,) = asyncio.run(write_letters(pipeline, 1))
    pipeline.cli("dlq", "replay", "--to", "retry")
    (record,) = records_of(pipeline, f"{pipeline.prefix}.retry.1s")
    envelope = orjson.loads(record.value)
    assert envelope["schema"] == "pixelpipe.retry/1" and envelope["tier"] == "1s"
    assert envelope["event_id"] == event_id and envelope["attempts"] == []
    assert envelope["original"]["replays"] == 1


# --------------------------------------------------------------------------- consumer API


def test_the_consumer_yields_each_processed_event_once_despite_duplicates(
    pipeline: PipelineEnv,
) -> None:
    def processed(event_id: str) -> ProcessedEvent:
        return ProcessedEvent(
            event_id=event_id, image_id=event_id[:8], source_sha256="0" * 64,
            renditions=(RenditionResult("w", "blob://outputs/x", "0" * 64, 1, 1, 1, "webp"),),
            attempts=1, processing_ms=1.0, completed_at=utc_now_iso(),
        )

    async def scenario() -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(20)]
        async with Publisher(pipeline.settings()) as publisher:
            topic = processed_topic(pipeline.prefix)
            # each event three times, the copies on different partitions and far apart
            for copy in range(3):
                for event_id in ids:
                    await publisher.send_raw(topic, f"{event_id}-{copy}".encode(),
                                             encode(processed(event_id)))
        async with ProcessedConsumer(pipeline.settings(), from_beginning=True) as events:
            got = [event.event_id async for event in events]
            assert events.duplicates_dropped == 40
        assert sorted(got) == sorted(ids)
        return got

    got = asyncio.run(scenario())
    assert len(got) == len(set(got)) == 20


# --------------------------------------------------------------------------- help, broker down


COMMANDS = [["list"], ["show", "some-event"], ["stats"], ["replay"], ["replay", "--dry-run"]]


def test_every_dlq_command_has_help_and_a_down_broker_is_one_line_and_exit_1(
    pipeline: PipelineEnv,
) -> None:
    for command in (["dlq"], *(["dlq", c[0]] for c in COMMANDS)):
        result = pipeline.cli(*command, "--help")
        assert result.returncode == 0 and b"Usage:" in result.stdout, command
        assert len(result.stdout.decode().splitlines()) > 5
    for command in COMMANDS:
        began = time.monotonic()
        result = pipeline.cli("dlq", *command, "--broker", "kafka://127.0.0.1:1", check=False)
        took = time.monotonic() - began
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 1, (command, result.stderr)
        assert lines == ["pixelpipe: error: cannot reach Kafka at 127.0.0.1:1 (KafkaConnectionError)"]
        assert result.stdout == b""
        assert took < 10, (command, took)
