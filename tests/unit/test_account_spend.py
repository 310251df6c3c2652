"""Spend: payments earn no points; cumulative spend sets the discount; every 5th payment
unlocks a free-service reward; voiding a payment removes its amount and count only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain import errors
from tests.unit.dsl import Ledger, at, pay, visit, void


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def unlocked(events: list[Any]) -> list[str | None]:
    return [e.reward_unlocked for e in events if type(e).__name__ == "PaymentRecorded"]


@pytest.mark.parametrize(
    ("amount", "percent"),
    [
        ("0.01", 0),
        ("99.99", 0),
        ("100.00", 2),
        ("199.99", 2),
        ("200.00", 3),
        ("299.99", 3),
        ("300.00", 4),
        ("900.00", 10),
        ("1000.00", 10),
        ("5000.00", 10),
    ],
)
def test_cumulative_spend_sets_the_discount(amount: str, percent: int) -> None:
    ledger = Ledger()

    (recorded,) = ledger.when(pay(amount, at(0)))

    assert (recorded.spend_total, recorded.discount_percent) == (Decimal(amount), percent)
    balance = ledger.account.balance(ledger.program)
    assert (balance.spend_total, balance.discount_percent) == (Decimal(amount), percent)


def test_spend_accumulates_across_payments() -> None:
    ledger = Ledger().given(pay("60.00", at(0)))

    (recorded,) = ledger.when(pay("40.00", at(1)))

    assert (recorded.spend_total, recorded.discount_percent) == (Decimal("100.00"), 2)


def test_payments_earn_no_points() -> None:
    ledger = Ledger()

    events = ledger.when(pay("5000.00", at(0)))

    assert happened(events) == ["PaymentRecorded"]
    assert ledger.entries() == []
    assert ledger.available == 0


def test_every_fifth_payment_unlocks_a_free_service() -> None:
    ledger = Ledger()

    events = [ledger.when(pay("10.00", at(n)))[0] for n in range(10)]

    assert unlocked(events) == [None] * 4 + ["free-service"] + [None] * 4 + ["free-service"]
    assert ledger.account.balance(ledger.program).rewards_unlocked == 2
    assert [e.payments for e in events] == list(range(1, 11))


def test_a_payment_in_another_currency_is_refused_and_changes_nothing() -> None:
    ledger = Ledger().given(pay("150.00", at(0)))
    before = len(ledger.account.pending_events)

    with pytest.raises(errors.CurrencyMismatch):
        ledger.when(pay("50.00", at(1), currency="EUR"))

    assert len(ledger.account.pending_events) == before
    assert ledger.account.spend_total == Decimal("150.00")
    assert errors.CurrencyMismatch.code == "currency_mismatch"


def test_a_refused_payment_leaves_no_events_even_when_lots_are_due() -> None:
    ledger = Ledger().given(visit(at(0)))
    before = len(ledger.account.pending_events)

    with pytest.raises(errors.CurrencyMismatch):
        ledger.when(pay("50.00", at(400), currency="EUR"))

    assert ledger.account.pending_events[before:] == []
    assert ledger.available == 100


def test_a_refused_payment_can_be_sent_again_in_the_right_currency() -> None:
    ledger = Ledger()
    with pytest.raises(errors.CurrencyMismatch):
        ledger.when(pay("50.00", at(0), currency="EUR", id="p-1"))

    assert happened(ledger.when(pay("50.00", at(0), id="p-1"))) == ["PaymentRecorded"]


# ----------------------------------------------------------------------------- voids
def test_voiding_a_payment_removes_its_amount_and_its_count() -> None:
    big = pay("150.00", at(1))
    ledger = Ledger().given(pay("60.00", at(0)), big)

    (voided,) = ledger.when(void(big, at(2)))

    assert voided.entry is None
    assert ledger.account.spend_total == Decimal("60.00")
    assert ledger.account.payments == 1
    assert ledger.account.balance(ledger.program).discount_percent == 0
    assert ledger.entries() == []


def test_voiding_a_payment_never_takes_back_an_unlocked_reward() -> None:
    payments = [pay("10.00", at(n)) for n in range(5)]
    ledger = Ledger().given(*payments)

    ledger.when(void(payments[0], at(6)))

    assert ledger.account.balance(ledger.program).rewards_unlocked == 1
    assert ledger.account.payments == 4


def test_after_a_voided_payment_the_next_unlock_needs_the_next_multiple_of_5() -> None:
    payments = [pay("10.00", at(n)) for n in range(5)]
    ledger = Ledger().given(*payments, void(payments[0], at(6)))  # count back to 4

    later = [ledger.when(pay("10.00", at(7 + n)))[0] for n in range(6)]

    # counts 5..9 do not unlock again (the 5th already did); count 10 does
    assert [e.payments for e in later] == [5, 6, 7, 8, 9, 10]
    assert unlocked(later) == [None] * 5 + ["free-service"]
    assert ledger.account.balance(ledger.program).rewards_unlocked == 2


def test_voiding_a_payment_twice_is_refused() -> None:
    payment = pay("10.00", at(0))
    ledger = Ledger().given(payment, void(payment, at(1)))

    with pytest.raises(errors.InteractionNotVoidable):
        ledger.when(void(payment, at(2)))

    assert ledger.account.spend_total == Decimal("0.00")
