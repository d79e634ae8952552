"""OffsetLedger: the commit point never passes a record whose outcome is not acknowledged."""

from __future__ import annotations

from pixelpipe.policy.ordering import OffsetLedger

P0, P1 = ("uploads", 0), ("uploads", 1)


def ledger_with(*partitions: tuple[str, int]) -> OffsetLedger[tuple[str, int]]:
    ledger: OffsetLedger[tuple[str, int]] = OffsetLedger()
    ledger.assign(set(partitions))
    return ledger


def test_commit_point_waits_for_the_head_even_when_later_records_finish_first() -> None:
    ledger = ledger_with(P0)
    tickets = [ledger.track(P0, offset, now=0.0) for offset in (10, 11, 12)]
    assert all(t is not None and ledger.start(t, now=0.0) for t in tickets)
    assert ledger.finish(tickets[2]) and ledger.finish(tickets[1])  # type: ignore[arg-type]
    assert ledger.committable() == {}  # 10 is not done: nothing may be committed
    assert ledger.finish(tickets[0])  # type: ignore[arg-type]
    assert ledger.committable() == {P0: 13}


def test_offset_gaps_between_tracked_records_do_not_hold_the_commit() -> None:
    ledger = ledger_with(P0)
    for offset in (3, 7):  # 4-6: transaction markers or compacted away, never returned
        ticket = ledger.track(P0, offset, now=0.0)
        assert ticket is not None and ledger.start(ticket, 0.0) and ledger.finish(ticket)
    assert ledger.committable() == {P0: 8}


def test_committed_releases_settled_records_and_is_not_offered_again() -> None:
    ledger = ledger_with(P0)
    ticket = ledger.track(P0, 0, now=0.0)
    assert ticket is not None and ledger.start(ticket, 0.0) and ledger.finish(ticket)
    offsets = ledger.committable()
    ledger.committed(offsets)
    assert ledger.committable() == {}
    assert ledger.in_flight() == 0
    assert ledger.track(P0, 0, now=1.0) is None  # a re-fetch of a committed offset is ignored


def test_a_failed_commit_is_offered_again() -> None:
    ledger = ledger_with(P0)
    ticket = ledger.track(P0, 5, now=0.0)
    assert ticket is not None and ledger.start(ticket, 0.0) and ledger.finish(ticket)
    assert ledger.committable() == {P0: 6}
    # the commit failed, so committed() is not called
    assert ledger.committable() == {P0: 6}


def test_a_ticket_from_before_a_revoke_never_settles_anything() -> None:
    ledger = ledger_with(P0, P1)
    old = ledger.track(P0, 0, now=0.0)
    assert old is not None and ledger.start(old, 0.0)
    assert ledger.revoke({P0}) == [0]  # dropped unsettled: the new owner reads it again
    ledger.assign({P0})  # the same partition comes back in the next generation
    fresh = ledger.track(P0, 0, now=1.0)
    assert fresh is not None
    assert not ledger.finish(old)  # the old run finishing late must not count
    assert ledger.committable() == {}
    assert not ledger.start(old, 2.0)
    assert ledger.start(fresh, 2.0) and ledger.finish(fresh)
    assert ledger.committable() == {P0: 1}


def test_records_of_partitions_not_owned_are_not_tracked() -> None:
    ledger = ledger_with(P0)
    assert ledger.track(P1, 0, now=0.0) is None


def test_stalls_find_a_lost_hand_off_and_a_stuck_head_but_not_healthy_work() -> None:
    ledger = ledger_with(P0, P1)
    lost = ledger.track(P0, 4, now=0.0)  # handed out, never picked up
    stuck = ledger.track(P1, 9, now=0.0)
    assert lost is not None and stuck is not None and ledger.start(stuck, now=1.0)
    assert ledger.stalls(30.0, start_within_s=60, finish_within_s=300) == []
    found = {(s.partition, s.offset, s.reason)
             for s in ledger.stalls(400.0, start_within_s=60, finish_within_s=300)}
    assert found == {(P0, 4, "not_started"), (P1, 9, "not_finished")}


def test_reset_returns_the_head_to_reread_and_stales_its_tickets() -> None:
    ledger = ledger_with(P0)
    first = ledger.track(P0, 20, now=0.0)
    second = ledger.track(P0, 21, now=0.0)
    assert first is not None and second is not None
    assert ledger.start(second, 0.0) and ledger.finish(second)
    assert ledger.reset(P0) == 20
    assert not ledger.is_current(first) and not ledger.is_current(second)
    assert ledger.committable() == {}
    again = ledger.track(P0, 20, now=1.0)  # the re-read goes back to the head
    assert again is not None and ledger.start(again, 1.0) and ledger.finish(again)
    assert ledger.committable() == {P0: 21}


def test_in_flight_counts_only_unsettled_records_of_the_given_partitions() -> None:
    ledger = ledger_with(P0, P1)
    a = ledger.track(P0, 0, now=0.0)
    ledger.track(P0, 1, now=0.0)
    ledger.track(P1, 0, now=0.0)
    assert a is not None and ledger.start(a, 0.0) and ledger.finish(a)
    assert ledger.in_flight() == 2
    assert ledger.in_flight({P0}) == 1
