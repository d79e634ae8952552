"""UploadFeed without a broker: a fake consumer, a fake channel, a fake clock.

What must hold: a commit never passes a record whose outcome is not settled; a revoke waits
for the revoked partitions' work, commits it, and lets the rest go; a head that never settles
is re-read instead of stalling the commit forever.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from feed_fakes import FakeChannel, Record

from pixelpipe.agents.uploads_feed import Handoff, UploadFeed
from pixelpipe.config import Settings

TOPIC = "pixelpipe.uploads"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    def __init__(self, batches: list[dict[TopicPartition, list[Record]]]) -> None:
        self.batches = batches
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int,
                      max_records: int) -> dict[TopicPartition, list[Record]]:
        # the next planned batch whatever is asked for: the feed hands out all it is given
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def records(tp: TopicPartition, *offsets: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, o) for o in offsets]


def make_feed(batches: list[dict[TopicPartition, list[Record]]], *, inflight: int = 10,
              clock: Clock | None = None) -> tuple[UploadFeed, FakeConsumer, FakeChannel]:
    channel = FakeChannel()
    feed = UploadFeed(Settings(), channel, max_inflight=inflight,  # type: ignore[arg-type]
                      finish_within_s=300, clock=clock or Clock())
    consumer = FakeConsumer(batches)
    feed.consumer = consumer  # type: ignore[assignment]
    return feed, consumer, channel


def settle(feed: UploadFeed, handoff: Handoff) -> None:
    assert feed.begin(handoff)
    feed.settled(handoff)


async def test_commit_waits_for_the_oldest_unsettled_record_of_each_partition() -> None:
    feed, consumer, channel = make_feed([{TP0: records(TP0, 0, 1, 2), TP1: records(TP1, 5)}])
    feed.on_assigned({TP0, TP1})
    await feed._step(consumer)  # type: ignore[arg-type]
    by_offset = {(h.record.partition, h.record.offset): h for h in channel.handed}
    assert len(by_offset) == 4
    settle(feed, by_offset[(0, 2)])
    settle(feed, by_offset[(0, 1)])
    settle(feed, by_offset[(1, 5)])
    await feed.commit()
    assert consumer.commits == [{TP1: 6}]  # partition 0's head (offset 0) is still running
    settle(feed, by_offset[(0, 0)])
    await feed.commit()
    assert consumer.commits[-1] == {TP0: 3}


async def test_the_feed_hands_out_no_more_than_max_inflight() -> None:
    feed, consumer, channel = make_feed([{TP0: records(TP0, 0, 1)}, {TP0: records(TP0, 2)}],
                                        inflight=2)
    feed.on_assigned({TP0})
    await feed._step(consumer)  # type: ignore[arg-type]
    await feed._step(consumer)  # full: waits (1 s at most) instead of fetching
    assert [h.record.offset for h in channel.handed] == [0, 1]
    assert len(consumer.batches) == 1


async def test_revoke_waits_for_work_in_flight_commits_it_and_drops_the_rest() -> None:
    feed, consumer, channel = make_feed([{TP0: records(TP0, 0, 1)}])
    feed.on_assigned({TP0})
    await feed._step(consumer)  # type: ignore[arg-type]
    first, second = channel.handed
    assert feed.begin(first) and feed.begin(second)

    async def finish_first_soon() -> None:
        await asyncio.sleep(0.05)
        feed.settled(first)

    finisher = asyncio.create_task(finish_first_soon())
    revoke = asyncio.create_task(feed.on_revoked({TP0}))
    await finisher
    await asyncio.sleep(0.2)
    # the second never finishes: the drain is bounded by REVOKE_DRAIN_S on the (fake) clock
    feed.clock.now += 1000  # type: ignore[attr-defined]
    await asyncio.wait_for(revoke, timeout=2)
    assert consumer.commits == [{TP0: 1}]  # the settled one, not the one still running
    feed.settled(second)  # finishing after the revoke settles nothing
    await feed.commit()
    assert consumer.commits == [{TP0: 1}]
    assert not feed.begin(second)


async def test_a_hand_off_that_never_starts_is_a_hole_and_the_partition_is_reread() -> None:
    clock = Clock()
    feed, consumer, channel = make_feed([{TP0: records(TP0, 7, 8)}], clock=clock)
    feed.on_assigned({TP0})
    await feed._step(consumer)  # type: ignore[arg-type]
    lost, later = channel.handed
    settle(feed, later)
    clock.now = 61  # past START_WITHIN_S: offset 7 never reached the agent
    feed._recover_holes()
    assert consumer.seeks == [(TP0, 7)]
    await feed.commit()
    assert consumer.commits == []  # never past 7
    assert not feed.begin(lost)  # the old hand-off is stale; the re-read brings a new one


async def test_records_of_a_partition_not_owned_are_not_handed_out() -> None:
    feed, consumer, channel = make_feed([{TP1: records(TP1, 0)}])
    feed.on_assigned({TP0})
    await feed._step(consumer)  # type: ignore[arg-type]
    assert channel.handed == []


async def test_lag_counts_unsettled_and_unfetched_records_and_the_oldest_age() -> None:
    feed, consumer, channel = make_feed([{TP0: [Record(TOPIC, 0, 0, timestamp=10_000),
                                                Record(TOPIC, 0, 1, timestamp=20_000)]}])
    consumer.highwater = lambda tp: 10 if tp == TP0 else None  # type: ignore[attr-defined]
    feed.on_assigned({TP0, TP1})
    await feed._step(consumer)  # type: ignore[arg-type]
    # 2 handed out and unsettled, 8 more in the log (10 - next offset 2); oldest is 10 s old
    assert feed.lag(now=20.0) == (10, 10.0)
    first, second = channel.handed
    settle(feed, first)
    assert feed.lag(now=20.0) == (9, 0.0)  # the oldest unsettled now is the 20 s one
    assert feed.lag(now=25.0) == (9, 5.0)
    assert second.ticket in feed._timestamps
    feed.ledger.revoke({TP0, TP1})  # (the feed's own revoke also drains, tested above)
    assert feed.lag(now=25.0) == (0, 0.0)  # nothing owned, nothing behind
    assert not feed._timestamps  # forgotten, not leaked


async def test_lag_includes_the_backlog_of_partitions_nothing_was_read_from_yet() -> None:
    feed, consumer, _channel = make_feed([])
    consumer.highwater = lambda tp: 50  # type: ignore[attr-defined]

    async def position(tp: TopicPartition) -> int:
        return 20  # the committed offset the consumer resumes from

    consumer.position = position  # type: ignore[attr-defined]
    feed.on_assigned({TP0, TP1})
    assert feed.lag(now=0.0) == (0, 0.0)  # positions not known yet
    await feed._learn_positions()
    assert feed.lag(now=0.0) == (60, 0.0)  # 30 behind on each


def test_status_names_the_group_and_assignment() -> None:
    feed, _consumer, _channel = make_feed([])
    feed.on_assigned({TP1, TP0})
    status: dict[str, Any] = feed.status()
    assert status == {"group": "pixelpipe.uploads", "assigned": [0, 1], "in_flight": 0}


async def test_lag_counts_what_arrived_since_the_last_fetch_from_the_brokers_log_end() -> None:
    # aiokafka does not fetch a partition again while records of it are buffered, so its
    # highwater stays where that fetch left it however many uploads arrive meanwhile
    feed, consumer, channel = make_feed([{TP0: records(TP0, 0, 1)}])
    consumer.highwater = lambda tp: 10 if tp == TP0 else None  # type: ignore[attr-defined]
    asked: list[list[TopicPartition]] = []

    async def end_offsets(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(list(partitions))
        return {tp: 40 for tp in partitions}  # 30 more published since that fetch

    consumer.end_offsets = end_offsets  # type: ignore[attr-defined]
    feed.on_assigned({TP0, TP1})
    await feed._step(consumer)  # type: ignore[arg-type]
    assert feed.lag(now=0.0)[0] == 10  # 2 unsettled + 8 up to the fetch's highwater
    await feed._learn_log_ends()
    assert asked == [[TP0, TP1]]  # one request for every owned partition
    assert feed.lag(now=0.0)[0] == 40  # 2 unsettled + 38 unread (TP1: no position yet)
    assert feed.lag_by_partition(now=0.0)[0] == (40, 0.0)
    settle(feed, channel.handed[0])
    assert feed.lag(now=0.0)[0] == 39


async def test_a_broker_that_does_not_answer_the_log_ends_leaves_the_last_known() -> None:
    feed, consumer, channel = make_feed([{TP0: records(TP0, 0)}])
    consumer.highwater = lambda tp: 5  # type: ignore[attr-defined]
    answers: list[BaseException | int] = [20, TimeoutError(), KafkaConnectionError()]

    async def end_offsets(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return {tp: answer for tp in partitions}

    consumer.end_offsets = end_offsets  # type: ignore[attr-defined]
    feed.on_assigned({TP0})
    await feed._step(consumer)  # type: ignore[arg-type]
    await feed._learn_log_ends()
    assert feed.lag(now=0.0)[0] == 20
    await feed._learn_log_ends()  # times out: no error, the last answer still counts
    await feed._learn_log_ends()  # the connection is gone: the same
    assert feed.lag(now=0.0)[0] == 20
    settle(feed, channel.handed[0])  # (a revoke waits for unsettled work)
    await feed.on_revoked({TP0})
    assert feed._log_end == {}  # a revoked partition's end is forgotten


async def test_log_ends_answered_after_a_revoke_are_not_kept_for_the_revoked_partition() -> None:
    feed, consumer, _channel = make_feed([])
    consumer.highwater = lambda tp: None  # type: ignore[attr-defined]
    asked, answer = asyncio.Event(), asyncio.Event()

    async def end_offsets(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.set()
        await answer.wait()  # the broker answers only after the revoke below
        return {tp: 30 for tp in partitions}

    consumer.end_offsets = end_offsets  # type: ignore[attr-defined]
    feed.on_assigned({TP0, TP1})
    learning = asyncio.create_task(feed._learn_log_ends())
    await asked.wait()
    await feed.on_revoked({TP1})
    answer.set()
    await learning
    assert feed._log_end == {TP0: 30}  # TP1 is another worker's now
