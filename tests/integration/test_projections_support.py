"""Shared by the projection tests: a mixed scenario, applying it, and full table dumps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from careledger.application.ledger import Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from projections.database import connect
from projections.snapshot import dump as dump  # the projection tests import it from here
from tests.conftest import Database
from tests.events import cloudevent

PROGRAM = "clinic-default"
SOURCE = "urn:careledger:test"
RECEIVED_AT = datetime(2026, 6, 1, tzinfo=UTC)  # "now" for intake's future-time check
MAINTENANCE_AS_OF = datetime(2027, 2, 20, tzinfo=UTC)


def settings_for(db: Database) -> Settings:
    return Settings(database_url=db.url, database_schema=db.schema, metrics_port=0)


def ledger_for(db: Database) -> Ledger:
    return build_ledger(settings_for(db))


def apply(ledger: Ledger, events: list[dict[str, Any] | bytes], run: str = "t") -> None:
    """Apply events as one file ingest would, then let the referral relay catch up."""
    inputs = [
        Inbound(f"file:{run}:{n}", _raw(event), RECEIVED_AT)
        for n, event in enumerate(events, start=1)
    ]
    ledger.apply_batch(inputs)
    ledger.relay_until_idle()


def _raw(event: dict[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


def _visit(patient: str, day: str, eid: str, kind: str = "in_person") -> dict[str, Any]:
    data = {"visit_id": f"v-{eid}", "visit_type": kind}
    return cloudevent("visit.completed", patient, f"{day}T10:00:00Z", data, id=eid)


def _event(kind: str, patient: str, day: str, data: dict[str, Any], eid: str) -> dict[str, Any]:
    return cloudevent(kind, patient, f"{day}T10:00:00Z", data, id=eid)


def scenario() -> list[dict[str, Any] | bytes]:
    """ann earns to silver, redeems, cancels, is voided and pays; bob is referred by ann;
    cy only pays; two inputs are refused. (Expiry comes from maintenance afterwards.)"""
    ann = [
        _event("patient.enrolled", "ann", "2026-01-05", {"channel": "web"}, "ann-enrol"),
        *[_visit("ann", f"2026-01-{d:02d}", f"ann-v{d}") for d in range(6, 16)],
        _visit("ann", "2026-02-10", "ann-v-feb"),
        _event("checkup.completed", "ann", "2026-02-11", {"checkup_type": "screening"}, "ann-c"),
        _redeem("ann", "2026-02-12", "r-1", 500),
        _redeem("ann", "2026-02-13", "r-2", 99999),
        _event("redemption.cancelled", "ann", "2026-02-14", {"redemption_id": "r-1"}, "ann-x1"),
        _redeem("ann", "2026-02-15", "r-3", 300),
        _void("ann", "2026-02-16", "ann-v6", "ann-void-1"),
        _pay("ann", "2026-02-17", "120.00", "ann-pay-1"),
        _pay("ann", "2026-02-18", "85.50", "ann-pay-2"),
        _void("ann", "2026-02-19", "ann-pay-2", "ann-void-2"),
    ]
    bob = [
        _event(
            "patient.enrolled",
            "bob",
            "2026-03-01",
            {"channel": "app", "referred_by": "ann"},
            "bob-enrol",
        ),
        _visit("bob", "2026-03-10", "bob-v1", "telehealth"),
        _event("review.submitted", "bob", "2026-04-02", {"rating": 5}, "bob-review"),
    ]
    refused = [
        b"this is not json",
        _event("redemption.cancelled", "ann", "2026-04-03", {"redemption_id": "r-404"}, "ann-x2"),
    ]
    return [*ann, *bob, _pay("cy", "2026-04-05", "50.00", "cy-pay-1"), *refused]


def explained() -> list[dict[str, Any] | bytes]:
    """dan: interactions that earn nothing (a cap, a cooldown, too few steps, a refused
    redemption) and staff adjustments, a credit and a debit into debt that a visit repays."""
    return [
        _event("patient.enrolled", "dan", "2026-05-01", {"channel": "web"}, "dan-enrol"),
        _visit("dan", "2026-05-02", "dan-v1"),
        _event("checkup.completed", "dan", "2026-05-03", _wellness, "dan-aw1"),
        _event("checkup.completed", "dan", "2026-05-04", _wellness, "dan-aw2"),  # once a year
        _event("review.submitted", "dan", "2026-05-05", {"rating": 5}, "dan-rv1"),
        _event("review.submitted", "dan", "2026-05-06", {"rating": 4}, "dan-rv2"),  # cooldown
        _event("activity.reading", "dan", "2026-05-07", _few_steps, "dan-steps"),
        _adjust("dan", "2026-05-08", 250, "goodwill", "dan-adj1"),
        _redeem("dan", "2026-05-09", "r-9", 5000),  # more than available: refused
        _adjust("dan", "2026-05-10", -2000, "duplicate_account", "dan-adj2"),  # into debt
        _visit("dan", "2026-05-11", "dan-v2"),  # repays debt first
    ]


_wellness = {"checkup_type": "annual_wellness"}
_few_steps = {"metric": "steps", "value": 10, "day": "2026-05-07"}


def _adjust(patient: str, day: str, points: int, reason: str, eid: str) -> dict[str, Any]:
    data = {"adjustment_id": eid, "points": points, "reason": reason, "operator": "staff-7"}
    return _event("points.adjusted", patient, day, data, eid)


def _redeem(patient: str, day: str, rid: str, points: int) -> dict[str, Any]:
    data = {"redemption_id": rid, "reward_id": "gift", "points": points}
    return _event("redemption.requested", patient, day, data, f"{patient}-{rid}")


def _void(patient: str, day: str, target: str, eid: str) -> dict[str, Any]:
    data = {"voided_id": target, "voided_source": SOURCE, "reason": "entered_in_error"}
    return _event("interaction.voided", patient, day, data, eid)


def _pay(patient: str, day: str, amount: str, eid: str) -> dict[str, Any]:
    return _event("payment.recorded", patient, day, {"amount": amount, "currency": "USD"}, eid)


async def query(settings: Settings, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


COALITION = "coalition-health"
MOTION = "activity-motion"


def _in(program: str, kind: str, patient: str, time: str, data: dict[str, Any], eid: str) -> Any:
    return cloudevent(kind, patient, time, data, id=eid, programid=program)


def _buy(patient: str, day: str, partner: str, category: str, amount: str, eid: str) -> Any:
    data = {
        "purchase_id": eid,
        "partner_id": partner,
        "amount": amount,
        "currency": "CAD",
        "category": category,
    }
    return _in(COALITION, "purchase.recorded", patient, f"{day}T10:00:00Z", data, eid)


def _engage(patient: str, time: str, action: str, eid: str) -> Any:
    data = {"engagement_id": eid, "action": action}
    return _in(COALITION, "engagement.recorded", patient, time, data, eid)


def _redeem_at(patient: str, day: str, rid: str, points: int, partner: str) -> Any:
    data = {"redemption_id": rid, "reward_id": "gift", "points": points, "partner_id": partner}
    return _in(COALITION, "redemption.requested", patient, f"{day}T12:00:00Z", data, rid)


def coalition() -> list[dict[str, Any] | bytes]:
    """cora (coalition-health) buys at every partner, earns a visit and portal engagement
    (one login capped), redeems 200 at the pharmacy (100 clinic- and 100 pharmacy-issued
    points, soonest expiry first) and is refused 200 at the gift shop: of her 325 points the
    wellness centre's 150 are spent only there."""
    visit = {"visit_id": "cora-v1", "visit_type": "in_person"}
    return [
        _in(COALITION, "visit.completed", "cora", "2026-03-02T09:00:00Z", visit, "cora-v1"),
        _buy("cora", "2026-03-03", "pharmacy-1", "front_store", "12.00", "cora-p1"),  # 120
        _buy("cora", "2026-03-03", "pharmacy-1", "prescription", "80.00", "cora-p2"),  # 0
        _buy("cora", "2026-03-04", "giftshop-1", "gift", "10.00", "cora-p3"),  # 50
        _buy("cora", "2026-03-05", "wellness-1", "wellness_class", "10.00", "cora-p4"),  # 150
        _engage("cora", "2026-03-05T11:00:00Z", "portal_login", "cora-e1"),  # 5
        _engage("cora", "2026-03-05T12:00:00Z", "portal_login", "cora-e2"),  # once a day
        _engage("cora", "2026-03-06T11:00:00Z", "social_follow", "cora-e3"),  # 100
        _redeem_at("cora", "2026-03-10", "cora-r1", 200, "pharmacy-1"),
        _redeem_at("cora", "2026-03-11", "cora-r2", 200, "giftshop-1"),  # 175 spendable there
    ]


