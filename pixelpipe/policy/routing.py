"""Where a failed attempt goes next: a retry tier with a due time, or the dead-letter topic.

Pure decisions (no I/O), so every rule is unit-tested without a broker:

- a non-retryable error (the input's fault) -> dead letter at once, never a tier;
- ``checksum_mismatch`` is retried once (a blob may still have been landing), then dead;
- past the upload's ``deadline`` or older than ``max_age`` -> ``deadline_exceeded``; also when
  the next attempt would only be due after the deadline (no point waiting for a sure miss);
- otherwise the next tier (``5s``, ``30s``, ``2m``, ``10m`` by default); a ``low`` priority upload
  gets ``low_priority_retries`` of them; past the last -> ``retries_exhausted``.

The due time is the tier's delay plus a little jitter (up to 10 % of the delay, at most 1 s),
so a burst of failures does not come back as a burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from pixelpipe.errors import (
    BreakerOpen,
    ChecksumMismatch,
    DeadlineExceeded,
    PixelpipeError,
    RetriesExhausted,
)
from pixelpipe.schemas import (
    AttemptRecord,
    DeadLetter,
    ErrorInfo,
    Origin,
    RetryEnvelope,
    UploadEvent,
    iso,
    parse_time,
)

MAIN_TIER = "main"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    tiers: tuple[tuple[str, float], ...]
    low_priority_retries: int
    max_age_s: float

    def allowed_retries(self, upload: UploadEvent) -> int:
        if upload.priority == "low":
            return min(self.low_priority_retries, len(self.tiers))
        return len(self.tiers)


@dataclass(frozen=True, slots=True)
class RetryRoute:
    tier: str
    envelope: RetryEnvelope


@dataclass(frozen=True, slots=True)
class DeadRoute:
    letter: DeadLetter
    error: PixelpipeError


Route = RetryRoute | DeadRoute


def route_failure(
    error: PixelpipeError,
    *,
    upload: UploadEvent | None,
    original: dict[str, object],
    event_id: str,
    origin: Origin,
    tier: str,
    history: RetryEnvelope | None,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random | None = None,
) -> Route:
    """Decide the next step after ``error`` on the attempt made from ``tier``."""
    now_iso = iso(now)
    if isinstance(error, BreakerOpen) and upload is not None:
        return _defer(error, upload, original, event_id, origin, history, policy, now)
    attempts = (*(history.attempts if history else ()), AttemptRecord(now_iso, error.code, tier))
    first_failed_at = history.first_failed_at if history else now_iso
    first_origin = history.origin if history else origin

    def dead(final: PixelpipeError) -> DeadRoute:
        return DeadRoute(
            DeadLetter(
                event_id=event_id,
                original=original,
                error=ErrorInfo(
                    code=final.code,
                    class_=type(final).__name__,
                    message=str(final)[:2000],
                    processor=final.processor,
                    retryable=final.retryable,
                ),
                attempts=attempts,
                origin=first_origin,
                first_failed_at=first_failed_at,
                dead_lettered_at=now_iso,
                replays=upload.replays if upload else 0,
                image_id=upload.image_id if upload else None,
            ),
            final,
        )

    if not error.retryable or upload is None:
        return dead(error)
    if isinstance(error, ChecksumMismatch) and any(
        a.code == ChecksumMismatch.code for a in attempts[:-1]
    ):
        return dead(error)
    deadline = _deadline(upload, policy)
    if now >= deadline:
        return dead(DeadlineExceeded(
            f"deadline {iso(deadline)} passed after {len(attempts)} attempt(s); last error "
            f"{error.code}: {error}", processor=error.processor,
        ))
    used = len(attempts) - 1  # retries already spent
    if used >= policy.allowed_retries(upload):
        return dead(RetriesExhausted(
            f"{len(attempts)} attempts failed ({upload.priority} priority gets "
            f"{policy.allowed_retries(upload)} retries); last error {error.code}: {error}",
            processor=error.processor,
        ))
    name, delay = policy.tiers[used]
    jitter = (rng or random).uniform(0, min(delay * 0.1, 1.0))
    due = now + timedelta(seconds=delay + jitter)
    if due > deadline:
        return dead(DeadlineExceeded(
            f"the next attempt ({name} tier) would be due after the deadline {iso(deadline)}; "
            f"last error {error.code}: {error}", processor=error.processor,
        ))
    return RetryRoute(
        tier=name,
        envelope=RetryEnvelope(
            event_id=event_id,
            original=original,
            attempts=attempts,
            origin=first_origin,
            first_failed_at=first_failed_at,
            due_at=iso(due),
            tier=name,
            image_id=upload.image_id,
        ),
    )


def _deadline(upload: UploadEvent, policy: RetryPolicy) -> datetime:
    by_age = parse_time(upload.submitted_at) + timedelta(seconds=policy.max_age_s)
    if upload.deadline is None:
        return by_age
    return min(by_age, parse_time(upload.deadline))


def _defer(
    error: BreakerOpen, upload: UploadEvent, original: dict[str, object], event_id: str,
    origin: Origin, history: RetryEnvelope | None, policy: RetryPolicy, now: datetime,
) -> Route:
    """An open breaker: back to the tier the upload is in (the first from the main topic),
    with no attempt spent and the history unchanged; the deadline still holds."""
    deadline = _deadline(upload, policy)
    attempts = history.attempts if history else ()
    if now >= deadline or not policy.tiers:
        final = DeadlineExceeded(
            f"deadline {iso(deadline)} passed while the breaker of {error.processor} was open",
            processor=error.processor,
        )
        return route_failure(final, upload=upload, original=original, event_id=event_id,
                             origin=origin, tier="deferred", history=history, policy=policy,
                             now=now)
    name, delay = policy.tiers[max(0, len(attempts) - 1)]
    due = now + timedelta(seconds=delay)
    now_iso = iso(now)
    return RetryRoute(
        tier=name,
        envelope=RetryEnvelope(
            event_id=event_id,
            original=original,
            attempts=attempts,
            origin=history.origin if history else origin,
            first_failed_at=history.first_failed_at if history else now_iso,
            due_at=iso(min(due, deadline)),
            tier=name,
            image_id=upload.image_id,
            deferrals=(history.deferrals if history else 0) + 1,
        ),
    )
