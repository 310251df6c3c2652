"""coalition-health on the pure domain: purchases by partner and category, lots that remember
their issuer, redemption across the network except the wellness centre's sub-ledger, and the
portal engagement caps, with exactly the issue's numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from careledger.application.programs import builtin_programs
from domain import errors
from domain import interactions as di
from domain.account import PatientAccount
from tests.unit.dsl import Ledger, visit

COALITION = builtin_programs()["coalition-health"]
T = datetime(2026, 3, 2, 10, tzinfo=UTC)  # a Monday
_n = iter(range(10**6))


def buy(partner: str, category: str, amount: str, when: datetime = T) -> di.Purchase:
    return di.Purchase(
        source="pos",
        source_id=f"pu-{next(_n)}",
        occurred_at=when,
        purchase_id=f"p-{next(_n)}",
        partner_id=partner,
        amount=Decimal(amount),
        currency="CAD",
        category=category,
    )


def engage(action: str, when: datetime = T) -> di.Engagement:
    n = next(_n)
    return di.Engagement(
        source="portal", source_id=f"en-{n}", occurred_at=when, engagement_id=f"e{n}", action=action
    )


def redeem_at(points: int, partner: str | None, when: datetime = T) -> di.RedemptionRequest:
    n = next(_n)
    return di.RedemptionRequest(
        source="portal",
        source_id=f"rd-{n}",
        occurred_at=when,
        redemption_id=f"r{n}",
        reward_id="gift",
        points=points,
        partner_id=partner,
    )


def earned(events: list[Any]) -> list[tuple[str, int]]:
    return [
        (a.rule_id, a.credit.points)
        for e in events
        if isinstance(e, PatientAccount.PointsEarned)
        for a in e.awards
    ]


def coalition() -> Ledger:
    return Ledger(program=COALITION)


@pytest.mark.parametrize(
    ("partner", "category", "amount", "lines"),
    [
        ("pharmacy-1", "front_store", "12.99", [("purchase.pharmacy.front_store", 129)]),
        ("pharmacy-1", "prescription", "80.00", []),
        ("giftshop-1", "gift", "7.50", [("purchase.giftshop.gift", 37)]),
        ("wellness-1", "wellness_class", "20.00", [("purchase.wellness.class", 300)]),
        ("pharmacy-1", "gift", "10.00", []),
        ("clinic-main", "service", "150.00", []),
    ],
)
def test_purchases_earn_by_partner_and_category(
    partner: str, category: str, amount: str, lines: list[Any]
) -> None:
    assert earned(coalition().when(buy(partner, category, amount))) == lines


def test_an_unknown_partner_is_refused() -> None:
    with pytest.raises(errors.UnknownPartner):
        coalition().when(buy("bakery-9", "gift", "1.00"))
    with pytest.raises(errors.UnknownPartner):
        coalition().when(redeem_at(10, "bakery-9"))


def test_lots_remember_their_issuer_visits_are_the_home_partners() -> None:
    ledger = coalition().given(visit(T), buy("pharmacy-1", "front_store", "5.00"))
    assert sorted(lot.partner or "" for lot in ledger.account.lots.values()) == [
        "clinic-main",
        "pharmacy-1",
    ]


def test_a_pharmacy_redemption_takes_clinic_and_pharmacy_lots_soonest_expiry_first() -> None:
    ledger = coalition().given(
        visit(T),  # clinic 100, expires first
        buy("pharmacy-1", "front_store", "10.00", T + timedelta(days=1)),  # pharmacy 100
        buy("wellness-1", "wellness_class", "10.00", T + timedelta(days=2)),  # wellness 150
    )

    (redeemed,) = ledger.when(redeem_at(150, "pharmacy-1", T + timedelta(days=3)))

    assert isinstance(redeemed, PatientAccount.PointsRedeemed)
    assert [(a.partner, a.points) for a in redeemed.allocations] == [
        ("clinic-main", 100),
        ("pharmacy-1", 50),
    ]
    assert redeemed.partner_id == "pharmacy-1"


def test_wellness_points_are_spent_only_at_the_wellness_centre() -> None:
    ledger = coalition().given(buy("wellness-1", "wellness_class", "10.00"))  # 150

    elsewhere = ledger.when(redeem_at(100, "pharmacy-1", T + timedelta(hours=1)))
    home = ledger.when(redeem_at(100, None, T + timedelta(hours=2)))
    there = ledger.when(redeem_at(100, "wellness-1", T + timedelta(hours=3)))

    assert [(type(e).__name__, getattr(e, "available", None)) for e in elsewhere + home] == [
        ("RedemptionRejected", 0),
        ("RedemptionRejected", 0),
    ]
    assert [a.partner for a in there[0].allocations] == ["wellness-1"]


# --------------------------------------------------------------------------- engagement
@pytest.mark.parametrize(
    ("action", "points", "cap", "period"),
    [
        ("record_viewed", 10, 5, timedelta(days=1)),
        ("message_sent", 10, 5, timedelta(days=1)),
        ("bill_paid_online", 25, 2, timedelta(days=1)),
        ("appointment_booked_online", 25, 4, timedelta(days=1)),
        ("content_shared", 20, 2, timedelta(days=1)),
        ("survey_completed", 50, 1, timedelta(days=7)),
        ("social_follow", 100, 1, timedelta(days=30)),
    ],
)
def test_every_engagement_cap(action: str, points: int, cap: int, period: timedelta) -> None:
    ledger = coalition()
    paid = [earned(ledger.when(engage(action, T + k * period))) for k in range(cap + 1)]

    assert paid[:cap] == [[(f"engagement.{action}", points)]] * cap
    assert paid[cap] == []


def test_portal_logins_once_a_day_and_twenty_a_month() -> None:
    ledger = coalition()
    march = datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert earned(ledger.when(engage("portal_login", march))) == [("engagement.portal_login", 5)]
    assert earned(ledger.when(engage("portal_login", march + timedelta(hours=5)))) == []
    for d in range(1, 20):
        assert earned(ledger.when(engage("portal_login", march + timedelta(days=d)))) != []
    assert earned(ledger.when(engage("portal_login", march + timedelta(days=20)))) == []  # 21st
    assert earned(ledger.when(engage("portal_login", datetime(2026, 4, 1, 8, tzinfo=UTC)))) != []


def test_social_follow_once_per_lifetime_and_surveys_once_a_quarter() -> None:
    ledger = coalition().given(engage("social_follow"), engage("survey_completed"))
    assert earned(ledger.when(engage("social_follow", T + timedelta(days=900)))) == []
    assert earned(ledger.when(engage("survey_completed", datetime(2026, 3, 31, tzinfo=UTC)))) == []
    assert earned(ledger.when(engage("survey_completed", datetime(2026, 4, 1, tzinfo=UTC)))) != []
