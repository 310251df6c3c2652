"""Voids: reverse exactly what an interaction earned, from its own lots first; a shortfall
makes the balance negative until later earnings repay it; the frequency slot is freed."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from domain import errors
from domain.account import entries_of
from tests.unit.dsl import (
    Ledger,
    assessment,
    at,
    cancel,
    checkup,
    enrol,
    redeem,
    review,
    steps,
    visit,
    void,
)

DAY = date(2026, 1, 5)


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def lines(events: list[Any]) -> list[tuple[str, int, int, str]]:
    return [
        (e.kind, e.points, e.balance_after, e.rule_id)
        for event in events
        for e in entries_of(event)
    ]


def lot_of(ledger: Ledger, interaction: Any) -> Any:
    (lot_id,) = ledger.account.receipts[f"{interaction.source}\x1f{interaction.source_id}"].lot_ids
    return ledger.account.lots.get(lot_id)


def refused_without_trace(ledger: Ledger, interaction: Any, error: type[Exception]) -> None:
    before = len(ledger.account.pending_events)
    available = ledger.available
    with pytest.raises(error):
        ledger.when(interaction)
    assert len(ledger.account.pending_events) == before
    assert ledger.available == available


# ---------------------------------------------------------------------- reversing
def test_a_void_reverses_exactly_what_the_interaction_earned() -> None:
    earned = checkup(at(0), "screening")
    ledger = Ledger().given(visit(at(0)), earned)

    events = ledger.when(void(earned, at(1)))

    assert happened(events) == ["InteractionVoided"]
    assert lines(events) == [("reversed", -200, 100, "void")]
    assert lot_of(ledger, earned).remaining == 0
    assert ledger.account.balance(ledger.program).lifetime_reversed == 200


def test_a_void_reverses_the_multiplied_points() -> None:
    ledger = Ledger().given(*[visit(at(0)) for _ in range(10)])
    silver = visit(at(1), "telehealth")
    ledger.given(silver)  # earned 55

    events = ledger.when(void(silver, at(2)))

    assert lines(events) == [("reversed", -55, 1000, "void")]
    assert ledger.account.qualifying_points(at(2), ledger.program) == 1000


def test_a_void_takes_from_the_voided_interactions_own_lot_first() -> None:
    sooner, voided = visit(at(0)), visit(at(100))
    ledger = Ledger().given(sooner, voided)

    events = ledger.when(void(voided, at(150)))

    assert [(t.lot_id, t.points) for t in events[0].taken] == [(lot_of(ledger, voided).lot_id, 100)]
    assert lot_of(ledger, sooner).remaining == 100


def test_when_its_own_lot_is_spent_a_void_takes_the_soonest_expiring_others() -> None:
    a, b, c = visit(at(0)), visit(at(50)), visit(at(100))
    ledger = Ledger().given(a, b, c, redeem(100, "r-1", at(120)))  # lot A spent

    events = ledger.when(void(a, at(150)))

    assert [t.points for t in events[0].taken] == [100]
    assert events[0].taken[0].lot_id == lot_of(ledger, b).lot_id
    assert (lot_of(ledger, b).remaining, lot_of(ledger, c).remaining) == (0, 100)
    assert lines(events) == [("reversed", -100, 100, "void")]


def test_a_void_beyond_the_available_balance_makes_it_negative() -> None:
    a, b = visit(at(0)), visit(at(100))
    ledger = Ledger().given(a, b, redeem(150, "r-1", at(120)))  # A empty, B has 50

    events = ledger.when(void(a, at(150)))

    assert lines(events) == [("reversed", -100, -50, "void")]
    assert (events[0].debt_added, [t.points for t in events[0].taken]) == (50, [50])
    assert (ledger.available, ledger.account.debt) == (-50, 50)
    assert all(lot.remaining == 0 for lot in ledger.account.lots.values())


def test_later_earnings_repay_a_negative_balance_first() -> None:
    a, b = visit(at(0)), visit(at(100))
    ledger = Ledger().given(a, b, redeem(150, "r-1", at(120)), void(a, at(150)))

    events = ledger.when(visit(at(160)))

    assert lines(events) == [("earned", 100, 50, "visit.in_person")]
    assert events[0].credit.debt_repaid == 50
    assert ledger.account.debt == 0
    assert ledger.account.lots[events[0].credit.lot_id].remaining == 50


def test_an_earning_smaller_than_the_debt_repays_part_and_opens_no_lot() -> None:
    a = visit(at(0))
    ledger = Ledger().given(a, redeem(100, "r-1", at(1)), void(a, at(2)))  # -100

    events = ledger.when(visit(at(3), "telehealth"))

    assert lines(events) == [("earned", 50, -50, "visit.telehealth")]
    assert ledger.account.debt == 50
    assert events[0].credit.lot_id not in ledger.account.lots


def test_a_negative_balance_rejects_redemptions() -> None:
    a = visit(at(0))
    ledger = Ledger().given(a, redeem(100, "r-1", at(1)), void(a, at(2)))

    events = ledger.when(redeem(1, "r-2", at(3)))

    assert happened(events) == ["RedemptionRejected"]
    assert events[0].available == -100


def test_voiding_an_interaction_that_earned_nothing_has_no_entry() -> None:
    second = review(at(1))
    ledger = Ledger().given(review(at(0)), second)  # the second is noted (cooldown)

    events = ledger.when(void(second, at(2)))

    assert happened(events) == ["InteractionVoided"]
    assert lines(events) == []
    assert ledger.available == 50


def test_an_enrolment_can_be_voided_and_changes_no_points() -> None:
    enrolment = enrol(at(0))
    ledger = Ledger().given(enrolment)

    assert lines(ledger.when(void(enrolment, at(1)))) == []


# ----------------------------------------------------------------- freeing the slot
def test_voiding_annual_wellness_frees_the_calendar_year() -> None:
    first = checkup(at(0), "annual_wellness")
    ledger = Ledger().given(first, void(first, at(1)))

    events = ledger.when(checkup(at(2), "annual_wellness"))

    assert lines(events) == [("earned", 500, 500, "checkup.annual_wellness")]


def test_voiding_an_assessment_frees_the_quarter() -> None:
    first = assessment(at(0))
    ledger = Ledger().given(first, void(first, at(1)))

    assert lines(ledger.when(assessment(at(2)))) == [("earned", 250, 250, "assessment")]


def test_voiding_a_review_frees_its_window() -> None:
    first = review(at(0))
    ledger = Ledger().given(first, void(first, at(1)))

    assert lines(ledger.when(review(at(10)))) == [("earned", 50, 50, "review")]


def test_voiding_a_steps_reading_frees_what_it_earned_for_the_day() -> None:
    reading = steps(DAY, 12000, at(0))
    ledger = Ledger().given(reading, void(reading, at(1)))

    assert lines(ledger.when(steps(DAY, 5000, at(1)))) == [("earned", 10, 10, "activity.steps")]


def test_voiding_a_top_up_frees_only_the_top_up() -> None:
    low, high = steps(DAY, 5000, at(0)), steps(DAY, 12000, at(0, hours=1))
    ledger = Ledger().given(low, high, void(high, at(1)))

    assert ledger.available == 10
    assert lines(ledger.when(steps(DAY, 11000, at(1)))) == [("earned", 10, 20, "activity.steps")]


def test_voiding_frees_one_slot_and_not_another() -> None:
    first = checkup(at(0), "annual_wellness")
    ledger = Ledger().given(first, void(first, at(1)), checkup(at(2), "annual_wellness"))

    events = ledger.when(checkup(at(3), "annual_wellness"))

    assert happened(events) == ["InteractionNoted"]


# -------------------------------------------------------------------------- refusals
def test_voiding_an_unknown_interaction_is_refused() -> None:
    ledger = Ledger().given(visit(at(0)))

    refused_without_trace(
        ledger, void(visit(at(0), id="never-seen"), at(1)), errors.UnknownInteraction
    )
    assert errors.UnknownInteraction.code == "unknown_interaction"


def test_voiding_twice_is_refused() -> None:
    earned = visit(at(0))
    ledger = Ledger().given(visit(at(0)), earned, void(earned, at(1)))

    refused_without_trace(ledger, void(earned, at(2)), errors.InteractionNotVoidable)
    assert ledger.available == 100
    assert errors.InteractionNotVoidable.code == "interaction_not_voidable"


def test_redelivering_a_void_is_a_duplicate_not_a_second_reversal() -> None:
    earned = visit(at(0))
    the_void = void(earned, at(1))
    ledger = Ledger().given(visit(at(0)), earned, the_void)

    assert ledger.when(the_void) == []
    assert ledger.available == 100


@pytest.mark.parametrize(
    "target",
    [
        lambda: redeem(10, "r-1", at(1), id="redemption"),
        lambda: redeem(10_000, "r-2", at(1), id="redemption"),  # rejected
        lambda: cancel("r-0", at(1), id="redemption"),
    ],
    ids=["redemption", "rejected-redemption", "cancellation"],
)
def test_redemptions_and_cancellations_cannot_be_voided(target: Any) -> None:
    ledger = Ledger().given(visit(at(0)), redeem(10, "r-0", at(0)), target())

    refused_without_trace(ledger, void(target(), at(2)), errors.InteractionNotVoidable)


def test_a_void_cannot_be_voided() -> None:
    earned = visit(at(0))
    the_void = void(earned, at(1))
    ledger = Ledger().given(earned, the_void)

    refused_without_trace(ledger, void(the_void, at(2)), errors.InteractionNotVoidable)


def test_a_void_is_applied_after_due_lots_expire() -> None:
    a, b = visit(at(0)), visit(at(100))
    ledger = Ledger().given(a, b)

    events = ledger.when(void(b, at(365) + timedelta(hours=1)))

    assert lines(events) == [("expired", -100, 100, "expiry"), ("reversed", -100, 0, "void")]
