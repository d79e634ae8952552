"""Routing rules after a failed attempt, without a broker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pixelpipe.errors import (
    ChecksumMismatch,
    CorruptImage,
    MalformedEvent,
    PixelpipeError,
    StorageUnavailable,
    WorkerCrashed,
)
from pixelpipe.policy.routing import DeadRoute, RetryPolicy, RetryRoute, route_failure
from pixelpipe.schemas import (
    Origin,
    RenditionRequest,
    RetryEnvelope,
    SourceRef,
    UploadEvent,
    parse_time,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(tiers=(("5s", 5.0), ("30s", 30.0), ("2m", 120.0), ("10m", 600.0)),
                     low_priority_retries=2, max_age_s=3600)
ORIGIN = Origin("pixelpipe.uploads", 3, 41)


def upload(priority: str = "normal", deadline: str | None = None,
           submitted: datetime = NOW) -> UploadEvent:
    return UploadEvent(
        event_id="e1", image_id="i1",
        source=SourceRef(uri="blob://sources/aa/x", sha256="a" * 64, size=1),
        renditions=(RenditionRequest(name="t", preset="thumbnail"),),
        submitted_at=submitted.isoformat().replace("+00:00", "Z"),
        priority=priority,  # type: ignore[arg-type]
        deadline=deadline,
    )


def route(error: PixelpipeError, event: UploadEvent | None, history: RetryEnvelope | None = None,
          tier: str = "main", now: datetime = NOW) -> RetryRoute | DeadRoute:
    return route_failure(
        error, upload=event, original={"event_id": "e1"}, event_id="e1",
        origin=Origin("pixelpipe.retry.x", 0, 9) if history else ORIGIN, tier=tier,
        history=history, policy=POLICY, now=now, rng=random.Random(1),
    )


def walk(error: PixelpipeError, event: UploadEvent) -> list[RetryRoute | DeadRoute]:
    """Fail every attempt with ``error``; return each route until a dead letter."""
    routes: list[RetryRoute | DeadRoute] = []
    history, tier, now = None, "main", NOW
    while True:
        step = route(error, event, history, tier, now)
        routes.append(step)
        if isinstance(step, DeadRoute):
            return routes
        history, tier = step.envelope, step.tier
        now = parse_time(step.envelope.due_at)


@pytest.mark.parametrize("error", [CorruptImage("x"), MalformedEvent("x")])
def test_non_retryable_errors_are_dead_on_the_first_attempt(error: PixelpipeError) -> None:
    step = route(error, upload() if error.code != "malformed_event" else None)
    assert isinstance(step, DeadRoute)
    assert step.letter.error.code == error.code
    assert [a.tier for a in step.letter.attempts] == ["main"]
    assert step.letter.origin == ORIGIN


def test_a_retryable_error_walks_every_tier_in_order_then_is_exhausted() -> None:
    routes = walk(StorageUnavailable("disk"), upload())
    assert [r.tier for r in routes if isinstance(r, RetryRoute)] == ["5s", "30s", "2m", "10m"]
    final = routes[-1]
    assert isinstance(final, DeadRoute)
    assert final.letter.error.code == "retries_exhausted"
    assert [a.tier for a in final.letter.attempts] == ["main", "5s", "30s", "2m", "10m"]
    assert final.letter.origin == ORIGIN  # the first failure's position, not the last tier's
    assert final.letter.first_failed_at == final.letter.attempts[0].at


def test_low_priority_gets_fewer_retries() -> None:
    routes = walk(WorkerCrashed("oom"), upload(priority="low"))
    assert [r.tier for r in routes if isinstance(r, RetryRoute)] == ["5s", "30s"]
    assert isinstance(routes[-1], DeadRoute)
    assert routes[-1].letter.error.code == "retries_exhausted"


def test_due_time_is_delay_plus_at_most_a_little_jitter_never_less() -> None:
    for seed in range(50):
        step = route_failure(
            StorageUnavailable("x"), upload=upload(), original={}, event_id="e1", origin=ORIGIN,
            tier="main", history=None, policy=POLICY, now=NOW, rng=random.Random(seed),
        )
        assert isinstance(step, RetryRoute)
        delay = (parse_time(step.envelope.due_at) - NOW).total_seconds()
        assert 5.0 <= delay <= 5.5 + 0.001


def test_checksum_mismatch_is_retried_once_only() -> None:
    routes = walk(ChecksumMismatch("bytes differ"), upload())
    assert len(routes) == 2 and isinstance(routes[0], RetryRoute)
    assert isinstance(routes[1], DeadRoute)
    assert routes[1].letter.error.code == "checksum_mismatch"


def test_a_passed_deadline_is_deadline_exceeded() -> None:
    event = upload(deadline=(NOW - timedelta(seconds=1)).isoformat())
    step = route(StorageUnavailable("x"), event)
    assert isinstance(step, DeadRoute)
    assert step.letter.error.code == "deadline_exceeded"


def test_a_retry_that_would_be_due_after_the_deadline_is_not_scheduled() -> None:
    event = upload(deadline=(NOW + timedelta(seconds=3)).isoformat())
    step = route(StorageUnavailable("x"), event)
    assert isinstance(step, DeadRoute)
    assert step.letter.error.code == "deadline_exceeded"


def test_an_upload_older_than_max_age_is_deadline_exceeded() -> None:
    step = route(StorageUnavailable("x"), upload(submitted=NOW - timedelta(hours=2)))
    assert isinstance(step, DeadRoute)
    assert step.letter.error.code == "deadline_exceeded"
