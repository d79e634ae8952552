"""Issue 12 point 4: ``dlq replay --dry-run`` previews the plan even when the selection holds
input-error letters (what would be replayed, what would be refused and why, exit 0); a real
replay of the same selection is still refused as a whole."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.config import Settings
from pixelpipe.policy.deadletters import LetterFilter, ReplayRecord, StoredLetter
from pixelpipe.schemas.events import AttemptRecord, DeadLetter, ErrorInfo, Origin

UUID_GOOD = "0b9c4c1e-7d2a-4d0b-9a61-3f1f2c9e8a01"
UUID_CORRUPT = "5e2d7f10-3c44-4b8e-8f0d-1a2b3c4d5e6f"
UUID_DOUBT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
MALFORMED = "malformed-pixelpipe.uploads-0-17"


def stored(
    event_id: str, code: str, *, cause: str | None = None, raw: bytes | None = None,
    replay: ReplayRecord | None = None, offset: int = 0,
) -> StoredLetter:
    original: dict[str, Any] = (
        {"base64": base64.b64encode(raw).decode()} if raw is not None
        else {"schema": "pixelpipe.upload/1", "event_id": event_id, "image_id": f"img-{offset}"}
    )
    attempts = (AttemptRecord(at="2024-05-01T12:00:00Z", code=cause, tier="5s"),) if cause else ()
    letter = DeadLetter(
        event_id=event_id, original=original, image_id=None if raw else f"img-{offset}",
        error=ErrorInfo(code=code, class_="X", message=f"{code} happened", processor="decode",
                        retryable=False),
        attempts=attempts, origin=Origin(topic="pixelpipe.uploads", partition=0, offset=offset),
        first_failed_at="2024-05-01T12:00:00Z", dead_lettered_at="2024-05-01T12:00:01Z",
    )
    return StoredLetter(letter=letter, partition=0, offset=offset, replay=replay)


def selection() -> list[StoredLetter]:
    doubt = ReplayRecord(
        event_id=UUID_DOUBT, letter_replays=0, state="publishing", replays=1, times=1,
        to="uploads", topic="pixelpipe.uploads", run_id="r1", replayed_at="2024-05-01T13:00:00Z",
        code="storage_unavailable", dead_lettered_at="2024-05-01T12:00:01Z",
        intent_timestamp_ms=1_714_568_400_000,
    )
    return [
        stored(UUID_GOOD, "retries_exhausted", cause="source_missing", offset=0),
        stored(UUID_CORRUPT, "corrupt_image", offset=1),
        stored(MALFORMED, "malformed_event", raw=b"\x00\xffthis is { not json", offset=2),
        stored(UUID_DOUBT, "storage_unavailable", replay=doubt, offset=3),
    ]


class FakeReader:
    """Stands in for ``DeadLetterReader`` inside the replayer: the letters above, and the
    in-doubt one found already published."""

    def __init__(self, settings: Settings, *, timeout_s: float = 10.0) -> None:
        self.letters_ = selection()

    async def __aenter__(self) -> FakeReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def letters(self, where: LetterFilter | None = None,
                      limit: int | None = None) -> list[StoredLetter]:
        return (where or LetterFilter()).apply(self.letters_, limit)

    async def find_replayed(self, topic: str, since_ms: int,
                            wanted: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        return {key: (0, 99) for key in wanted if key[0] == UUID_DOUBT}


class FakePublisher:
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.sent: list[Any] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_raw(self, *args: Any) -> tuple[int, int]:
        raise AssertionError("a refused replay must publish nothing")


@pytest.fixture
def letters(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelpipe.streams.deadletter_replayer as replayer

    async def no_ledger(settings: Settings, timeout_s: float = 10.0) -> None:
        return None

    monkeypatch.setattr(replayer, "DeadLetterReader", FakeReader)
    monkeypatch.setattr(replayer, "declare_replay_ledger", no_ledger)
    monkeypatch.setattr(replayer, "Publisher", FakePublisher)


def test_a_dry_run_shows_what_would_be_replayed_and_refused(
    runner: CliRunner, letters: None
) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--dry-run"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    lines = result.stdout.splitlines()
    rows = {line.split()[2]: line for line in lines[1:]}  # after the header; id is column 3
    assert set(rows) == {UUID_GOOD, UUID_CORRUPT, MALFORMED, UUID_DOUBT}
    assert "replay" in rows[UUID_GOOD] and "to pixelpipe.uploads" in rows[UUID_GOOD]
    assert "refuse" in rows[UUID_CORRUPT] and "input error corrupt_image" in rows[UUID_CORRUPT]
    assert "refuse" in rows[MALFORMED] and "input error malformed_event" in rows[MALFORMED]
    assert "recovered" in rows[UUID_DOUBT]
    summary = result.stderr.splitlines()[-1]
    assert summary.startswith("pixelpipe: dry run: would replay 1 dead letter(s)")
    assert "would refuse 2 (corrupt_image 1, malformed_event 1)" in summary
    assert "--force" in summary and "nothing published" in summary


def test_a_dry_run_in_json_names_each_action_and_why(runner: CliRunner, letters: None) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--dry-run", "--json"])
    assert result.exit_code == 0, result.stderr
    actions = {(line := orjson.loads(raw))["event_id"]: (line["action"], line["why"])
               for raw in result.stdout.splitlines()}
    assert actions[UUID_GOOD][0] == "would_replay"
    assert actions[UUID_CORRUPT] == (
        "would_refuse", "input error corrupt_image: the same input would fail the same way "
        "(fix the cause, then --force)")
    assert actions[MALFORMED][0] == "would_refuse"
    assert actions[UUID_DOUBT][0] == "recovered"


def test_a_dry_run_with_force_would_replay_the_input_errors_too(
    runner: CliRunner, letters: None
) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--dry-run", "--force", "--json"])
    assert result.exit_code == 0, result.stderr
    actions = [orjson.loads(raw)["action"] for raw in result.stdout.splitlines()]
    assert actions.count("would_replay") == 3 and "would_refuse" not in actions
    assert "would refuse" not in result.stderr


def test_a_dry_run_to_retry_refuses_the_non_json_original_and_says_why(
    runner: CliRunner, letters: None
) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--dry-run", "--force", "--to", "retry",
                                  "--json"])
    assert result.exit_code == 0, result.stderr
    why = {(line := orjson.loads(raw))["event_id"]: (line["action"], line["why"])
           for raw in result.stdout.splitlines()}
    assert why[MALFORMED][0] == "would_refuse" and "--to uploads" in why[MALFORMED][1]
    assert why[UUID_CORRUPT][0] == "would_replay"
    assert "would refuse 1 (not replayable as asked 1)" in result.stderr


def test_a_dry_run_of_a_clean_selection_has_nothing_refused(
    runner: CliRunner, letters: None
) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--dry-run", "--code", "source_missing"])
    assert result.exit_code == 0, result.stderr
    assert UUID_GOOD in result.stdout and UUID_CORRUPT not in result.stdout
    assert "would replay 1 dead letter(s)" in result.stderr and "refuse" not in result.stderr


def test_a_real_replay_of_the_same_selection_is_still_refused_as_a_whole(
    runner: CliRunner, letters: None
) -> None:
    result = runner.invoke(main, ["dlq", "replay"])
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("pixelpipe: error: refusing to replay 2 dead letter(s) caused by "
                           "input errors")
