"""membership-plus and clinic-discounts on the pure domain: catalogue and vouchers, paid
memberships, benefits, money wallets and stamps, with exactly the issue's numbers."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.application.programs import builtin_programs
from domain import errors
from domain import interactions as di
from domain.account import PatientAccount
from tests.unit.dsl import Ledger, checkup, visit

PLUS = builtin_programs()["membership-plus"]
DISCOUNTS = builtin_programs()["clinic-discounts"]
T = datetime(2026, 1, 31, 10, tzinfo=UTC)
_n = iter(range(10**6))


def cause(when: datetime, source: str = "portal") -> dict[str, Any]:
    return {"source": source, "source_id": f"i-{next(_n)}", "occurred_at": when}


def redeem(
    reward: str, when: datetime = T, points: int | None = None, rid: str | None = None
) -> di.RedemptionRequest:
    return di.RedemptionRequest(
        **cause(when), redemption_id=rid or f"r-{next(_n)}", reward_id=reward, points=points
    )


def use(rid: str, when: datetime = T) -> di.RewardUse:
    return di.RewardUse(**cause(when, "front-desk"), redemption_id=rid)


def cancel(rid: str, when: datetime = T) -> di.RedemptionCancellation:
    return di.RedemptionCancellation(**cause(when), redemption_id=rid)


def buy(plan: str, amount: str, when: datetime = T, mid: str = "m-1") -> di.MembershipPurchase:
    return di.MembershipPurchase(
        **cause(when, "billing"),
        membership_id=mid,
        plan_id=plan,
        amount=Decimal(amount),
        currency="USD",
    )


def end(mid: str, when: datetime) -> di.MembershipCancellation:
    return di.MembershipCancellation(**cause(when, "billing"), membership_id=mid)


def pay(
    amount: str, when: datetime = T, cashback: str | None = None, prepaid: str | None = None
) -> di.Payment:
    return di.Payment(
        **cause(when, "pos"),
        amount=Decimal(amount),
        currency="GBP",
        cashback_used=Decimal(cashback) if cashback else None,
        prepaid_used=Decimal(prepaid) if prepaid else None,
    )


def prepay(amount: str, when: datetime = T) -> di.Prepayment:
    return di.Prepayment(
        **cause(when, "pos"), prepayment_id=f"pp-{next(_n)}", amount=Decimal(amount), currency="GBP"
    )


def rich(points: int = 5000) -> Ledger:
    """A membership-plus account with ``points`` points (screenings at 200, then a top-up)."""
    ledger = Ledger(program=PLUS)
    day = T - timedelta(days=20)
    while ledger.available < points:
        ledger.given(checkup(day, "screening"))
        day += timedelta(hours=1)
    return ledger


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# ------------------------------------------------------------------------- catalogue
def test_a_catalogue_redemption_takes_the_price_and_issues_a_voucher_for_90_days() -> None:
    ledger = rich(400)
    events = ledger.when(redeem("parking-pass", rid="r-park"))
    assert kinds(events) == ["PointsRedeemed", "VoucherIssued"]
    assert events[0].entry.points == -300
    assert (events[1].voucher_id, events[1].expires_at) == ("r-park", T + timedelta(days=90))


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (lambda: redeem("yacht"), errors.UnknownReward),
        (lambda: redeem("parking-pass", points=299), errors.PriceMismatch),
    ],
)
def test_catalogue_refusals(request_: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        rich(400).when(request_())


def test_the_price_may_be_given_when_it_is_the_price() -> None:
    assert kinds(rich(400).when(redeem("parking-pass", points=300))) == [
        "PointsRedeemed",
        "VoucherIssued",
    ]


@pytest.mark.parametrize(
    ("reward", "reason"),
    [
        ("free-checkup", "reward_not_available"),
        ("wellness-workshop", "reward_not_available"),
        ("gym-discount", "insufficient_points"),
    ],
)
def test_business_refusals_are_recorded(reward: str, reason: str) -> None:
    ledger = rich(1400)  # member tier
    (rejected,) = ledger.when(redeem(reward))
    assert isinstance(rejected, PatientAccount.RedemptionRejected)
    assert rejected.reason == reason


def test_parking_at_most_four_a_calendar_month_and_a_cancelled_one_frees_its_place() -> None:
    ledger = rich(3000)
    for k in range(4):
        ledger.given(redeem("parking-pass", T - timedelta(days=k), rid=f"p{k}"))
    (fifth,) = ledger.when(redeem("parking-pass", T))
    assert fifth.reason == "reward_limit_reached"
    assert kinds(ledger.when(redeem("parking-pass", datetime(2026, 2, 1, tzinfo=UTC)))) == [
        "PointsRedeemed",
        "VoucherIssued",
    ]
    ledger.given(cancel("p0", T + timedelta(minutes=1)))
    assert kinds(ledger.when(redeem("parking-pass", T + timedelta(minutes=2)))) == [
        "PointsRedeemed",
        "VoucherIssued",
    ]


def test_free_checkup_from_plus_and_workshops_for_premier_only() -> None:
    ledger = Ledger(program=PLUS).given(
        *[checkup(T - timedelta(days=20, hours=-k), "screening") for k in range(20)]
    )  # 4000 base points: premier
    assert ledger.tier == "premier"
    assert kinds(ledger.when(redeem("wellness-workshop"))) == ["PointsRedeemed", "VoucherIssued"]
    assert kinds(ledger.when(redeem("free-checkup"))) == ["PointsRedeemed", "VoucherIssued"]


# -------------------------------------------------------------------------- vouchers
def test_a_voucher_is_used_once() -> None:
    ledger = rich(400).given(redeem("parking-pass", rid="r1"))
    assert kinds(ledger.when(use("r1", T + timedelta(days=1)))) == ["VoucherUsed"]
    with pytest.raises(errors.VoucherUsed):
        ledger.when(use("r1", T + timedelta(days=2)))
    with pytest.raises(errors.VoucherUsed):
        ledger.when(cancel("r1", T + timedelta(days=3)))


def test_voucher_refusals() -> None:
    ledger = rich(700).given(redeem("parking-pass", rid="r1"), redeem("parking-pass", rid="r2"))
    with pytest.raises(errors.UnknownVoucher):
        ledger.when(use("r9"))
    with pytest.raises(errors.VoucherExpired):
        ledger.when(use("r1", T + timedelta(days=90)))
    back = ledger.when(cancel("r2", T + timedelta(days=1)))
    assert kinds(back) == ["RedemptionCancelled", "VoucherEnded"]
    assert ledger.account.vouchers["r2"].status == "cancelled"
    with pytest.raises(errors.VoucherCancelled):
        ledger.when(use("r2", T + timedelta(days=2)))


def test_an_unused_voucher_expires_at_maintenance_dated_at_its_expiry() -> None:
    ledger = rich(400).given(redeem("parking-pass", rid="r1"))
    ended = [
        e
        for e in ledger.maintain(T + timedelta(days=91))
        if isinstance(e, PatientAccount.VoucherEnded)
    ]
    assert [(e.voucher_id, e.status, e.at) for e in ended] == [
        ("r1", "expired", T + timedelta(days=90))
    ]


# ----------------------------------------------------------------------- memberships
def test_a_monthly_membership_from_31_january_runs_to_28_february() -> None:
    ledger = Ledger(program=PLUS)
    started, benefits = ledger.when(buy("monthly", "45.00"))
    assert benefits.benefits == ["phone_access", "same_doctor"]
    assert (started.started_at, started.paid_through) == (T, datetime(2026, 2, 28, 10, tzinfo=UTC))


def test_buying_again_while_active_renews_extending_paid_through() -> None:
    ledger = Ledger(program=PLUS).given(buy("annual", "480.00"))
    (renewed,) = ledger.when(buy("annual", "480.00", T + timedelta(days=300), mid="m-2"))
    assert isinstance(renewed, PatientAccount.MembershipRenewed)
    assert (renewed.membership_id, renewed.paid_through) == (
        "m-1",
        datetime(2028, 1, 31, 10, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("purchase", "error"),
    [
        (lambda: buy("gold", "1.00"), errors.UnknownPlan),
        (lambda: buy("annual", "479.99"), errors.PriceMismatch),
    ],
)
def test_membership_refusals(purchase: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Ledger(program=PLUS).when(purchase())
    with pytest.raises(errors.UnknownMembership):
        Ledger(program=PLUS).when(end("m-9", T))


def test_a_cancelled_membership_runs_to_paid_through_then_lapses_at_maintenance() -> None:
    ledger = Ledger(program=PLUS).given(buy("monthly", "45.00"), end("m-1", T + timedelta(days=3)))
    in_time = ledger.when(visit(T + timedelta(days=10)))
    assert in_time[0].awards[0].credit.points == 200  # 100 x 1.00 x 2.00
    lapsed = [
        e
        for e in ledger.maintain(datetime(2026, 3, 1, tzinfo=UTC))
        if isinstance(e, PatientAccount.MembershipLapsed)
    ]
    assert [e.at for e in lapsed] == [datetime(2026, 2, 28, 10, tzinfo=UTC)]
    after = ledger.when(visit(datetime(2026, 3, 2, tzinfo=UTC)))
    assert after[0].awards[0].credit.points == 100
    late = ledger.when(visit(T + timedelta(days=20)))  # late, inside the paid period
    assert late[0].awards[0].credit.points == 200


def test_points_are_floor_of_base_times_tier_times_membership() -> None:
    ledger = rich(1500)  # plus (x1.20)
    assert ledger.tier == "plus"
    ledger.given(buy("annual", "480.00", T + timedelta(days=1)))
    (earned,) = [
        e
        for e in ledger.when(visit(T + timedelta(days=2), "telehealth"))
        if isinstance(e, PatientAccount.PointsEarned)
    ]
    assert earned.awards[0].credit.points == 120  # floor(50 x 1.20 x 2.00)
    assert earned.awards[0].qualifying == 50  # qualifying points are base points


def test_benefits_come_from_the_tier_and_the_membership() -> None:
    ledger = rich(1500).given(buy("monthly", "45.00", T + timedelta(days=1)))
    assert ledger.account.holdings(PLUS).benefits == (
        "phone_access",
        "priority_booking",
        "same_doctor",
    )
    ledger.maintain(datetime(2026, 4, 1, tzinfo=UTC))
    assert ledger.account.holdings(PLUS).benefits == ("priority_booking",)


# ----------------------------------------------------------------- wallets and stamps
def test_cashback_is_2_percent_rounded_down_to_the_cent_and_expires_after_180_days() -> None:
    ledger = Ledger(program=DISCOUNTS).given(pay("99.99"))
    assert ledger.account.cashback_balance == Decimal("1.99")
    ledger.given(pay("10.00", T + timedelta(days=1), cashback="1.50"))
    assert ledger.account.cashback_balance == Decimal("0.69")  # 1.99 - 1.50 + 0.20
    with pytest.raises(errors.InsufficientCashback):
        ledger.when(pay("10.00", T + timedelta(days=2), cashback="0.70"))
    expired = [
        e
        for e in ledger.maintain(T + timedelta(days=181))
        if isinstance(e, PatientAccount.CashbackExpired)
    ]
    assert [e.amount for e in expired] == [Decimal("0.49"), Decimal("0.20")]
    assert ledger.account.cashback_balance == Decimal("0.00")


def test_prepaid_wallet_and_its_discount_as_of_each_payment() -> None:
    ledger = Ledger(program=DISCOUNTS)
    ledger.given(prepay("150.00"))

    def discount(events: list[Any]) -> int:
        (paid,) = [e for e in events if isinstance(e, PatientAccount.PaymentRecorded)]
        return int(paid.prepayment_discount_percent)

    assert discount(ledger.when(pay("20.00", T + timedelta(days=1), prepaid="20.00"))) == 0
    ledger.given(prepay("60.00", T + timedelta(days=2)))
    assert discount(ledger.when(pay("5.00", T + timedelta(days=3)))) == 10
    ledger.given(prepay("300.00", T + timedelta(days=4)))
    assert discount(ledger.when(pay("5.00", T + timedelta(days=5)))) == 20
    assert discount(ledger.when(pay("5.00", T + timedelta(days=366)))) == 10  # the first is out
    assert ledger.account.prepaid_balance == Decimal("490.00")
    with pytest.raises(errors.InsufficientPrepaid):
        ledger.when(pay("5.00", T + timedelta(days=367), prepaid="490.01"))


def test_the_spend_ladder_counts_the_amount_only() -> None:
    ledger = Ledger(program=DISCOUNTS).given(prepay("500.00"))
    (paid,) = [
        e
        for e in ledger.when(pay("150.00", T + timedelta(hours=1), prepaid="100.00"))
        if isinstance(e, PatientAccount.PaymentRecorded)
    ]
    assert (paid.spend_total, paid.discount_percent) == (Decimal("150.00"), 2)


def test_every_fifth_payment_issues_a_free_service_voucher_for_365_days() -> None:
    ledger = Ledger(program=DISCOUNTS).given(
        *[pay("10.00", T + timedelta(days=d)) for d in range(4)]
    )
    fifth = ledger.when(pay("10.00", T + timedelta(days=4)))
    issued = [e for e in fifth if isinstance(e, PatientAccount.VoucherIssued)]
    assert [(e.reward_id, e.expires_at) for e in issued] == [
        ("free-service", T + timedelta(days=369))
    ]
    assert kinds(ledger.when(use(issued[0].voucher_id, T + timedelta(days=10)))) == ["VoucherUsed"]


def test_reviews_earn_50_once_per_rolling_30_days_and_nothing_else_earns() -> None:
    review = lambda when: di.Review(**cause(when), rating=4)  # noqa: E731
    ledger = Ledger(program=DISCOUNTS)
    assert ledger.when(review(T))[0].awards[0].credit.points == 50
    assert ledger.when(review(T + timedelta(days=29)))[0].outcome == "review_cooldown"
    assert ledger.when(visit(T))[0].outcome == "no_rule"


# ---------------------------------------------------------------------- properties
wallet_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("pay"), st.integers(1, 40000), st.integers(0, 3000), st.integers(0, 5000)
        ),
        st.tuples(st.just("prepay"), st.integers(1, 60000)),
        st.tuples(st.just("maintain"), st.integers(0, 400)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=wallet_ops)
def test_wallets_never_go_below_zero_and_equal_their_movements(ops: list[tuple[Any, ...]]) -> None:
    ledger = Ledger(program=DISCOUNTS)
    for day, op in enumerate(ops, start=1):
        when = T + timedelta(days=day)
        try:
            if op[0] == "pay":
                cents = lambda n: f"{n // 100}.{n % 100:02d}" if n else None  # noqa: E731
                ledger.given(
                    pay(cents(op[1]) or "0.01", when, cashback=cents(op[2]), prepaid=cents(op[3]))
                )
            elif op[0] == "prepay":
                ledger.given(prepay(f"{op[1] // 100}.{op[1] % 100:02d}", when))
            else:
                ledger.maintain(T + timedelta(days=op[1]))
        except (errors.InsufficientCashback, errors.InsufficientPrepaid):
            pass
        account = ledger.account
        assert account.cashback_balance >= 0 and account.prepaid_balance >= 0
        assert account.cashback_balance == sum(
            (lot.remaining for lot in account.cashback_lots.values()), Decimal(0)
        )
        events = account.pending_events
        earned = sum(
            (
                e.cashback_earned or 0
                for e in events
                if isinstance(e, PatientAccount.PaymentRecorded)
            ),
            Decimal(0),
        )
        drawn = sum(
            (
                a
                for e in events
                if isinstance(e, PatientAccount.PaymentRecorded)
                for _, a in e.cashback_drawn or ()
            ),
            Decimal(0),
        )
        gone = sum(
            (e.amount for e in events if isinstance(e, PatientAccount.CashbackExpired)), Decimal(0)
        )
        assert account.cashback_balance == earned - drawn - gone
        credited = sum(
            (e.amount for e in events if isinstance(e, PatientAccount.PrepaymentRecorded)),
            Decimal(0),
        )
        spent = sum(
            (e.prepaid_drawn or 0 for e in events if isinstance(e, PatientAccount.PaymentRecorded)),
            Decimal(0),
        )
        assert account.prepaid_balance == credited - spent


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    uses=st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(0, 120)), max_size=12)
)
def test_a_voucher_is_used_at_most_once(uses: list[tuple[str, int]]) -> None:
    ledger = rich(1000).given(*[redeem("parking-pass", T, rid=r) for r in ("r1", "r2", "r3")])
    for rid, days in uses:
        with contextlib.suppress(errors.VoucherUsed, errors.VoucherExpired):
            ledger.given(use(rid, T + timedelta(days=days)))
    used = [
        e.voucher_id
        for e in ledger.account.pending_events
        if isinstance(e, PatientAccount.VoucherUsed)
    ]
    assert len(used) == len(set(used))
    assert all(ledger.account.vouchers[v].status == "used" for v in used)
