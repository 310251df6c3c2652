"""The rewards side's rows, folded from the pure domain's events: vouchers, membership
changes and their monthly KPIs, benefit changes (tier or membership) and wallet movements."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from projections.changes import (
    BatchChanges,
    MembershipChange,
    MembershipKpiDelta,
    MembershipRow,
    Sums,
    VoucherChange,
    VoucherRow,
    months_between,
)
from projections.handlers import Fold
from projections.service import tier_benefits
from tests.unit.dsl import Ledger, checkup
from tests.unit.stored_events import as_stored
from tests.unit.test_program_rewards import (
    DISCOUNTS,
    PLUS,
    T,
    buy,
    cancel,
    end,
    pay,
    prepay,
    redeem,
    rich,
    use,
)

BENEFITS = tier_benefits({"membership-plus": PLUS, "clinic-discounts": DISCOUNTS})
JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


def fold(events: list[Any], changes: BatchChanges | None = None) -> BatchChanges:
    changes = changes or BatchChanges()
    folding = Fold(changes, BENEFITS)
    for position, event in enumerate(events, start=1):
        folding.apply(as_stored(position, event))
    return changes


def days(n: float) -> datetime:
    return T + timedelta(days=n)


def test_vouchers_issued_used_cancelled_and_expired_in_one_batch() -> None:
    ledger = rich(1000)
    ledger.given(
        redeem("parking-pass", days(1), rid="a"),
        use("a", days(2)),
        redeem("parking-pass", days(3), rid="b"),
        cancel("b", days(4)),
        redeem("parking-pass", days(5), rid="c"),
    )
    ledger.maintain(days(200))
    changes = fold(ledger.account.pending_events)
    assert changes.voucher_changes == {}
    key = ("membership-plus", ledger.patient_id)
    assert {k[2]: (v.status, v.used_at) for k, v in changes.vouchers.items()} == {
        "a": ("used", days(2)),
        "b": ("cancelled", None),
        "c": ("expired", None),
    }
    assert changes.vouchers[(*key, "c")] == VoucherRow(
        *key, "c", "parking-pass", 300, days(5), days(95), None, "expired"
    )


def test_a_voucher_of_an_earlier_batch_is_changed_by_the_writer() -> None:
    ledger = rich(1000)
    ledger.given(redeem("parking-pass", days(1), rid="a"))
    issued = len(ledger.account.pending_events)
    ledger.given(use("a", days(2)))
    later = fold(ledger.account.pending_events[issued:], BatchChanges(accounts=_rows(ledger)))
    key = ("membership-plus", ledger.patient_id, "a")
    assert later.vouchers == {}
    assert later.voucher_changes == {key: [VoucherChange("used", days(2))]}


def _rows(ledger: Ledger) -> Any:
    """The balances rows an earlier batch of ``ledger``'s events left."""
    return fold(ledger.account.pending_events[:1]).accounts


def test_membership_changes_are_kept_in_ledger_order_and_counted_by_month() -> None:
    ledger = Ledger(program=PLUS, patient_id="mia")
    start = datetime(2026, 1, 31, 10, tzinfo=UTC)
    ledger.given(buy("monthly", "45.00", start, mid="m1"))  # to 28 Feb
    ledger.given(buy("monthly", "45.00", datetime(2026, 2, 10, tzinfo=UTC), mid="m1"))  # 28 Mar
    ledger.given(end("m1", datetime(2026, 2, 11, tzinfo=UTC)))
    ledger.maintain(datetime(2026, 4, 1, tzinfo=UTC))
    changes = fold(ledger.account.pending_events)
    key = ("membership-plus", "mia", "m1")
    [(found, membership_changes)] = changes.membership_changes.items()
    assert found == key
    assert [c.kind for c in membership_changes] == ["started", "renewed", "cancelled", "lapsed"]
    sums = Sums()
    row = None
    for change in membership_changes:
        row = change.apply(key, row, sums)
    assert row == MembershipRow(
        *key,
        "monthly",
        start,
        datetime(2026, 3, 28, 10, tzinfo=UTC),
        "lapsed",
        datetime(2026, 2, 11, tzinfo=UTC),
    )
    forty_five = Decimal("45.00")
    assert sums.memberships == {
        ("membership-plus", JAN): MembershipKpiDelta(1, 1, 0, 0, forty_five),
        ("membership-plus", FEB): MembershipKpiDelta(1, 0, 1, 0, forty_five),
        ("membership-plus", MAR): MembershipKpiDelta(1, 0, 0, 1, Decimal("0.00")),
    }


