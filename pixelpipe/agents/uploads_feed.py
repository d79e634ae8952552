"""The uploads feed: our own consumer owns the uploads offsets; a faust agent does the work.

Why not let faust consume ``uploads`` (the first design): faust's commit bookkeeping passes
records it fetched and threw away at a rebalance. Traced in issue 9: the stream queue is
cleared when flow control resumes after the seek on assignment, and the next record looks like
an offset jump, so ``Consumer._add_gap`` covers the dropped ones and the next commit passes
them; a commit during a revoke skips the hole check; ``_new_offset`` lets a one-record hole at
the head through. A takeover test lost 55 of 1,200 uploads. So the offsets of ``uploads`` are ours:

- a plain aiokafka consumer in group ``<app id>.uploads`` (``Settings.uploads_group``), auto
  commit off, reads the records and tracks each in an ``OffsetLedger``;
- each record is handed to the process agent through a ``HandoffChannel``: a faust channel
  whose queue flow control never clears, carrying plain objects (not faust events, so faust
  never acks or skips them);
- the agent reports back when the record's outcome is acknowledged by Kafka; only then can the
  ledger's commit point pass it, and a commit goes out every second and on every revoke;
- on a revoke the feed waits (bounded) for the revoked partitions' records in flight, commits
  what is settled and drops the rest: the new owner reads them again (duplicates, never loss);
- a head that never settles (a hand-off the agent never picked up, or work stuck past every
  timeout) is a hole: logged at warning, counted, and the partition is re-read from it, so the
  commit never waits forever for a record that will not come;
- the free hand-off slots are shared round-robin over the owned partitions (``fair_shares``):
  after a takeover every partition's backlog moves, not one partition's after another's;
- the feed starts with the app, not after faust's first rebalance (``start_with_app``): after
  a kill -9 a replacement takes uploads as soon as its own group lets it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from pixelpipe.agents import metrics
from pixelpipe.agents.app import start_with_app
from pixelpipe.config import Settings
from pixelpipe.policy.ordering import OffsetLedger, Ticket
from pixelpipe.streams import kafka
from pixelpipe.streams.topics import uploads_topic

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
#: how often the owned partitions' log ends are asked of the broker, and how long it may take
LOG_END_INTERVAL_S = 1.0
LOG_END_TIMEOUT_S = 2.0
LOG_END_WARN_AFTER = 5
#: a hand-off is picked up at once (the channel holds at most ``max_inflight``); far past this,
#: it was lost on the way and the partition is re-read
START_WITHIN_S = 60.0
#: how long a revoke waits for the revoked partitions' records in flight before dropping them
REVOKE_DRAIN_S = 20.0


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


_P = TypeVar("_P", bound=_Ordered)


def fair_shares(partitions: Iterable[_P], free: int, after: _P | None) -> list[tuple[_P, int]]:
    """Split ``free`` hand-off slots over ``partitions`` round-robin: in partition order,
    starting with the first partition after ``after`` (the one served last) and wrapping
    around, each gets ``free // n`` slots and the first ``free % n`` of them one more.
    Partitions whose share is 0 are left out. With one slot at a time, successive calls (each
    ``after`` the partition just served) visit the partitions in turn."""
    order = sorted(set(partitions))
    if free <= 0 or not order:
        return []
    if after is not None:
        start = bisect.bisect_right(order, after)
        order = order[start:] + order[:start]
    base, extra = divmod(free, len(order))
    shares = [(tp, base + (1 if i < extra else 0)) for i, tp in enumerate(order)]
    return [(tp, share) for tp, share in shares if share > 0]


class HandoffChannel(faust.Channel[Any]):
    """A faust channel whose queue is never cleared behind our back.

    faust's channels use a ``FlowControlQueue(clear_on_resume=True)``: every rebalance of the
    faust consumer empties it. Records handed to the agent must not vanish, so this channel's
    queues are plain bounded queues; and ``put`` refuses when nobody iterates the channel
    (faust would drop the value silently).
    """

    @property
    def queue(self) -> ThrowableQueue[Any]:
        if self._queue is None:
            # its own flow control, never suspended: the app's would clear it on resume
            self._queue = ThrowableQueue(
                maxsize=self.maxsize or 0,
                flow_control=FlowControlEvent(initially_suspended=False),
                clear_on_resume=False,
            )
        return self._queue

    @property
    def has_reader(self) -> bool:
        root = self._root if self._root is not None else self
        return bool(root._subscribers)

    async def put(self, value: Any) -> None:
        if not self.has_reader:
            raise RuntimeError("no agent is reading the hand-off channel")
        await super().put(value)


@dataclass(frozen=True, slots=True)
class Handoff:
    """One upload record on its way to the agent, with the ticket that settles it."""

    record: Any  # aiokafka ConsumerRecord
    ticket: Ticket[TopicPartition]
    #: wall-clock time (s) the feed read it (``agents.stages``: kafka and handoff)
    fetched_at: float = 0.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, feed: UploadFeed) -> None:
        self.feed = feed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.feed.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.feed.on_assigned(set(assigned))


class UploadFeed:
    """Consumes ``uploads``, hands records to the process agent, commits what is settled."""

    def __init__(
        self, settings: Settings, channel: HandoffChannel, *, max_inflight: int,
        finish_within_s: float, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.max_inflight = max_inflight
        self.finish_within_s = finish_within_s
        self.clock = clock
        self.topic = uploads_topic(settings.topic_prefix)
        self.ledger: OffsetLedger[TopicPartition] = OffsetLedger()
        self.consumer: AIOKafkaConsumer | None = None
        self.joined = False
        self._capacity = asyncio.Event()
        #: per partition: the offset after the last record handed out (for lag)
        self._next_offset: dict[TopicPartition, int] = {}
        #: per partition: the log end the broker last answered (for lag); see _learn_log_ends
        self._log_end: dict[TopicPartition, int] = {}
        self._log_end_misses = 0
        #: record timestamps (ms) of what is handed out and not settled (for lag in seconds)
        self._timestamps: dict[Ticket[TopicPartition], int] = {}
        self._commit_lock = asyncio.Lock()
        #: the partition records were last handed out of: the round-robin goes on after it
        self._served_last: TopicPartition | None = None

    # ------------------------------------------------------------ agent side

    def begin(self, handoff: Handoff) -> bool:
        """The agent picked ``handoff`` up; False: stale (revoked meanwhile), skip it."""
        if self.ledger.start(handoff.ticket, self.clock()):
            return True
        self._stale(handoff.ticket, "revoked before it started")
        return False

    def settled(self, handoff: Handoff) -> None:
        """The outcome of ``handoff`` is acknowledged by Kafka: its offset may be committed."""
        self._timestamps.pop(handoff.ticket, None)
        if not self.ledger.finish(handoff.ticket):
            self._stale(handoff.ticket, "revoked while it ran; the new owner redoes it")
        self._capacity.set()

    def _stale(self, ticket: Ticket[TopicPartition], why: str) -> None:
        # Already counted (and logged at warning) where the ledger let it go: on_revoked or
        # _recover_holes. Counting it again here would report each record twice.
        self._timestamps.pop(ticket, None)
        tp = ticket.partition
        log.info("upload %s[%d]@%d not settled here: %s", tp.topic, tp.partition,
                 ticket.offset, why)

    # ------------------------------------------------------------ consumer side

    async def run(self) -> None:
        consumer = kafka.consumer(
            self.settings, group=self.settings.uploads_group, role="uploads",
            max_poll_records=self.max_inflight,
            # heartbeats run on this loop, which the pool keeps free; a short session lets a
            # new worker take over a killed one's partitions within ~10 s
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=int(max(300.0, self.finish_within_s * 2) * 1000),
            # fetches must return promptly so revokes and commits are never held up
            fetch_max_wait_ms=200,
        )
        self.consumer = consumer
        while not self.channel.has_reader:  # the agent's actor subscribes when it starts
            await asyncio.sleep(0.05)
        await self._adopt_legacy_offsets()
        await kafka.start(consumer, self.settings)
        consumer.subscribe([self.topic], listener=_Listener(self))
        committer = asyncio.create_task(self._commit_loop())
        ends = asyncio.create_task(self._log_end_loop())
        try:
            while True:
                await self._step(consumer)
        finally:
            committer.cancel()
            ends.cancel()
            # both stopped before the consumer is: neither is left mid-request on it
            await asyncio.gather(committer, ends, return_exceptions=True)
            await self._drain_and_commit(self.ledger.partitions, REVOKE_DRAIN_S)
            await consumer.stop()

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        free = self.max_inflight - self.ledger.in_flight()
        if free <= 0:
            await self._capacity_changed(1.0)
            return
        taken = await self._take_fairly(consumer, free)
        if not taken:
            # Nothing buffered on any owned partition: wait for the first record of any, then
            # share what is left of the free slots (a fetch may have brought several).
            taken = await self._hand_out(await consumer.getmany(timeout_ms=500, max_records=1))
            if taken and free > taken:
                await self._take_fairly(consumer, free - taken)
        metrics.UPLOADS_IN_FLIGHT.set(self.ledger.in_flight())

    async def _take_fairly(self, consumer: AIOKafkaConsumer, free: int) -> int:
        """Hand out up to ``free`` records already buffered by the consumer, round-robin over
        the owned partitions (``fair_shares``); return how many records were taken.

        Asked without partitions, aiokafka's fetcher returns the first buffered partition's
        records up to ``max_records`` before it looks at the next one
        (``Fetcher.fetched_records``), so after a takeover one partition's whole backlog went
        first. Here each partition is asked for its share with ``timeout_ms=0`` (only what is
        buffered: no waiting); a partition that returns less than its share has nothing more
        buffered and drops out, the slots it left are shared again among the others.
        """
        taken = 0
        maybe_more = set(self.ledger.partitions)
        while free > taken and maybe_more:
            for tp, share in fair_shares(maybe_more, free - taken, self._served_last):
                batches = await consumer.getmany(tp, timeout_ms=0, max_records=share)
                taken += await self._hand_out(batches)
                if len(batches.get(tp, ())) < share:
                    maybe_more.discard(tp)
        return taken

    async def _hand_out(self, batches: dict[TopicPartition, list[Any]]) -> int:
        """Track and hand over every record in ``batches``; return how many it held.

        Every record the consumer returned must be tracked here: the consumer's position has
        moved past it, and the ledger commits over offsets it never saw (gaps are allowed),
        so a record dropped on the floor would be committed unprocessed.
        """
        fetched_at = time.time()
        count = 0
        for tp, records in batches.items():
            count += len(records)
            if records:
                self._served_last = tp
            for record in records:
                ticket = self.ledger.track(tp, record.offset, self.clock())
                if ticket is None:
                    continue  # fetched across a revoke or a re-seek: read again later
                self._next_offset[tp] = record.offset + 1
                if record.timestamp is not None and record.timestamp >= 0:
                    self._timestamps[ticket] = record.timestamp
                while not self.channel.has_reader:  # the agent's actor is restarting
                    await asyncio.sleep(0.05)
                await self.channel.put(Handoff(record, ticket, fetched_at))
        return count

    async def _adopt_legacy_offsets(self) -> None:
        """Upgrading from a version whose faust consumer read uploads in group ``app_id``:
        start this group where that one committed, not from the beginning of the topic.

        Only when this group has committed nothing on uploads yet. If it fails, the group
        starts at the earliest offset: every upload is processed again (duplicates, no loss).
        """
        admin = kafka.admin(self.settings)
        try:
            await kafka.start(admin, self.settings)
            mine = await admin.list_consumer_group_offsets(self.settings.uploads_group)
            if any(tp.topic == self.topic and meta.offset >= 0 for tp, meta in mine.items()):
                return
            legacy = await admin.list_consumer_group_offsets(self.settings.app_id)
        except kafka.FAILURES as exc:
            log.warning("could not look up legacy uploads offsets (%r); starting fresh", exc)
            return
        finally:
            await admin.close()
        offsets = {tp: meta.offset for tp, meta in legacy.items()
                   if tp.topic == self.topic and meta.offset >= 0}
        if not offsets:
            return
        seeder = kafka.consumer(self.settings, group=self.settings.uploads_group,
                                role="uploads-adopt")
        try:
            await kafka.start(seeder, self.settings)
            seeder.assign(list(offsets))
            await seeder.commit(offsets)
            log.warning("uploads group %s adopted the offsets group %s committed on %d "
                        "partitions (upgrade from a faust-consumed uploads topic)",
                        self.settings.uploads_group, self.settings.app_id, len(offsets))
        except kafka.FAILURES as exc:  # e.g. a worker joined first
            log.warning("could not adopt legacy uploads offsets (%r)", exc)
        finally:
            await seeder.stop()

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.ledger.assign(set(assigned))
        for tp in assigned:  # the consumer reads them from the committed offset again
            self._next_offset.pop(tp, None)
        self.joined = True
        log.info("uploads feed assigned %d partitions: %s", len(assigned),
                 ",".join(str(tp.partition) for tp in sorted(assigned)) or "-")

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before the group moves ``revoked`` elsewhere: settle and commit what we can."""
        await self._drain_and_commit(set(revoked), REVOKE_DRAIN_S)
        dropped = self.ledger.revoke(set(revoked))
        for tp in revoked:
            self._log_end.pop(tp, None)
        for offset in dropped[:20]:
            log.warning("uploads revoked with a record unsettled (offset %d); its new owner "
                        "reads it again", offset)
        if dropped:
            metrics.UPLOADS_DROPPED.labels("revoked").inc(len(dropped))
        self._capacity.set()

    async def _drain_and_commit(self, partitions: set[TopicPartition], timeout: float) -> None:
        deadline = self.clock() + timeout
        while self.ledger.in_flight(partitions) and self.clock() < deadline:
            await self._capacity_changed(0.1)
        await self.commit()

    async def _capacity_changed(self, timeout: float) -> None:
        """Wait until a record settles or is dropped (or ``timeout``)."""
        self._capacity.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._capacity.wait(), timeout=timeout)

    async def commit(self) -> None:
        """Commit every partition's settled prefix. A failed commit is retried next time."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = self.ledger.committable()
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                metrics.COMMIT_FAILURES.labels("uploads").inc()
                log.warning("uploads commit failed (%r); settled records will be committed "
                            "later or read again by their next owner", exc)
                return
            self.ledger.committed(offsets)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()
            self._recover_holes()
            await self._learn_positions()

    async def _learn_positions(self) -> None:
        """For lag: where the consumer reads next on owned partitions nothing was handed out
        of yet (a backlog not yet touched counts too). Bounded, never blocks the loop long."""
        consumer = self.consumer
        if consumer is None:
            return
        for tp in self.ledger.partitions - set(self._next_offset):
            with contextlib.suppress(TimeoutError, *kafka.CONNECT_ERRORS):
                self._next_offset[tp] = await asyncio.wait_for(consumer.position(tp), 0.5)

    async def _log_end_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_END_INTERVAL_S)
            try:
                await self._learn_log_ends()
            except Exception:  # a bug: said loudly, and the lag keeps being learnt
                log.exception("learning the uploads log ends failed")

    async def _learn_log_ends(self) -> None:
        """For lag: ask the broker where the owned partitions end (ListOffsets, one request
        per partition leader; aiokafka retries a retriable error until the time limit).

        The consumer's ``highwater`` is not enough: it is the log end of the partition's last
        fetch, and aiokafka's fetcher does not fetch a partition again while records of it are
        still buffered (``Fetcher._get_actions_per_node``). A worker behind a growing backlog
        always has records buffered, so uploads published since its last fetch went uncounted
        and the lag, the health it drives and the alerts on it all read low. Bounded: a broker
        that does not answer leaves the last known ends (said once it has not answered
        ``LOG_END_WARN_AFTER`` times in a row) and never holds the loop long.
        """
        consumer, owned = self.consumer, sorted(self.ledger.partitions)
        if consumer is None or not owned:
            return
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(owned), LOG_END_TIMEOUT_S)
        except kafka.CONNECT_ERRORS as exc:  # KafkaError, TimeoutError, OSError
            self._log_end_misses += 1
            if self._log_end_misses == LOG_END_WARN_AFTER:
                log.warning("the broker has not given the uploads log ends %d times in a row "
                            "(%r): this worker's lag counts up to the last ends it knows and "
                            "may read low", self._log_end_misses, exc)
            return
        if self._log_end_misses >= LOG_END_WARN_AFTER:
            log.info("the broker gives the uploads log ends again")
        self._log_end_misses = 0
        for tp, end in ends.items():
            if tp in self.ledger.partitions:
                self._log_end[tp] = end
        for tp in set(self._log_end) - self.ledger.partitions:
            del self._log_end[tp]

    def _end(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The newest log end known for ``tp``: the last fetch's or the broker's last answer."""
        ends = [e for e in (consumer.highwater(tp), self._log_end.get(tp)) if e is not None]
        return max(ends, default=None)

    def _recover_holes(self) -> None:
        consumer = self.consumer
        stalls = self.ledger.stalls(self.clock(), start_within_s=START_WITHIN_S,
                                    finish_within_s=self.finish_within_s)
        for stall in stalls:
            tp = stall.partition
            log.warning(
                "hole in %s[%d] at offset %d (%s for %.0f s): re-reading the partition from "
                "there so the commit does not wait forever", tp.topic, tp.partition,
                stall.offset, stall.reason, stall.waited_s,
            )
            metrics.UPLOADS_DROPPED.labels(f"hole_{stall.reason}").inc()
            head = self.ledger.reset(tp)
            if consumer is not None and head is not None:
                consumer.seek(tp, head)
                self._next_offset[tp] = head
        if stalls:
            self._capacity.set()

    def lag(self, now: float) -> tuple[int, float]:
        """(records, seconds) behind over the partitions this worker owns: records not yet
        settled plus those not yet fetched (up to the newest log end known), and the age of the
        oldest record handed out and not settled (``now`` is wall-clock seconds)."""
        for ticket in [t for t in self._timestamps if not self.ledger.is_current(t)]:
            del self._timestamps[ticket]  # revoked or re-read meanwhile
        per_partition = self.lag_by_partition(now).values()
        return (sum(records for records, _ in per_partition),
                max((seconds for _, seconds in per_partition), default=0.0))

    def lag_by_partition(self, now: float) -> dict[int, tuple[int, float]]:
        """``lag`` per owned partition: partition -> (records, seconds); read-only."""
        oldest: dict[int, int] = {}
        for ticket, stamp in self._timestamps.items():
            if self.ledger.is_current(ticket):
                number = ticket.partition.partition
                oldest[number] = min(stamp, oldest.get(number, stamp))
        out: dict[int, tuple[int, float]] = {}
        consumer = self.consumer
        for tp in self.ledger.partitions:
            behind = self.ledger.in_flight({tp})
            if consumer is not None:
                end, fetched = self._end(consumer, tp), self._next_offset.get(tp)
                if end is not None and fetched is not None:
                    behind += max(0, end - fetched)
            first = oldest.get(tp.partition)
            out[tp.partition] = (behind, 0.0 if first is None else max(0.0, now - first / 1000))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "group": self.settings.uploads_group,
            "assigned": sorted(tp.partition for tp in self.ledger.partitions),
            "in_flight": self.ledger.in_flight(),
        }


def register_upload_feed(
    app: faust.App, settings: Settings, *, finish_within_s: float,
) -> tuple[UploadFeed, HandoffChannel]:
    """The hand-off channel for the process agent, and the feed task that fills it."""
    channel = HandoffChannel(app, maxsize=settings.max_inflight * 2)
    feed = UploadFeed(settings, channel, max_inflight=settings.max_inflight,
                      finish_within_s=finish_within_s)

    # Not an @app.task: those start only after faust's own group has rebalanced, which after
    # a kill -9 waits out the dead member's faust session; the feed has its own group and
    # waits for the process agent's actor itself (``start_with_app``).
    async def uploads_feed() -> None:
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A worker that silently stopped reading uploads would look alive and do nothing.
            log.critical("the uploads feed failed; stopping the worker: %r", exc, exc_info=True)
            await app.crash(exc)

    start_with_app(app, uploads_feed)
    return feed, channel