def _reading(patient: str, day: str, steps: int, arrives: str, eid: str) -> Any:
    data = {"metric": "steps", "value": steps, "day": day}
    return _in(MOTION, "activity.reading", patient, f"{arrives}T20:00:00Z", data, eid)


def activity() -> list[dict[str, Any] | bytes]:
    """walt (activity-motion) meets the goal on 1-3 and 5-11 March: the block 5-11 pays a
    streak bonus; the late reading of the 4th joins the runs, so the block moves to 1-7
    (reversed, paid again); a low reading changes nothing, and a void takes the 11th away."""
    days = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    return [
        *[
            _reading("walt", f"2026-03-{d:02d}", 12000, f"2026-03-{d:02d}", f"walt-{d}")
            for d in days
        ],
        _reading("walt", "2026-03-10", 3000, "2026-03-10", "walt-low"),
        _reading("walt", "2026-03-04", 10500, "2026-03-12", "walt-late"),
        _in(
            MOTION,
            "interaction.voided",
            "walt",
            "2026-03-13T08:00:00Z",
            {"voided_id": "walt-11", "voided_source": SOURCE, "reason": "entered_in_error"},
            "walt-void",
        ),
    ]


PLUS = "membership-plus"
DISCOUNTS = "clinic-discounts"
PLUS_MAINTENANCE = datetime(2026, 5, 1, tzinfo=UTC)  # mia's membership lapses, r2 expires
DISCOUNTS_MAINTENANCE = datetime(2026, 1, 1, tzinfo=UTC)  # dee's cashback expires


