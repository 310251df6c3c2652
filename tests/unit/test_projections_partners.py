"""The coalition, engagement and goal-day rows, folded from the pure domain's events:
partner liability and settlement, engagement by action and month, goal readings."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.application.programs import builtin_programs
from domain.errors import LedgerError
from projections.changes import (
    BatchChanges,
    EngagementDelta,
    LiabilityDelta,
    goal_summary,
    month_of,
)
from projections.handlers import Fold
from tests.unit.dsl import Ledger, adjust, cancel, redeem, steps, visit, void
from tests.unit.stored_events import as_stored
from tests.unit.test_program_coalition import T, buy, engage, redeem_at

COALITION = builtin_programs()["coalition-health"]
MOTION = builtin_programs()["activity-motion"]
MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)


def fold(events: list[Any], changes: BatchChanges | None = None) -> BatchChanges:
    changes = changes or BatchChanges()
    folding = Fold(changes)
    for position, event in enumerate(events, start=1):
        folding.apply(as_stored(position, event))
    return changes


def liability(changes: BatchChanges) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        partner: (d.issued, d.redeemed, d.expired, d.reversed, d.outstanding)
        for (_, partner), d in sorted(changes.sums.liability.items())
    }


def day(days: float) -> Any:
    return T + timedelta(days=days)


def shopper() -> tuple[Ledger, Any]:
    """A purchase at every partner, then a pharmacy redemption of clinic and pharmacy points
    (soonest expiry first, never the wellness centre's), and a refused one at the gift shop."""
    pharmacy = redeem_at(200, "pharmacy-1", day(4))
    ledger = Ledger(program=COALITION, patient_id="shopper").given(
        visit(day(0)),  # 100, clinic-main (home)
        buy("pharmacy-1", "front_store", "12.00", day(1)),  # 120
        buy("pharmacy-1", "prescription", "80.00", day(1)),  # 0: noted
        buy("giftshop-1", "gift", "10.00", day(2)),  # 50
        buy("wellness-1", "wellness_class", "10.00", day(3)),  # 150, only at wellness-1
        pharmacy,
        redeem_at(300, "giftshop-1", day(5)),  # 70 spendable there: refused
    )
    return ledger, pharmacy


def test_a_pharmacy_redemption_of_clinic_and_pharmacy_points_settles_between_them() -> None:
    ledger, _ = shopper()
    changes = fold(ledger.account.pending_events)
    assert liability(changes) == {
        "clinic-main": (100, 100, 0, 0, 0),
        "giftshop-1": (50, 0, 0, 0, 50),
        "pharmacy-1": (120, 100, 0, 0, 20),
        "wellness-1": (150, 0, 0, 0, 150),
    }
    assert changes.sums.settlement == {
        ("coalition-health", "clinic-main", "pharmacy-1", MARCH): 100,  # clinic owes pharmacy
        ("coalition-health", "pharmacy-1", "pharmacy-1", MARCH): 100,  # its own points
    }
    # the partners' outstanding points are the account's lots, by issuer
    lots: dict[str | None, int] = {}
    for lot in ledger.account.lots.values():
        lots[lot.partner] = lots.get(lot.partner, 0) + lot.remaining
    assert {p: row[4] for p, row in liability(changes).items()} == lots


def test_a_cancellation_gives_back_in_its_month_in_the_same_batch_or_a_later_one() -> None:
    ledger, pharmacy = shopper()
    before = len(ledger.account.pending_events)
    ledger.given(cancel(pharmacy.redemption_id, day(31)))  # April
    events = ledger.account.pending_events
    together = fold(events)
    first = fold(events[:before])
    later = BatchChanges(accounts=dict(first.accounts))
    fold(events[before:], later)
    (waiting,) = later.cancellations  # its redemption is in the first batch
    assert waiting.month == APRIL
    assert waiting.returned == {"clinic-main": 100, "pharmacy-1": 100}
    later.sums.cancel(
        first.redemptions[("coalition-health", "shopper", waiting.redemption_id)], waiting
    )
    first.sums.add(later.sums)
    assert first.sums == together.sums
    assert liability(together)["clinic-main"] == (100, 0, 0, 0, 100)
    assert together.sums.settlement == {
        ("coalition-health", "clinic-main", "pharmacy-1", MARCH): 100,
        ("coalition-health", "pharmacy-1", "pharmacy-1", MARCH): 100,
        ("coalition-health", "clinic-main", "pharmacy-1", APRIL): -100,
        ("coalition-health", "pharmacy-1", "pharmacy-1", APRIL): -100,
    }


def test_a_void_into_debt_is_repaid_from_the_next_issuer_as_reversed() -> None:
    first = visit(day(0))
    ledger = Ledger(program=COALITION, patient_id="debtor").given(
        first,
        redeem_at(100, None, day(1)),  # at home: clinic-main
        void(first, day(2)),  # nothing left to take: 100 of debt
        buy("pharmacy-1", "front_store", "12.00", day(3)),  # 120, of which 100 repay it
        adjust(-10, day(4)),  # a debit takes from the pharmacy's lot
    )
    changes = fold(ledger.account.pending_events)
    assert liability(changes) == {
        "clinic-main": (100, 100, 0, 0, 0),
        "pharmacy-1": (120, 0, 0, 110, 10),
    }
    assert ledger.available == 10
    assert changes.sums.settlement == {
        ("coalition-health", "clinic-main", "clinic-main", MARCH): 100
    }


def test_programs_without_partners_have_one_row_under_the_empty_partner() -> None:
    ledger = Ledger(patient_id="plain").given(visit(day(0)), visit(day(1)))
    ledger.given(redeem(150, "r-1", day(2)))
    changes = fold(ledger.account.pending_events)
    assert liability(changes) == {"": (200, 150, 0, 0, 50)}
    assert changes.sums.settlement == {("clinic-default", "", "", MARCH): 150}


def test_engagement_counts_by_action_and_month_awarded_or_capped() -> None:
    ledger = Ledger(program=COALITION, patient_id="portal").given(
        engage("portal_login", day(0)),
        engage(
            "portal_login",
            day(
                0,
            )
            + timedelta(hours=2),
        ),  # once a day: noted
        engage("social_follow", day(1)),
        engage("social_follow", day(30)),  # once a lifetime: noted, in April
    )
    changes = fold(ledger.account.pending_events)
    e = changes.sums.engagement
    assert e == {
        ("coalition-health", MARCH, "portal_login"): EngagementDelta(2, 1, 5),
        ("coalition-health", MARCH, "social_follow"): EngagementDelta(1, 1, 100),
        ("coalition-health", APRIL, "social_follow"): EngagementDelta(1, 0, 0),
    }
    assert not changes.sums.liability.get(("coalition-health", "pharmacy-1"))
    assert changes.sums.liability[("coalition-health", "clinic-main")] == LiabilityDelta(105)


def test_goal_readings_are_added_and_a_void_in_the_batch_takes_its_own_away() -> None:
    days = [date(2026, 3, d) for d in (2, 3, 4)]
    readings = [steps(d, 12000, T + timedelta(days=i)) for i, d in enumerate(days)]
    low = steps(days[2], 500, day(5))
    ledger = Ledger(program=MOTION, patient_id="walker").given(*readings, low)
    ledger.given(void(readings[1], day(6)))
    changes = fold(ledger.account.pending_events)
    key = ("activity-motion", "walker")
    assert changes.goal_readings == {
        (*key, r.source, r.source_id): r.day for r in (readings[0], readings[2])
    }
    assert changes.goal_voids == set()  # its reading was in this batch
    assert changes.goal_accounts == {key}
    later = fold([ledger.account.pending_events[-1]], BatchChanges(accounts=changes.accounts))
    assert later.goal_voids == {(*key, readings[1].source, readings[1].source_id)}


def test_goal_summary_counts_distinct_days_the_trailing_30_and_the_runs() -> None:
    d = date(2026, 3, 31)
    days = {d - timedelta(days=n) for n in (0, 1, 2, 4, 5, 6, 7, 40)}
    assert goal_summary(days) == (8, 7, 3, 4, d - timedelta(days=40), d)
    assert goal_summary(set()) == (0, 0, 0, 0, None, None)
    assert month_of(T) == MARCH


step = st.one_of(
    st.tuples(st.just("visit"), st.just("")),
    st.tuples(st.just("buy"), st.sampled_from(["pharmacy-1", "giftshop-1", "wellness-1"])),
    st.tuples(st.just("redeem"), st.sampled_from(["pharmacy-1", "giftshop-1", "wellness-1", ""])),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("void"), st.integers(0, 20)),
    st.tuples(st.just("adjust"), st.integers(-300, 300).filter(bool)),
    st.tuples(st.just("maintain"), st.integers(0, 400)),
)
CATEGORY = {"pharmacy-1": "front_store", "giftshop-1": "gift", "wellness-1": "wellness_class"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_=st.lists(st.tuples(step, st.integers(0, 60), st.integers(1, 40)), max_size=30))
def test_any_coalition_history_leaves_each_partner_its_lots(
    steps_: list[tuple[tuple[str, Any], int, int]],
) -> None:
    ledger = Ledger(program=COALITION, patient_id="any")
    when = T
    done: list[Any] = []
    redemptions: list[str] = []
    for (kind, arg), gap, size in steps_:
        when += timedelta(days=gap)
        interaction: Any = None
        if kind == "visit":
            interaction = visit(when)
        elif kind == "buy":
            interaction = buy(arg, CATEGORY[arg], f"{size}.00", when)
        elif kind == "redeem":
            interaction = redeem_at(size * 10, arg or None, when)
        elif kind == "cancel" and redemptions:
            interaction = cancel(redemptions[arg % len(redemptions)], when)
        elif kind == "void" and done:
            interaction = void(done[arg % len(done)], when)
        elif kind == "adjust":
            interaction = adjust(arg, when)
        elif kind == "maintain":
            ledger.maintain(when + timedelta(days=arg))
        if interaction is None:
            continue
        try:
            ledger.given(interaction)
        except LedgerError:
            continue
        if kind == "redeem":
            redemptions.append(interaction.redemption_id)
        else:
            done.append(interaction)
    changes = fold(ledger.account.pending_events)
    lots: dict[str, int] = {}
    for lot in ledger.account.lots.values():
        lots[lot.partner or ""] = lots.get(lot.partner or "", 0) + lot.remaining
    outstanding = {p: row[4] for p, row in liability(changes).items()}
    assert {p: n for p, n in outstanding.items() if n} == {p: n for p, n in lots.items() if n}
    assert sum(outstanding.values()) == ledger.available + ledger.account.debt
    balance = ledger.account.balance(COALITION)
    assert sum(changes.sums.settlement.values()) == balance.lifetime_redeemed
    assert sum(row[1] for row in liability(changes).values()) == balance.lifetime_redeemed
    assert sum(row[2] for row in liability(changes).values()) == balance.lifetime_expired
