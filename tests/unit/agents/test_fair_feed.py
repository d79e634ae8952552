"""The uploads feed shares its free slots round-robin over the partitions it owns.

aiokafka's fetcher, asked for records without naming partitions, returns the first buffered
partition's records before it looks at the next (``Fetcher.fetched_records``); after a
takeover the feed served one partition's whole backlog before the next partition's first
upload. ``fair_shares`` is the pure split; the feed asks each partition for its share of what
is buffered. No broker: a fake consumer that buffers and drains the way aiokafka's does.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from aiokafka import TopicPartition
from feed_fakes import FakeChannel, Record

from pixelpipe.agents.uploads_feed import Handoff, UploadFeed, fair_shares
from pixelpipe.config import Settings

TOPIC = "pixelpipe.uploads"
TP0, TP1, TP2 = (TopicPartition(TOPIC, p) for p in range(3))


# --------------------------------------------------------------------------- fair_shares


def test_slots_are_split_evenly_the_remainder_going_to_the_next_in_turn() -> None:
    assert fair_shares([3, 1, 0, 2], 6, None) == [(0, 2), (1, 2), (2, 1), (3, 1)]
    assert fair_shares([0, 1, 2, 3], 6, 1) == [(2, 2), (3, 2), (0, 1), (1, 1)]


def test_fewer_slots_than_partitions_go_to_the_ones_after_the_last_served() -> None:
    assert fair_shares([0, 1, 2, 3], 2, 1) == [(2, 1), (3, 1)]
    assert fair_shares([0, 1, 2, 3], 1, 3) == [(0, 1)]  # wraps around


def test_the_turn_continues_after_a_partition_that_is_no_longer_owned() -> None:
    assert fair_shares([0, 2, 4], 1, 3) == [(4, 1)]
    assert fair_shares([0, 2, 4], 1, 9) == [(0, 1)]


def test_one_slot_at_a_time_visits_every_partition_in_turn() -> None:
    served, last = [], None
    for _ in range(7):
        ((last, share),) = fair_shares({TP2, TP0, TP1}, 1, last)
        assert share == 1
        served.append(last.partition)
    assert served == [0, 1, 2, 0, 1, 2, 0]


def test_nothing_to_share() -> None:
    assert fair_shares([0, 1], 0, None) == []
    assert fair_shares([], 5, None) == []


def test_the_shares_add_up_to_the_free_slots() -> None:
    for free in range(1, 20):
        for count in range(1, 7):
            shares = fair_shares(range(count), free, count // 2)
            assert sum(share for _, share in shares) == free
            assert max(s for _, s in shares) - min(s for _, s in shares) <= 1


# --------------------------------------------------------------------------- the feed


class BufferedConsumer:
    """aiokafka's consumer in miniature: fetched records wait in per-partition buffers, kept
    in the order they were fetched; ``getmany`` honours the partitions it is asked for and
    ``max_records``, and drains the first buffered partition before the next. A wait
    (``timeout_ms`` > 0) with nothing buffered lets the next planned fetch arrive."""

    def __init__(self) -> None:
        self.buffers: OrderedDict[TopicPartition, deque[Record]] = OrderedDict()
        self.arrivals: list[dict[TopicPartition, list[int]]] = []
        self.waits: list[int] = []
        self.returned: list[tuple[int, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def fetch(self, tp: TopicPartition, *offsets: int) -> None:
        buffer = self.buffers.setdefault(tp, deque())
        buffer.extend(Record(tp.topic, tp.partition, o) for o in offsets)

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        await asyncio.sleep(0)
        wanted = [tp for tp in self.buffers if not partitions or tp in partitions]
        if not wanted and timeout_ms:
            self.waits.append(timeout_ms)
            for tp, offsets in (self.arrivals.pop(0) if self.arrivals else {}).items():
                self.fetch(tp, *offsets)
            wanted = [tp for tp in self.buffers if not partitions or tp in partitions]
        budget = max_records if max_records is not None else 1_000
        out: dict[TopicPartition, list[Record]] = {}
        for tp in wanted:
            buffer = self.buffers[tp]
            taken = [buffer.popleft() for _ in range(min(budget, len(buffer)))]
            if not buffer:
                del self.buffers[tp]  # consumed: its next fetch is buffered after the others
            if taken:
                out[tp] = taken
                self.returned += [(r.partition, r.offset) for r in taken]
                budget -= len(taken)
            if budget == 0:
                break
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def make_feed(inflight: int) -> tuple[UploadFeed, BufferedConsumer, FakeChannel]:
    channel = FakeChannel()
    feed = UploadFeed(Settings(), channel, max_inflight=inflight,  # type: ignore[arg-type]
                      finish_within_s=300, clock=lambda: 0.0)
    consumer = BufferedConsumer()
    feed.consumer = consumer  # type: ignore[assignment]
    return feed, consumer, channel


def where(handoffs: list[Handoff]) -> list[tuple[int, int]]:
    return [(h.record.partition, h.record.offset) for h in handoffs]


async def test_after_a_takeover_both_backlogs_are_served_in_turn() -> None:
    feed, consumer, channel = make_feed(inflight=2)
    feed.on_assigned({TP0, TP1})
    consumer.fetch(TP0, *range(100, 110))  # its own partition's backlog, fetched first
    consumer.fetch(TP1, *range(200, 210))  # the partition taken over
    await feed._step(consumer)  # type: ignore[arg-type]
    assert where(channel.handed) == [(0, 100), (1, 200)]
    for oldest in range(4):  # the agent finishes the oldest upload, a slot frees up
        assert feed.begin(channel.handed[oldest])
        feed.settled(channel.handed[oldest])
        await feed._step(consumer)  # type: ignore[arg-type]
    assert [p for p, _ in where(channel.handed)] == [0, 1, 0, 1, 0, 1]
    assert not consumer.waits  # records were buffered: nothing waited


async def test_one_partition_with_data_fills_every_free_slot_at_once() -> None:
    feed, consumer, channel = make_feed(inflight=4)
    feed.on_assigned({TP0, TP1, TP2})
    consumer.fetch(TP1, *range(10))
    await feed._step(consumer)  # type: ignore[arg-type]
    assert where(channel.handed) == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert not consumer.waits


async def test_waiting_for_data_takes_the_first_record_then_shares_the_rest() -> None:
    feed, consumer, channel = make_feed(inflight=4)
    feed.on_assigned({TP0, TP1})
    consumer.arrivals = [{TP0: [0, 1, 2], TP1: [7, 8, 9]}]  # one fetch brings both
    await feed._step(consumer)  # type: ignore[arg-type]
    assert consumer.waits == [500]
    assert sorted(where(channel.handed)) == [(0, 0), (0, 1), (1, 7), (1, 8)]


async def test_every_record_the_consumer_returns_is_handed_out_once_and_commits_follow() -> None:
    feed, consumer, channel = make_feed(inflight=5)
    feed.on_assigned({TP0, TP1, TP2})
    consumer.fetch(TP2, *range(0, 4))
    consumer.fetch(TP0, *range(50, 57))
    consumer.fetch(TP1, 30)
    for _ in range(10):
        await feed._step(consumer)  # type: ignore[arg-type]
        for handoff in channel.handed:  # settle everything handed out so far
            if feed.begin(handoff):
                feed.settled(handoff)
    # nothing the consumer returned was dropped (its position is past it), nothing twice
    assert sorted(where(channel.handed)) == sorted(consumer.returned)
    assert len(consumer.returned) == 12
    for partition in (0, 1, 2):  # in offset order within each partition
        offsets = [o for p, o in where(channel.handed) if p == partition]
        assert offsets == sorted(offsets)
    await feed.commit()
    assert consumer.commits[-1] == {TP0: 57, TP1: 31, TP2: 4}
