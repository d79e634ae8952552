"""``pixelpipe backfill`` with Kafka replaced by fakes (no broker): the plan is fixed, the
cluster status comes from a fake ``ClusterReader`` and the publisher records what it sends.

What must hold: an unhealthy cluster (an override in force, a worker not at full) refuses the
run in one line, exit 1, with nothing published; ``--force`` skips the check; ``--dry-run``
prints the plan and publishes nothing; an upload no longer on the topic is reported and
makes the exit code 1, the others are published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.policy.backfill import SeenProcessed, select
from pixelpipe.schemas import ProcessedEvent, RenditionResult
from pixelpipe.streams.backfill import Backfiller, BackfillPlan, PlanItem

SHA = "ab" * 32


def seen(event_id: str, offset: int, mark: str | None) -> SeenProcessed:
    return SeenProcessed(event=ProcessedEvent(
        event_id=event_id, image_id=f"img-{event_id}", source_sha256=SHA,
        renditions=(RenditionResult(name="t", uri="blob://outputs/x", sha256=SHA, size=1,
                                    width=1, height=1, format="jpeg", degraded=mark),),
        attempts=1, processing_ms=1.0, completed_at=f"2026-11-28T10:00:0{offset}.000Z",
        level=mark or "full"), partition=2, offset=offset)


def original(event_id: str) -> dict[str, Any]:
    return {"schema": "pixelpipe.upload/1", "event_id": event_id, "image_id": f"img-{event_id}",
            "source": {"uri": f"blob://sources/ab/{SHA}", "sha256": SHA, "size": 1},
            "renditions": [{"name": "t", "preset": "thumbnail"}], "priority": "normal",
            "submitted_at": "2026-11-28T09:00:00.000Z"}


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: Any = ()) -> tuple[int, int]:
        assert value is not None
        self.sent.append((topic, key, orjson.loads(value)))
        return 2, 100 + len(self.sent)

    async def stop(self) -> None:
        return None


class FakeReader:
    """Stands in for ``streams.cluster_status.ClusterReader``: returns ``status``."""

    status_now: ClassVar[dict[str, Any]] = {}
    opened: ClassVar[int] = 0

    def __init__(self, settings: Any) -> None:
        FakeReader.opened += 1

    async def __aenter__(self) -> FakeReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def status(self) -> dict[str, Any]:
        return self.status_now


def status(*levels: str, override: str | None = None) -> dict[str, Any]:
    return {
        "workers": [{"id": f"host-{i}", "level": level, "missing": False,
                     "forced": override is not None} for i, level in enumerate(levels)],
        "level": {"override": None if override is None else {
            "level": override, "until": None, "reason": "drill", "by": "op@host"}},
    }


class Fakes:
    def __init__(self) -> None:
        self.publisher = FakePublisher()
        self.opened: list[dict[str, Any]] = []
        self.planned: list[dict[str, Any]] = []
        self.records = [seen("e1", 1, "basic"), seen("e2", 2, None), seen("e3", 3, "emergency")]
        self.originals = {"e1": original("e1"), "e3": original("e3")}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    import pixelpipe.streams.cluster_status

    state = Fakes()

    async def enter(self: Backfiller) -> Backfiller:
        state.opened.append({"dry_run": self.dry_run})
        if not self.dry_run:
            self._publisher = state.publisher  # type: ignore[assignment]
        return self

    async def leave(self: Backfiller, *exc: object) -> None:
        self._publisher = None

    async def plan(self: Backfiller, *, since: datetime | None = None, level: Any = None,
                   limit: int | None = None) -> BackfillPlan:
        state.planned.append({"since": since, "level": level, "limit": limit})
        selection = select(state.records, level=level, limit=limit)
        items = tuple(PlanItem(c, state.originals.get(c.event_id)) for c in selection.candidates)
        assert since is not None
        return BackfillPlan(since=since, level=level, items=items, selection=selection)

    monkeypatch.setattr(Backfiller, "__aenter__", enter)
    monkeypatch.setattr(Backfiller, "__aexit__", leave)
    monkeypatch.setattr(Backfiller, "plan", plan)
    FakeReader.opened = 0
    FakeReader.status_now = status("full", "full")
    monkeypatch.setattr(pixelpipe.streams.cluster_status, "ClusterReader", FakeReader)
    return state


@pytest.mark.parametrize(("cluster", "named"), [
    (status("basic", "basic", override="basic"),
     "degradation override basic in force (set by op@host, until 'pixelpipe degrade auto'); "
     "worker host-0 at basic (forced); worker host-1 at basic (forced)"),
    (status("full", "reduced_quality"), "worker host-1 at reduced_quality"),
    ({"workers": [], "level": {"override": None}}, "no live worker"),
])
def test_an_unhealthy_cluster_refuses_in_one_line_and_publishes_nothing(
    runner: CliRunner, fakes: Fakes, cluster: dict[str, Any], named: str
) -> None:
    FakeReader.status_now = cluster
    result = runner.invoke(main, ["backfill"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "pixelpipe: error: refusing to backfill 2 upload(s): the cluster is not healthy: "
        f"{named} (wait until every worker is at full, or pass --force)\n")
    assert fakes.publisher.sent == [] and FakeReader.opened == 1


def test_force_skips_the_health_check(runner: CliRunner, fakes: Fakes) -> None:
    FakeReader.status_now = status("basic", override="basic")
    result = runner.invoke(main, ["backfill", "--force", "--rate", "1000", "--json"])
    assert result.exit_code == 0, result.output
    assert FakeReader.opened == 0
    assert [body["event_id"] for _, _, body in fakes.publisher.sent] == ["e1", "e3"]
    assert "(--force: health check skipped)" in result.stderr


def test_a_healthy_cluster_gets_each_upload_again_at_low_priority(
    runner: CliRunner, fakes: Fakes
) -> None:
    result = runner.invoke(main, ["backfill", "--json", "--rate", "1000"])
    assert result.exit_code == 0, result.output
    sent = fakes.publisher.sent
    assert [(topic, key) for topic, key, _ in sent] == [("pixelpipe.uploads", b"img-e1"),
                                                        ("pixelpipe.uploads", b"img-e3")]
    assert [(b["event_id"], b["priority"], b["supersedes"]) for _, _, b in sent] == [
        ("e1", "low", "2@1"), ("e3", "low", "2@3")]
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(x["event_id"], x["action"], x["worst"], x["offset"]) for x in lines] == [
        ("e1", "published", "basic", 101), ("e3", "published", "emergency", 102)]
    assert result.stderr.startswith("pixelpipe: backfilled 2 upload(s) to pixelpipe.uploads")
    since = fakes.planned[0]["since"]
    assert abs(datetime.now(UTC) - timedelta(hours=24) - since) < timedelta(minutes=1)


def test_level_and_since_and_limit_reach_the_plan(runner: CliRunner, fakes: Fakes) -> None:
    result = runner.invoke(main, ["backfill", "--level", "cached_only", "--since", "2h",
                                  "--limit", "5", "--rate", "1000"])
    assert result.exit_code == 0, result.output
    (planned,) = fakes.planned
    assert planned["level"] == "cached_only" and planned["limit"] == 5
    assert abs(datetime.now(UTC) - timedelta(hours=2) - planned["since"]) < timedelta(minutes=1)
    assert [b["event_id"] for _, _, b in fakes.publisher.sent] == ["e3"]
    assert "skipped: milder 1" in result.stderr
    iso = runner.invoke(main, ["backfill", "--since", "2026-11-28T00:00:00Z", "--dry-run"])
    assert iso.exit_code == 0, iso.output
    assert fakes.planned[-1]["since"] == datetime(2026, 11, 28, tzinfo=UTC)


def test_dry_run_prints_the_plan_and_publishes_nothing(runner: CliRunner, fakes: Fakes) -> None:
    FakeReader.status_now = status("basic", override="basic")  # not even asked
    result = runner.invoke(main, ["backfill", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert fakes.opened == [{"dry_run": True}] and FakeReader.opened == 0
    assert fakes.publisher.sent == []
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["completed", "at", "event", "id", "image", "level", "worst",
                              "supersedes", "upload"]
    assert [row.split()[2:] for row in rows] == [
        ["e1", "img-e1", "basic", "basic", "2@1", "found"],
        ["e3", "img-e3", "emergency", "emergency", "2@3", "found"]]
    assert "dry run: would backfill 2 upload(s)" in result.stderr
    assert result.stderr.rstrip().endswith("nothing published")
    as_json = runner.invoke(main, ["backfill", "--dry-run", "--json"])
    assert [orjson.loads(x)["action"] for x in as_json.stdout.splitlines()] == [
        "would_publish", "would_publish"]


def test_an_upload_gone_from_the_topic_is_reported_and_exits_1(
    runner: CliRunner, fakes: Fakes
) -> None:
    del fakes.originals["e1"]
    result = runner.invoke(main, ["backfill", "--json", "--rate", "1000"])
    assert result.exit_code == 1, result.output
    assert [b["event_id"] for _, _, b in fakes.publisher.sent] == ["e3"]
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(x["event_id"], x["action"]) for x in lines] == [("e1", "not_found"),
                                                            ("e3", "published")]
    assert "1 not found (the upload is no longer on the uploads topic)" in result.stderr
    dry = runner.invoke(main, ["backfill", "--dry-run"])
    assert dry.exit_code == 0 and "not found" in dry.stdout


def test_nothing_degraded_is_nothing_to_do(runner: CliRunner, fakes: Fakes) -> None:
    FakeReader.status_now = status("basic", override="basic")
    fakes.records = [seen("e1", 1, "basic"), seen("e1", 4, None)]
    result = runner.invoke(main, ["backfill"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and FakeReader.opened == 0
    assert "nothing to backfill" in result.stderr and "already_upgraded 1" in result.stderr


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--level", "degraded"],
                                  ["--rate", "0"], ["--limit", "-1"]])
def test_bad_options_are_usage_errors(runner: CliRunner, fakes: Fakes, args: list[str]) -> None:
    result = runner.invoke(main, ["backfill", *args])
    assert result.exit_code == 2, result.output
    assert fakes.opened == []
