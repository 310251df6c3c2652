"""Redemptions and their cancellation: soonest-expiring lots first, rejected when short,
cancellation returns points with their original expiry (or records them expired)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain import errors
from domain.account import entries_of
from tests.unit.dsl import Ledger, at, cancel, redeem, visit, void

YEAR = timedelta(days=365)


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def lines(events: list[Any]) -> list[tuple[str, int, int, str]]:
    return [
        (e.kind, e.points, e.balance_after, e.rule_id)
        for event in events
        for e in entries_of(event)
    ]


def two_lots() -> tuple[Ledger, Any, Any]:
    """Lot A: 100 expiring day 365; lot B: 100 expiring day 465."""
    a, b = visit(at(0)), visit(at(100))
    ledger = Ledger().given(a, b)
    return ledger, a, b


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


# -------------------------------------------------------------------------- redeeming
def test_a_redemption_takes_points_from_the_soonest_expiring_lots_first() -> None:
    ledger, a, b = two_lots()

    events = ledger.when(redeem(150, "r-1", at(200)))

    assert happened(events) == ["PointsRedeemed"]
    assert lines(events) == [("redeemed", -150, 50, "redemption")]
    assert [(x.expires_at, x.points) for x in events[0].allocations] == [
        (at(0) + YEAR, 100),
        (at(100) + YEAR, 50),
    ]
    assert lot_of(ledger, a).remaining == 0
    assert lot_of(ledger, b).remaining == 50


def test_the_soonest_expiring_lot_is_used_whatever_order_it_arrived_in() -> None:
    later, sooner = visit(at(100)), visit(at(0))
    ledger = Ledger().given(later, sooner)

    ledger.when(redeem(60, "r-1", at(200)))

    assert lot_of(ledger, sooner).remaining == 40
    assert lot_of(ledger, later).remaining == 100


def test_redeeming_exactly_the_available_points_leaves_zero() -> None:
    ledger, _, _ = two_lots()

    assert lines(ledger.when(redeem(200, "r-1", at(200)))) == [("redeemed", -200, 0, "redemption")]


def test_a_redemption_for_more_than_available_is_rejected_and_recorded() -> None:
    ledger, _, _ = two_lots()

    events = ledger.when(redeem(201, "r-1", at(200)))

    assert happened(events) == ["RedemptionRejected"]
    assert (events[0].reason, events[0].points, events[0].available) == (
        "insufficient_points",
        201,
        200,
    )
    assert lines(events) == []
    assert ledger.available == 200


def test_a_redemption_is_judged_after_due_lots_expire() -> None:
    ledger, _, _ = two_lots()

    events = ledger.when(redeem(150, "r-1", at(365)))

    assert happened(events) == ["PointsExpired", "RedemptionRejected"]
    assert events[1].available == 100


def test_a_repeated_redemption_id_is_noted_and_takes_nothing() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(30, "r-1", at(1)))

    events = ledger.when(redeem(30, "r-1", at(2)))

    assert happened(events) == ["InteractionNoted"]
    assert events[0].outcome == "redemption_id_repeated"
    assert ledger.available == 70


def test_a_rejected_redemption_id_is_not_retried_under_the_same_id() -> None:
    ledger = Ledger().given(redeem(30, "r-1", at(0)), visit(at(1)))

    events = ledger.when(redeem(30, "r-1", at(2)))

    assert events[0].outcome == "redemption_id_repeated"
    assert ledger.available == 100


def test_redelivering_a_redemption_is_a_duplicate() -> None:
    request = redeem(30, "r-1", at(1))
    ledger = Ledger().given(visit(at(0)), request)

    assert ledger.when(request) == []
    assert ledger.available == 70


def test_lifetime_redeemed_counts_redemptions_net_of_returns() -> None:
    ledger = Ledger().given(
        visit(at(0)), redeem(30, "r-1", at(1)), redeem(20, "r-2", at(1)), cancel("r-2", at(2))
    )

    balance = ledger.account.balance(ledger.program)

    assert (balance.available, balance.lifetime_earned, balance.lifetime_redeemed) == (70, 100, 30)


# ------------------------------------------------------------------------- cancelling
def test_cancelling_returns_the_points_to_their_lots_with_the_original_expiry() -> None:
    ledger, a, b = two_lots()
    ledger.given(redeem(150, "r-1", at(200)))

    events = ledger.when(cancel("r-1", at(250)))

    assert happened(events) == ["RedemptionCancelled"]
    assert lines(events) == [("returned", 150, 200, "redemption.cancel")]
    assert (lot_of(ledger, a).remaining, lot_of(ledger, a).expires_at) == (100, at(0) + YEAR)
    assert (lot_of(ledger, b).remaining, lot_of(ledger, b).expires_at) == (100, at(100) + YEAR)
    assert ledger.account.redemptions["r-1"].status == "cancelled"


def test_returned_points_expire_when_their_original_lot_does() -> None:
    ledger, _, _ = two_lots()
    ledger.given(redeem(150, "r-1", at(200)), cancel("r-1", at(250)))

    events = ledger.maintain(at(365))

    assert lines(events) == [("expired", -100, 100, "expiry")]
    assert ledger.entries()[-1].occurred_at == at(0) + YEAR


def test_cancelling_after_a_lot_expired_records_those_points_expired() -> None:
    ledger, _, b = two_lots()
    ledger.given(redeem(150, "r-1", at(200)))

    events = ledger.when(cancel("r-1", at(400)))  # lot A (day 365) has expired, B has not

    assert lines(events) == [
        ("returned", 150, 200, "redemption.cancel"),
        ("expired", -100, 100, "expiry"),
    ]
    assert events[0].expired[0].points == 100
    assert lot_of(ledger, b).remaining == 100
    assert ledger.available == 100
    balance = ledger.account.balance(ledger.program)
    assert (balance.lifetime_redeemed, balance.lifetime_expired) == (0, 100)


def test_cancelling_when_every_lot_has_expired_returns_and_expires_everything() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(100, "r-1", at(10)))

    events = ledger.when(cancel("r-1", at(500)))

    assert lines(events) == [
        ("returned", 100, 100, "redemption.cancel"),
        ("expired", -100, 0, "expiry"),
    ]
    assert ledger.available == 0


def test_cancelling_on_the_lots_expiry_instant_counts_it_expired() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(100, "r-1", at(10)))

    events = ledger.when(cancel("r-1", at(365)))

    assert lines(events)[-1] == ("expired", -100, 0, "expiry")


def test_cancelling_an_unknown_redemption_is_refused() -> None:
    ledger = Ledger().given(visit(at(0)))

    refused_without_trace(ledger, cancel("r-9", at(1)), errors.UnknownRedemption)
    assert errors.UnknownRedemption.code == "unknown_redemption"


def test_cancelling_twice_is_refused() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(50, "r-1", at(1)), cancel("r-1", at(2)))

    refused_without_trace(ledger, cancel("r-1", at(3)), errors.RedemptionNotCancellable)
    assert ledger.available == 100


def test_cancelling_a_rejected_redemption_is_refused() -> None:
    ledger = Ledger().given(visit(at(0)), redeem(500, "r-1", at(1)))

    refused_without_trace(ledger, cancel("r-1", at(2)), errors.RedemptionNotCancellable)
    assert errors.RedemptionNotCancellable.code == "redemption_not_cancellable"


def test_redelivering_a_cancellation_is_a_duplicate_not_a_refusal() -> None:
    request = cancel("r-1", at(2))
    ledger = Ledger().given(visit(at(0)), redeem(50, "r-1", at(1)), request)

    assert ledger.when(request) == []
    assert ledger.available == 100


def test_a_redemption_cannot_be_voided() -> None:
    request = redeem(50, "r-1", at(1))
    ledger = Ledger().given(visit(at(0)), request)

    refused_without_trace(ledger, void(request, at(2)), errors.InteractionNotVoidable)


def test_returned_points_first_repay_a_negative_balance() -> None:
    earned = visit(at(0))
    ledger = Ledger().given(earned, redeem(100, "r-1", at(10)), void(earned, at(20)))
    assert (ledger.available, ledger.account.debt) == (-100, 0 + 100)

    events = ledger.when(cancel("r-1", at(30)))

    assert lines(events) == [("returned", 100, 0, "redemption.cancel")]
    assert events[0].debt_repaid == 100
    assert ledger.account.debt == 0
    assert all(lot.remaining == 0 for lot in ledger.account.lots.values())
