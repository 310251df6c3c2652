"""Golden scenarios for membership-plus and clinic-discounts through the CLI as processes
(ingest, maintenance, balance, statement, dead letters) on SQLite and PostgreSQL: a renewal, a
lapse, a grace-period downgrade, a premier who never drops, a voucher used and one expired,
cashback used and expired, and every refusal code of the rewards side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.e2e.test_cli import careledger
from tests.e2e.test_program_golden_cli import balance, ingest, statement
from tests.events import cloudevent

pytestmark = pytest.mark.e2e
PLUS, DISCOUNTS = "membership-plus", "clinic-discounts"


def ev(
    program: str, subject: str, kind: str, t: str, data: dict[str, Any], id: str
) -> dict[str, Any]:
    return cloudevent(kind, subject, f"{t}T10:00:00Z", data, id=id, programid=program)


def plus(kind: str, t: str, data: dict[str, Any], id: str, subject: str = "mia") -> dict[str, Any]:
    return ev(PLUS, subject, kind, t, data, id)


def redeem(t: str, rid: str, reward: str, points: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"redemption_id": rid, "reward_id": reward}
    if points is not None:
        data["points"] = points
    return plus("redemption.requested", t, data, f"rq-{rid}-{t}")


def used(t: str, rid: str, again: str = "") -> dict[str, Any]:
    return plus("reward.used", t, {"redemption_id": rid}, f"use-{rid}-{t}{again}")


def member(t: str, mid: str, plan: str, amount: str, subject: str = "mia") -> dict[str, Any]:
    data = {"membership_id": mid, "plan_id": plan, "amount": amount, "currency": "USD"}
    return plus("membership.purchased", t, data, f"mp-{subject}-{mid}-{t}", subject)


def dead_letters(db: Database) -> list[str]:
    return sorted(
        letter["code"] for letter in json.loads(careledger(db, "dead-letters", "--json").stdout)
    )


def maintain(db: Database, as_of: str, program: str) -> None:
    proc = careledger(db, "maintenance", "--as-of", f"{as_of}T02:00:00Z", "--program", program)
    assert proc.returncode == 0, proc.stderr


def test_membership_plus(database: Database, tmp_path: Path) -> None:
    screening = lambda t, subject="mia": plus(  # noqa: E731
        "checkup.completed", t, {"checkup_type": "screening"}, f"sc-{subject}-{t}", subject
    )
    events = [
        plus("checkup.completed", "2026-01-05", {"checkup_type": "annual_wellness"}, "aw"),
        *[screening(f"2026-01-{d:02d}") for d in range(6, 11)],  # 1500 base: plus after the 5th
        member("2026-01-31", "m1", "monthly", "45.00"),  # paid through 28 Feb
        plus("visit.completed", "2026-02-02", {"visit_id": "v1", "visit_type": "in_person"}, "v1"),
        plus("membership.cancelled", "2026-02-10", {"membership_id": "m1"}, "mc1"),
        redeem("2026-02-11", "r1", "parking-pass"),
        used("2026-02-12", "r1"),
        used("2026-02-12", "r1", again="-again"),  # voucher_used
        redeem("2026-02-13", "r2", "parking-pass", 300),
        redeem("2026-02-14", "r4", "parking-pass"),
        redeem("2026-02-15", "r5", "parking-pass"),
        redeem("2026-02-16", "r6", "parking-pass"),  # the 5th this month: reward_limit_reached
        redeem("2026-02-17", "r7", "free-checkup"),  # plus may, but 2000 > 540: insufficient
        redeem("2026-02-18", "r8", "wellness-workshop"),  # premier only: reward_not_available
        redeem("2026-02-19", "r9", "yacht"),  # unknown_reward
        redeem("2026-02-19", "r10", "parking-pass", 100),  # price_mismatch
        member("2026-02-20", "m2", "gold", "1.00"),  # unknown_plan
        member("2026-02-20", "m3", "annual", "400.00"),  # price_mismatch
        plus("membership.cancelled", "2026-02-21", {"membership_id": "m9"}, "mc9"),  # unknown
        used("2026-02-22", "r99"),  # unknown_voucher
        plus("redemption.cancelled", "2026-02-22", {"redemption_id": "r1"}, "cx-r1"),  # used
        plus("redemption.cancelled", "2026-02-23", {"redemption_id": "r4"}, "cx-r4"),
        used("2026-02-24", "r4"),  # voucher_cancelled
        used("2026-05-20", "r2"),  # 90 days from 13 Feb ended on 14 May: voucher_expired
    ]
    result = ingest(database, tmp_path, events)
    assert (result["accepted"], result["rejected"]) == (18, 10)
    assert dead_letters(database) == sorted(
        [
            "voucher_used",
            "unknown_reward",
            "price_mismatch",
            "unknown_plan",
            "price_mismatch",
            "unknown_membership",
            "unknown_voucher",
            "voucher_used",
            "voucher_cancelled",
            "voucher_expired",
        ]
    )
    lines = {
        e["source"]["id"]: (e["kind"], e["points"], e["reason"])
        for e in statement(database, "mia", PLUS)
    }
    assert lines["v1"] == ("earned", 240, None)  # floor(100 x 1.20 x 2.00)
    assert lines["rq-r6-2026-02-16"] == ("noted", 0, "reward_limit_reached")
    assert lines["rq-r7-2026-02-17"] == ("noted", 0, "insufficient_points")
    assert lines["rq-r8-2026-02-18"] == ("noted", 0, "reward_not_available")
    mia = balance(database, "mia", PLUS)
    assert (mia["tier"], mia["available"], mia["membership"]) == ("plus", 840, "monthly")
    assert mia["benefits"] == ["phone_access", "priority_booking", "same_doctor"]
    assert {v["voucher_id"]: v["status"] for v in mia["vouchers"]} == {
        "r1": "used",
        "r2": "issued",
        "r4": "cancelled",
        "r5": "issued",
    }

    maintain(database, "2026-03-01", PLUS)  # the cancelled membership lapses (28 Feb)
    assert (
        ingest(
            database,
            tmp_path,
            [
                plus(
                    "visit.completed",
                    "2026-03-02",
                    {"visit_id": "v2", "visit_type": "in_person"},
                    "v2",
                )
            ],
        )["accepted"]
        == 1
    )
    assert [e["points"] for e in statement(database, "mia", PLUS) if e["source"]["id"] == "v2"] == [
        120
    ]
    maintain(database, "2026-05-20", PLUS)  # r2 and r5 expire unused
    mia = balance(database, "mia", PLUS)
    assert (mia["membership"], mia["benefits"]) == (None, ["priority_booking"])
    assert {v["voucher_id"]: v["status"] for v in mia["vouchers"]}["r5"] == "expired"

    # grace: below plus from 2027-03-06 (nothing in the year before), down 60 days later
    maintain(database, "2027-03-06", PLUS)
    assert balance(database, "mia", PLUS)["tier"] == "plus"
    maintain(database, "2027-05-04", PLUS)
    assert balance(database, "mia", PLUS)["tier"] == "plus"
    maintain(database, "2027-05-05", PLUS)
    assert balance(database, "mia", PLUS)["tier"] == "member"


def test_a_premier_never_drops_and_an_annual_membership_renews(
    database: Database, tmp_path: Path
) -> None:
    screenings = [
        plus(
            "checkup.completed",
            f"2025-03-{d:02d}",
            {"checkup_type": "screening"},
            f"sc-pam-{d}",
            "pam",
        )
        for d in range(1, 21)
    ]
    events = [
        *screenings,
        member("2025-04-01", "a1", "annual", "480.00", "pam"),
        member("2026-03-01", "a1", "annual", "480.00", "pam"),  # renews: paid through 2027-04-01
    ]
    assert ingest(database, tmp_path, events)["accepted"] == 22
    maintain(database, "2028-06-01", PLUS)
    pam = balance(database, "pam", PLUS)
    assert pam["tier"] == "premier"
    assert pam["benefits"] == ["event_invitations", "free_parking", "priority_booking"]  # lapsed
    renewed = [e for e in statement(database, "pam", PLUS) if e["source"]["id"].startswith("mp-")]
    assert renewed == []  # purchases move money, not points


def test_clinic_discounts(database: Database, tmp_path: Path) -> None:
    def pay(t: str, amount: str, id: str, **extra: str) -> dict[str, Any]:
        return ev(
            DISCOUNTS,
            "dee",
            "payment.recorded",
            t,
            {"amount": amount, "currency": "GBP", **extra},
            id,
        )

    def prepay(t: str, amount: str, id: str) -> dict[str, Any]:
        data = {"prepayment_id": id, "amount": amount, "currency": "GBP"}
        return ev(DISCOUNTS, "dee", "prepayment.recorded", t, data, id)

    events = [
        prepay("2026-01-10", "300.00", "pp1"),
        pay("2026-01-12", "120.00", "pay1", prepaid_used="50.00"),  # cashback 2.40
        pay("2026-01-13", "30.00", "pay2", cashback_used="1.00"),  # cashback 2.40 - 1.00 + 0.60
        pay("2026-01-14", "10.00", "pay3"),
        pay("2026-01-15", "10.00", "pay4"),
        pay("2026-01-16", "10.00", "pay5"),  # the 5th: a free-service voucher
        ev(
            DISCOUNTS,
            "dee",
            "reward.used",
            "2026-01-20",
            {"redemption_id": "free-service:1"},
            "fs1",
        ),
        pay("2026-01-21", "10.00", "pay6", cashback_used="100.00"),  # insufficient_cashback
        pay("2026-01-21", "10.00", "pay7", prepaid_used="1000.00"),  # insufficient_prepaid
        ev(DISCOUNTS, "dee", "review.submitted", "2026-01-22", {"rating": 5}, "rv1"),
        ev(DISCOUNTS, "dee", "review.submitted", "2026-02-01", {"rating": 5}, "rv2"),  # cooldown
    ]
    result = ingest(database, tmp_path, events)
    assert (result["accepted"], result["rejected"]) == (9, 2)
    assert dead_letters(database) == ["insufficient_cashback", "insufficient_prepaid"]
    dee = balance(database, "dee", DISCOUNTS)
    assert (dee["available"], dee["discount_percent"], dee["spend_total"]) == (50, 2, "180.00")
    # cashback 2 % of each amount: 2.40 + 0.60 + 3 x 0.20, less the 1.00 used
    assert (dee["cashback_balance"], dee["prepaid_balance"]) == ("2.60", "250.00")
    assert dee["prepayment_discount_percent"] == 10  # 300.00 prepaid in the last 365 days
    assert [v["status"] for v in dee["vouchers"]] == ["used"]

    maintain(database, "2026-07-20", DISCOUNTS)  # 180 days on: the cashback lots expire
    assert balance(database, "dee", DISCOUNTS)["cashback_balance"] == "0.00"
    assert ingest(database, tmp_path, [prepay("2026-08-01", "250.00", "pp2")])["accepted"] == 1
    assert balance(database, "dee", DISCOUNTS)["prepayment_discount_percent"] == 20  # 550.00
