"""Replay dead letters, once each: the async API behind ``pixelpipe dlq replay``.

    async with Replayer(settings) as replayer:
        plan = await replayer.plan(LetterFilter(codes=("source_missing",)))
        report = await replayer.replay(plan, rate=50)

**The replay ledger and the crash window.** Each replay is recorded in the compacted topic
``<prefix>.dlq.replays``, keyed by the letter (``<event_id>#<replays>``), in two steps around the
publish, each acknowledged by Kafka (``acks=all``, idempotent producer) before the next:

1. ``publishing`` (the intent), *before* the replayed record is published;
2. the replayed upload (or retry envelope) itself;
3. ``published``, with the partition and offset the record landed at.

We record *before* publishing because the two failure modes are not equal. Record-after-publish
loses the record when the process dies between the two: the letter looks untouched, a re-run
replays it again, and ``stats`` never knew. Record-before-publish without the intent state loses
the *event*: the ledger would say "replayed" for an upload that was never sent. With the intent,
a crash anywhere leaves the letter ``in_doubt`` (visible in ``stats``/``show``), never lost:
the next run looks for the replayed record in the target topic from the intent's timestamp on
(by its ``pixelpipe-event-id`` and ``pixelpipe-replays`` headers) and, if it is there, only
confirms it; otherwise it publishes it (with the same replay count). So an interrupted run,
even by ``kill -9``, run again ends with each letter replayed exactly once on the topic. The
one residual duplicate is a record published but not yet visible to that scan (a broker that
acknowledged it and then lost it from every replica); a duplicate is harmless anyway: the
upload keeps its ``event_id`` and output keys, and consumers drop repeated event ids.
Kafka transactions would make the two writes atomic, but the workers read uncommitted data
(faust's default), so an aborted replay could still be processed: no gain for the cost.

A replay run is paced by ``rate`` (events per second, an upper bound on the whole run) and works
in batches (one tenth of a second's worth, at most 100): three acknowledged round trips per
batch, not per letter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable, ReplayRefused
from pixelpipe.policy.deadletters import LetterFilter, ReplayRecord, StoredLetter, Target
from pixelpipe.policy.replay_plan import ReplayPlan, next_replays, plan_replay, replay_message
from pixelpipe.schemas import utc_now_iso
from pixelpipe.streams.admin import declare_replay_ledger
from pixelpipe.streams.client import Publisher
from pixelpipe.streams.deadletter_reader import DEFAULT_TIMEOUT_S, DeadLetterReader
from pixelpipe.streams.topics import dlq_replays_topic, retry_topic, uploads_topic

MAX_BATCH = 100
#: the replayed record's Kafka timestamp is at or after its intent's; this absorbs clock steps
SCAN_SLACK_MS = 5_000


@dataclass
class ReplayReport:
    """What a run did. ``rate`` is replayed letters per second over the whole run."""

    planned: int
    to: Target
    topic: str
    dry_run: bool
    run_id: str
    #: letters published by this run
    replayed: int = 0
    #: in-doubt letters found already published by an interrupted run: confirmed, not re-sent
    recovered: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    event_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.replayed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "planned": self.planned, "replayed": self.replayed, "recovered": self.recovered,
            "to": self.to, "topic": self.topic, "dry_run": self.dry_run, "run_id": self.run_id,
            "skipped": self.skipped, "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 2),
        }


class Replayer:
    """Plans and runs replays of dead letters, recorded in the replay ledger.

    ``settings``: default ``Settings.from_env()`` (``PIXELPIPE_KAFKA``, ``PIXELPIPE_TOPIC_PREFIX``,
    ``PIXELPIPE_RETRY_TIERS`` for ``to="retry"``). ``dry_run``: read only; neither the ledger
    topic nor anything else is created or written. ``timeout_s``: broker wait before
    ``BrokerUnavailable`` (default 10 s).
    """

    def __init__(
        self, settings: Settings | None = None, *, dry_run: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.dry_run = dry_run
        self.reader = DeadLetterReader(self.settings, timeout_s=timeout_s)
        self._timeout_s = timeout_s
        self._publisher: Publisher | None = None

    async def __aenter__(self) -> Replayer:
        await self.reader.__aenter__()
        try:
            if not self.dry_run:
                await declare_replay_ledger(self.settings, timeout_s=self._timeout_s)
                publisher = Publisher(self.settings, declare_topics=False)
                try:
                    await asyncio.wait_for(publisher.start(), self._timeout_s)
                except TimeoutError as exc:
                    await publisher.stop()
                    raise BrokerUnavailable(
                        f"cannot reach Kafka at {self.settings.bootstrap_servers} (timeout)"
                    ) from exc
                self._publisher = publisher
        except BaseException:
            await self.reader.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        await self.reader.__aexit__(et, e, tb)

    async def plan(
        self, where: LetterFilter | None = None, *, to: Target = "uploads", again: bool = False,
        force: bool = False, limit: int | None = None,
    ) -> ReplayPlan:
        """The letters a run would replay (see ``plan_replay``); ``ReplayRefused`` if refused."""
        selected = await self.reader.letters(where)
        return plan_replay(selected, to=to, again=again, force=force, limit=limit)

    def target_topic(self, to: Target) -> str:
        prefix = self.settings.topic_prefix
        if to == "uploads":
            return uploads_topic(prefix)
        return self._first_tier()[1]

    def _first_tier(self) -> tuple[str, str]:
        if not self.settings.retry_tiers:
            raise ReplayRefused("no retry tier is configured (PIXELPIPE_RETRY_TIERS)")
        name = self.settings.retry_tiers[0][0]
        return name, retry_topic(name, self.settings.topic_prefix)

    async def replay(
        self, plan: ReplayPlan, *, rate: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> ReplayReport:
        """Replay every letter of ``plan``, at most ``rate`` per second; ``on_progress(n)``
        is called with the number of letters done after each batch. In a dry run, nothing is
        written and the report counts what would have been replayed."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        topic = self.target_topic(plan.to)
        report = ReplayReport(
            planned=len(plan.letters), to=plan.to, topic=topic, dry_run=self.dry_run,
            run_id=plan.run_id, skipped=dict(plan.skipped),
        )
        letters = list(plan.letters)
        recovered = await self._recover_in_doubt([s for s in letters if s.status == "in_doubt"])
        if recovered:
            report.recovered = len(recovered)
            letters = [s for s in letters if s.key not in recovered]
        done = report.recovered
        if on_progress is not None and done:
            on_progress(done)
        if self.dry_run:
            report.replayed = len(letters)
            report.event_ids = [s.event_id for s in letters]
            return report
        batch_size = MAX_BATCH if rate is None else max(1, min(MAX_BATCH, int(rate / 10)))
        started = time.monotonic()
        for i in range(0, len(letters), batch_size):
            batch = letters[i : i + batch_size]
            await self._replay_batch(batch, plan)
            report.replayed += len(batch)
            report.event_ids.extend(s.event_id for s in batch)
            done += len(batch)
            if on_progress is not None:
                on_progress(done)
            if rate is not None:
                # Sleep *after* the batch: n letters never take less than n / rate seconds.
                pause = started + report.replayed / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
        report.elapsed_s = time.monotonic() - started
        return report

    # ----------------------------------------------------------------- steps

    async def _replay_batch(self, batch: list[StoredLetter], plan: ReplayPlan) -> None:
        publisher = self._require_publisher()
        ledger = dlq_replays_topic(self.settings.topic_prefix)
        now = utc_now_iso()
        intents = [self._record(s, plan, now) for s in batch]
        # 1. the intent, acknowledged before anything is published
        await asyncio.gather(*(
            publisher.send_raw(ledger, r.key.encode(), r.encode()) for r in intents
        ))
        # 2. the replayed records
        first_tier = self._first_tier() if plan.to == "retry" else None
        messages = [
            replay_message(s.letter, r.replays, to=plan.to,
                           uploads_topic=uploads_topic(self.settings.topic_prefix),
                           first_tier=first_tier, now_iso=now)
            for s, r in zip(batch, intents, strict=True)
        ]
        landed = await asyncio.gather(*(
            publisher.send_raw(m.topic, m.key, m.value, m.headers) for m in messages
        ))
        # 3. the confirmation
        await asyncio.gather(*(
            publisher.send_raw(
                ledger, r.key.encode(),
                replace(r, state="published", partition=p, offset=o).encode(),
            )
            for r, (p, o) in zip(intents, landed, strict=True)
        ))

    def _record(self, stored: StoredLetter, plan: ReplayPlan, now: str) -> ReplayRecord:
        previous = stored.replay
        in_doubt = previous is not None and previous.state == "publishing"
        return ReplayRecord(
            event_id=stored.event_id,
            letter_replays=stored.letter.replays,
            state="publishing",
            # an in-doubt replay is finished with the count it started with: the same replay
            replays=previous.replays if in_doubt and previous else next_replays(stored),
            times=(previous.times if in_doubt else previous.times + 1) if previous else 1,
            to=plan.to,
            topic=self.target_topic(plan.to),
            run_id=plan.run_id,
            replayed_at=now,
            code=stored.letter.error.code,
            dead_lettered_at=stored.letter.dead_lettered_at,
        )

    async def _recover_in_doubt(self, in_doubt: list[StoredLetter]) -> set[str]:
        """Confirm the in-doubt letters whose replayed record is already in their target topic;
        return their keys. The others stay in the plan and are published again."""
        by_topic: dict[str, list[ReplayRecord]] = {}
        for stored in in_doubt:
            if stored.replay is not None:
                by_topic.setdefault(stored.replay.topic, []).append(stored.replay)
        recovered: set[str] = set()
        for topic, records in by_topic.items():
            since = min(r.intent_timestamp_ms or 0 for r in records) - SCAN_SLACK_MS
            wanted = {(r.event_id, r.replays) for r in records}
            found = await self.reader.find_replayed(topic, max(0, since), wanted)
            for record in records:
                where = found.get((record.event_id, record.replays))
                if where is None:
                    continue
                recovered.add(record.key)
                if not self.dry_run:
                    await self._require_publisher().send_raw(
                        dlq_replays_topic(self.settings.topic_prefix), record.key.encode(),
                        replace(record, state="published", partition=where[0],
                                offset=where[1]).encode(),
                    )
        return recovered

    def _require_publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("use 'async with Replayer(...)' (and not dry_run) to replay")
        return self._publisher