def _plus(kind: str, patient: str, day: str, data: dict[str, Any], eid: str) -> Any:
    return _in(PLUS, kind, patient, f"{day}T10:00:00Z", data, eid)


def _member(patient: str, day: str, mid: str, plan: str, amount: str) -> Any:
    data = {"membership_id": mid, "plan_id": plan, "amount": amount, "currency": "USD"}
    return _plus("membership.purchased", patient, day, data, f"{patient}-mp-{day}")


def _checkup(patient: str, day: str, kind: str) -> Any:
    return _plus("checkup.completed", patient, day, {"checkup_type": kind}, f"{patient}-c-{day}")


def _parking(day: str, rid: str) -> Any:
    data = {"redemption_id": rid, "reward_id": "parking-pass"}
    return _plus("redemption.requested", "mia", day, data, f"mia-{rid}")


def membership_plus() -> list[dict[str, Any] | bytes]:
    """mia (membership-plus) buys a monthly membership on 5 Jan (to 5 Feb), earns double,
    redeems three parking passes (r1 used, r2 left to expire, r3 cancelled), renews on 1 Feb
    (to 5 Mar) and cancels on 10 Feb: the maintenance of 1 May lapses it at 5 Mar and
    expires r2 at 12 Apr. pia reaches plus with eight screenings on 1-8 Jan
    (priority_booking, the tier's) and buys an annual membership on 20 Jan (to 20 Jan 2027)."""
    return [
        _member("mia", "2026-01-05", "m1", "monthly", "45.00"),
        _checkup("mia", "2026-01-06", "screening"),  # 400 (x2.00)
        _checkup("mia", "2026-01-07", "vaccination"),  # 200
        _checkup("mia", "2026-01-08", "dental_cleaning"),  # 300
        _parking("2026-01-10", "r1"),
        _plus("reward.used", "mia", "2026-01-11", {"redemption_id": "r1"}, "mia-use-r1"),
        _parking("2026-01-12", "r2"),
        _parking("2026-01-13", "r3"),
        _plus("redemption.cancelled", "mia", "2026-01-14", {"redemption_id": "r3"}, "mia-cx"),
        _member("mia", "2026-02-01", "m1", "monthly", "45.00"),  # renews: to 5 Mar
        _plus("membership.cancelled", "mia", "2026-02-10", {"membership_id": "m1"}, "mia-mc"),
        *[_checkup("pia", f"2026-01-0{d}", "screening") for d in range(1, 9)],  # 1600: plus
        _member("pia", "2026-01-20", "p1", "annual", "480.00"),
    ]


def _dee(kind: str, day: str, data: dict[str, Any], eid: str) -> Any:
    return _in(DISCOUNTS, kind, "dee", f"{day}T10:00:00Z", data, eid)


def _dee_pays(day: str, amount: str, eid: str, **wallets: str) -> Any:
    return _dee("payment.recorded", day, {"amount": amount, "currency": "GBP", **wallets}, eid)


def clinic_discounts() -> list[dict[str, Any] | bytes]:
    """dee (clinic-discounts) prepays 300.00, pays from it and from her cashback, gets a
    free-service voucher at the 5th payment (14 Jun) and uses it; the maintenance of 1 Jan 2026
    expires the cashback left (2.60), and a last payment on 1 Feb 2026 draws 5.00 prepaid at
    10 % (300.00 prepaid within 365 days) and earns 0.20."""
    data = {"prepayment_id": "dee-pp1", "amount": "300.00", "currency": "GBP"}
    return [
        _dee("prepayment.recorded", "2025-06-01", data, "dee-pp1"),
        _dee_pays("2025-06-10", "120.00", "dee-pay1", prepaid_used="50.00"),  # cashback 2.40
        _dee_pays("2025-06-11", "30.00", "dee-pay2", cashback_used="1.00"),  # + 0.60
        *[_dee_pays(f"2025-06-1{d}", "10.00", f"dee-pay{d + 1}") for d in (2, 3, 4)],  # 0.20 each
        _dee("reward.used", "2025-06-20", {"redemption_id": "free-service:1"}, "dee-fs1"),
    ]


def clinic_discounts_after() -> list[dict[str, Any] | bytes]:
    """dee's last payment, after the maintenance that expired her cashback."""
    return [_dee_pays("2026-02-01", "10.00", "dee-pay6", prepaid_used="5.00")]
