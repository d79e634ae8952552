"""Acks leave in offset order per partition, whatever order processing finishes in."""

from __future__ import annotations

import random

import pytest

from pixelpipe.policy.ordering import InOrderAcks


def test_a_later_event_finishing_first_waits_for_the_head() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    for offset in ("a0", "a1", "a2"):
        acks.track("p0", offset)
    assert acks.complete("p0", "a1") == []
    assert acks.complete("p0", "a2") == []
    assert acks.complete("p0", "a0") == ["a0", "a1", "a2"]
    assert acks.in_flight == 0


def test_partitions_do_not_block_each_other() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    acks.track("p0", "a0")
    acks.track("p1", "b0")
    assert acks.complete("p1", "b0") == ["b0"]
    assert acks.pending("p0") == 1


def test_completing_an_untracked_item_is_an_error() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    assert acks.complete("p0", "zz") is None  # not tracked (e.g. forgotten after a revoke)


@pytest.mark.parametrize("seed", range(20))
def test_random_completion_orders_release_every_item_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    acks: InOrderAcks[tuple[int, int]] = InOrderAcks()
    items = [(p, o) for o in range(30) for p in range(3)]
    for item in items:
        acks.track(item[0], item)
    released: list[tuple[int, int]] = []
    order = items[:]
    rng.shuffle(order)
    for item in order:
        released.extend(acks.complete(item[0], item))
    assert sorted(released) == sorted(items)
    for partition in range(3):
        offsets = [o for p, o in released if p == partition]
        assert offsets == sorted(offsets)
