"""Erasure closes the account (ADR 0015): points forfeited by one entry, nothing accepted
after it, the statement saying why; the money side is reported as owed, never forfeited."""

from __future__ import annotations

from typing import Any

import pytest

from domain import errors
from domain import interactions as di
from domain.account import PatientAccount, entries_of
from domain.entries import statement_lines_of
from tests.unit.dsl import Ledger, at, checkup, visit


def erase(when: Any = None, reason: str = "gdpr_art17") -> di.ErasureRequest:
    return di.ErasureRequest(
        source="crm", source_id=f"erase-{id(when)}", occurred_at=when or at(3), reason=reason
    )


def test_erasure_forfeits_the_available_points_by_one_entry_and_closes() -> None:
    ledger = Ledger().given(visit(at(0)), checkup(at(1)))
    earned = ledger.available
    assert earned > 0
    events = ledger.when(erase(at(2)))
    (closing,) = [e for e in events if isinstance(e, PatientAccount.AccountErased)]
    (entry,) = entries_of(closing)
    assert (entry.kind, entry.points, entry.balance_after, entry.reason) == (
        "adjusted",
        -earned,
        0,
        "gdpr_art17",
    )
    assert ledger.available == 0
    assert ledger.account.closed
    assert ledger.replayed().closed and ledger.replayed().available == 0


def test_nothing_is_accepted_after_erasure_and_redeliveries_stay_duplicates() -> None:
    first = visit(at(0))
    ledger = Ledger().given(first)
    ledger.when(erase(at(1)))
    with pytest.raises(errors.SubjectErased):
        ledger.when(visit(at(2)))
    assert ledger.when(first) == []  # the account's own receipt still knows it
    assert ledger.maintain(at(400)) == []  # maintenance leaves a closed account alone


def test_an_empty_account_closes_with_a_statement_line_saying_why() -> None:
    ledger = Ledger()
    (closing,) = ledger.when(erase(at(1), reason="patient_request"))
    assert isinstance(closing, PatientAccount.AccountErased)
    assert entries_of(closing) == []
    (line,) = statement_lines_of(closing, 0)
    assert (line.kind, line.points, line.reason) == ("noted", 0, "patient_request")


def test_vouchers_are_cancelled_memberships_end_and_wallets_are_owed() -> None:
    from decimal import Decimal

    from careledger.application.programs import builtin_programs

    plus = Ledger(program=builtin_programs()["membership-plus"])
    plus.given(
        *[checkup(at(0, hours=h), "screening") for h in range(3)],
        di.MembershipPurchase(
            source="billing",
            source_id="mp1",
            occurred_at=at(1),
            membership_id="m1",
            plan_id="monthly",
            amount=Decimal("45.00"),
            currency="USD",
        ),
        di.RedemptionRequest(
            source="portal",
            source_id="rq1",
            occurred_at=at(2),
            redemption_id="v1",
            reward_id="parking-pass",
            points=None,
        ),
    )
    assert plus.account.vouchers["v1"].status == "issued"
    plus.when(erase(at(3)))
    assert plus.account.vouchers["v1"].status == "cancelled"
    assert plus.account.memberships["m1"].status == "lapsed"
    wallets = Ledger(program=builtin_programs()["clinic-discounts"])
    wallets.given(
        di.Prepayment(
            source="pos",
            source_id="pp1",
            occurred_at=at(1),
            prepayment_id="pp1",
            amount=Decimal("50.00"),
            currency="GBP",
        )
    )
    (closing,) = wallets.when(erase(at(2)))
    assert isinstance(closing, PatientAccount.AccountErased)
    assert (closing.owed_prepaid, closing.owed_cashback) == (Decimal("50.00"), Decimal("0.00"))
    assert wallets.account.prepaid_balance == Decimal("0.00")
