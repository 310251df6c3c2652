"""Maintenance as of T expires every lot due at or before T (dated at the lot's expiry), then
sets the tier; running it again for the same T changes nothing. The same expiry runs before
every interaction."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from domain.account import entries_of
from tests.unit.dsl import Ledger, at, cancel, redeem, review, visit

YEAR = timedelta(days=365)
SECOND = timedelta(seconds=1)


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def expiries(events: list[Any]) -> list[tuple[int, int, Any, str]]:
    """(points, balance_after, dated, source_id) of each expired entry."""
    return [
        (e.points, e.balance_after, e.occurred_at, e.source_id)
        for event in events
        for e in entries_of(event)
        if e.kind == "expired"
    ]


def test_maintenance_expires_every_due_lot_dated_at_its_expiry() -> None:
    ledger = Ledger().given(
        visit(at(0), id="v-a"), visit(at(10), "telehealth", id="v-b"), visit(at(100), id="v-c")
    )

    events = ledger.maintain(at(400))

    assert expiries(events) == [
        (-100, 150, at(0) + YEAR, "v-a"),
        (-50, 100, at(10) + YEAR, "v-b"),
    ]
    assert all(e.rule_id == "expiry" for e in ledger.entries() if e.kind == "expired")
    assert ledger.available == 100
    assert ledger.account.balance(ledger.program).lifetime_expired == 150


def test_a_lot_is_due_at_its_expiry_instant() -> None:
    ledger = Ledger().given(visit(at(0)))

    assert expiries(ledger.maintain(at(365) - SECOND)) == []
    assert expiries(ledger.maintain(at(365))) == [(-100, 0, at(365), ledger.entries()[0].source_id)]


def test_only_what_remains_of_a_lot_expires() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(30, "r-1", at(1)))

    (points, balance_after, _, _) = expiries(ledger.maintain(at(365)))[0]

    assert (points, balance_after) == (-70, 0)


def test_a_spent_lot_expires_without_an_entry() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(100, "r-1", at(1)))

    assert expiries(ledger.maintain(at(400))) == []


def test_maintenance_downgrades_after_expiring() -> None:
    ledger = Ledger().given(*[visit(at(0)) for _ in range(10)])

    events = ledger.maintain(at(365))

    names = happened(events)
    assert names.count("PointsExpired") == 10
    assert names[-1] == "TierChanged"
    assert (events[-1].from_tier, events[-1].to_tier) == ("silver", "bronze")
    assert ledger.available == 0


def test_maintenance_twice_for_the_same_as_of_changes_nothing() -> None:
    ledger = Ledger().given(*[visit(at(0)) for _ in range(10)], visit(at(200)))
    first = ledger.maintain(at(365))
    assert first != []

    assert ledger.maintain(at(365)) == []
    assert (ledger.available, ledger.tier) == (110, "bronze")


def test_maintenance_of_an_earlier_as_of_afterwards_changes_nothing() -> None:
    ledger = Ledger().given(visit(at(0)))
    ledger.maintain(at(400))

    assert ledger.maintain(at(100)) == []


def test_maintenance_with_nothing_due_produces_nothing() -> None:
    ledger = Ledger().given(visit(at(0)))

    assert ledger.maintain(at(1)) == []
    assert Ledger().maintain(at(1)) == []


def test_due_lots_expire_before_an_interaction_is_applied() -> None:
    ledger = Ledger().given(visit(at(0), id="v-a"))

    events = ledger.when(review(at(365)))

    assert happened(events) == ["PointsExpired", "PointsEarned"]
    assert [(e.kind, e.points, e.balance_after) for ev in events for e in entries_of(ev)] == [
        ("expired", -100, 0),
        ("earned", 50, 50),
    ]
    assert entries_of(events[0])[0].occurred_at == at(365)


def test_the_next_expiry_is_the_soonest_live_lot() -> None:
    ledger = Ledger().given(visit(at(30)), visit(at(10)), redeem(100, "r-1", at(40)))

    # the day-10 lot is spent, so the next points to expire are the day-30 ones
    assert ledger.account.balance(ledger.program).next_expiry == at(30) + YEAR


def test_expiry_entry_ids_are_unique_when_events_arrive_in_time_order() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(50, "r-1", at(10)), cancel("r-1", at(20)))
    ledger.maintain(at(366))

    ids = Counter(e.entry_id for e in ledger.entries())
    assert max(ids.values()) == 1


def test_a_late_cancellation_never_produces_a_second_entry_with_the_same_id() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(50, "r-1", at(10)))
    ledger.maintain(at(366))  # the lot's remaining 50 expire (entry id from the lot)

    ledger.when(cancel("r-1", at(20)))  # arrives late: the lot had not expired by day 20
    ledger.maintain(at(367))  # the refilled lot expires again

    ids = Counter(e.entry_id for e in ledger.entries())
    assert max(ids.values()) == 1