def test_a_membership_bought_again_after_a_lapse_keeps_its_start_and_counts_once() -> None:
    key = ("membership-plus", "mia", "m1")
    sums = Sums()
    jan5, feb5 = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 2, 5, tzinfo=UTC)
    row = MembershipChange("started", jan5, "monthly", Decimal("45.00"), feb5).apply(
        key, None, sums
    )
    row = MembershipChange("lapsed", feb5).apply(key, row, sums)
    feb20, mar20 = datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)
    row = MembershipChange("started", feb20, "monthly", Decimal("45.00"), mar20).apply(
        key, row, sums
    )
    assert (row.started_at, row.paid_through, row.status) == (jan5, mar20, "active")
    actives = {month: delta.active for (_, month), delta in sums.memberships.items()}
    assert actives == {JAN: 1, FEB: 1, MAR: 1}  # February once, though paid twice
    assert sums.memberships[("membership-plus", FEB)].started == 1


def test_months_between_is_the_utc_months_a_half_open_period_touches() -> None:
    feb1 = datetime(2026, 2, 1, tzinfo=UTC)
    assert months_between(datetime(2026, 1, 1, tzinfo=UTC), feb1) == [JAN]
    assert months_between(datetime(2026, 1, 31, tzinfo=UTC), feb1 + timedelta(seconds=1)) == [
        JAN,
        FEB,
    ]
    assert months_between(feb1, feb1) == []


def test_benefits_name_their_source_from_the_tier_held_then() -> None:
    ledger = Ledger(program=PLUS, patient_id="pia")
    ledger.given(*[checkup(days(-20 + d), "screening") for d in range(8)])  # 1600: plus
    ledger.given(buy("monthly", "45.00", days(0), mid="p1"))
    changes = fold(ledger.account.pending_events)
    [upgraded, bought] = changes.benefit_changes
    assert upgraded.benefits == ("priority_booking",)
    assert upgraded.tier_benefits == frozenset({"priority_booking"})  # plus's
    assert bought.benefits == ("phone_access", "priority_booking", "same_doctor")
    assert bought.at == days(0)
    assert "same_doctor" not in bought.tier_benefits  # so: a membership's


def test_wallet_movements_of_payments_prepayments_and_expiry() -> None:
    ledger = Ledger(program=DISCOUNTS, patient_id="dee")
    ledger.given(
        prepay("300.00", days(0)),
        pay("120.00", days(1), prepaid="50.00"),  # cashback 2.40
        pay("30.00", days(2), cashback="1.00"),  # + 0.60
    )
    ledger.maintain(days(400))  # 2.00 expires
    changes = fold(ledger.account.pending_events)
    [(key, wallet)] = changes.wallets.items()
    assert key == ("clinic-discounts", "dee")
    assert (wallet.cashback, wallet.prepaid, wallet.discount_percent) == (
        Decimal("0.00"),
        Decimal("250.00"),
        10,  # 300.00 prepaid within 365 days of the latest payment
    )
    assert wallet.updated_at == changes.accounts[ledger.account.id].updated_at
    assert ledger.account.holdings(DISCOUNTS).prepaid_balance == Decimal("250.00")


def test_programs_without_wallets_leave_no_wallet_rows() -> None:
    ledger = rich(600)
    ledger.given(redeem("parking-pass", days(1), rid="a"))
    assert fold(ledger.account.pending_events).wallets == {}
