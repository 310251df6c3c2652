"""Golden scenarios for the shipped coalition-health and activity-motion programs, through
the CLI as processes (ingest, maintenance, balance, statement), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.e2e.test_cli import careledger, summary
from tests.events import cloudevent, jsonl

pytestmark = pytest.mark.e2e


def ingest(db: Database, tmp_path: Path, events: list[dict[str, Any]]) -> dict[str, int]:
    path = tmp_path / f"batch-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_bytes(jsonl(events))
    return summary(careledger(db, "ingest", str(path)))


def balance(db: Database, patient: str, program: str) -> dict[str, Any]:
    proc = careledger(db, "balance", patient, "--program", program, "--json")
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def statement(db: Database, patient: str, program: str) -> list[dict[str, Any]]:
    proc = careledger(db, "statement", patient, "--program", program, "--json")
    assert proc.returncode == 0, proc.stderr
    lines: list[dict[str, Any]] = json.loads(proc.stdout)
    return lines


# ---------------------------------------------------------------------- coalition-health
COALITION = "coalition-health"


def coalition(
    kind: str, t: str, data: dict[str, Any], id: str, subject: str = "cora"
) -> dict[str, Any]:
    return cloudevent(kind, subject, t, data, id=id, programid=COALITION)


def purchase(id: str, t: str, partner: str, category: str, amount: str) -> dict[str, Any]:
    data = {
        "purchase_id": id,
        "partner_id": partner,
        "amount": amount,
        "currency": "CAD",
        "category": category,
    }
    return coalition("purchase.recorded", t, data, id)


def test_coalition_health(database: Database, tmp_path: Path) -> None:
    events = [
        coalition(
            "visit.completed",
            "2026-02-01T09:00:00Z",
            {"visit_id": "v1", "visit_type": "in_person"},
            "v1",
        ),
        purchase("p1", "2026-02-02T09:00:00Z", "pharmacy-1", "front_store", "12.99"),  # 129
        purchase("p2", "2026-02-03T09:00:00Z", "pharmacy-1", "prescription", "80.00"),  # 0
        purchase("p3", "2026-02-04T09:00:00Z", "giftshop-1", "gift", "7.50"),  # 37
        purchase("p4", "2026-02-05T09:00:00Z", "wellness-1", "wellness_class", "20.00"),  # 300
        purchase("p5", "2026-02-05T10:00:00Z", "bakery-9", "gift", "5.00"),  # unknown_partner
        *[
            coalition(
                "engagement.recorded",
                f"2026-02-{d:02d}T08:00:00Z",
                {"engagement_id": f"bp{d}", "action": "bill_paid_online"},
                f"bp{d}",
            )
            for d in (6, 7, 8)  # 25, 25, then capped (2 a month)
        ],
        coalition(  # at the pharmacy: clinic's 100 (soonest expiry), then 100 of the pharmacy's
            "redemption.requested",
            "2026-02-10T09:00:00Z",
            {
                "redemption_id": "r1",
                "reward_id": "gift-card",
                "points": 200,
                "partner_id": "pharmacy-1",
            },
            "r1",
        ),
        coalition(  # 416 left, but the wellness centre's 300 cannot be spent at the gift shop
            "redemption.requested",
            "2026-02-11T09:00:00Z",
            {"redemption_id": "r2", "reward_id": "mug", "points": 200, "partner_id": "giftshop-1"},
            "r2",
        ),
        coalition(
            "redemption.requested",
            "2026-02-12T09:00:00Z",
            {"redemption_id": "r3", "reward_id": "yoga", "points": 300, "partner_id": "wellness-1"},
            "r3",
        ),
    ]
    assert ingest(database, tmp_path, events) == {"accepted": 11, "duplicates": 0, "rejected": 1}

    lines = [
        (e["source"]["id"], e["kind"], e["points"], e["rule"], e["reason"])
        for e in statement(database, "cora", COALITION)
    ]
    assert lines == [
        ("v1", "earned", 100, "visit.in_person", None),
        ("p1", "earned", 129, "purchase.pharmacy.front_store", None),
        ("p2", "noted", 0, "", "no_rule"),
        ("p3", "earned", 37, "purchase.giftshop.gift", None),
        ("p4", "earned", 300, "purchase.wellness.class", None),
        ("bp6", "earned", 25, "engagement.bill_paid_online", None),
        ("bp7", "earned", 25, "engagement.bill_paid_online", None),
        ("bp8", "noted", 0, "engagement.bill_paid_online", "capped"),
        ("r1", "redeemed", -200, "redemption", None),
        ("r2", "noted", 0, "", "insufficient_points"),
        ("r3", "redeemed", -300, "redemption", None),
    ]
    assert balance(database, "cora", COALITION)["available"] == 116  # 616 - 500
    letters = json.loads(careledger(database, "dead-letters", "--json").stdout)
    assert [letter["code"] for letter in letters] == ["unknown_partner"]


# ----------------------------------------------------------------------- activity-motion
MOTION = "activity-motion"


def steps(day: int, value: int, sent: str | None = None, id: str | None = None) -> dict[str, Any]:
    iso = f"2026-06-{day:02d}"
    data = {"metric": "steps", "day": iso, "value": value}
    return cloudevent(
        "activity.reading",
        "milo",
        sent or f"{iso}T21:00:00Z",
        data,
        id=id or f"s{day}-{value}",
        programid=MOTION,
    )


def test_activity_motion(database: Database, tmp_path: Path) -> None:
    # 1-5 and 7-13 June are goal days; 6 June's reading comes late, on 20 June
    first = [steps(d, 12000) for d in [*range(1, 6), *range(7, 14)]]
    first.insert(3, steps(2, 4000))  # a second, lower reading of a goal day
    assert ingest(database, tmp_path, first) == {"accepted": 13, "duplicates": 0, "rejected": 0}
    assert balance(database, "milo", MOTION)["available"] == 12 * 30 + 100  # block 7..13

    late = [steps(6, 11000, sent="2026-06-20T08:00:00Z")]  # joins the runs: block 1..7
    assert ingest(database, tmp_path, late) == {"accepted": 1, "duplicates": 0, "rejected": 0}

    after = balance(database, "milo", MOTION)
    # the 12th goal day (13 June) made the account active; the late 6 June reading, sent on
    # 20 June, earns at the tier in force at its event time (active: 36) and completes 1..7,
    # so 7..13 is no longer a block
    assert (after["tier"], after["available"]) == ("active", 12 * 30 + 36 + 100)
    streak_lines = [
        (e["source"]["id"], e["kind"], e["points"])
        for e in statement(database, "milo", MOTION)
        if e["rule"] == "streak"
    ]
    assert streak_lines == [
        ("s13-12000", "bonus", 100),
        ("s6-11000", "reversed", -100),
        ("s6-11000", "bonus", 100),
    ]

    # 30 days ending the day before 14 July: 14 June .. 13 July holds no goal day
    proc = careledger(
        database, "maintenance", "--as-of", "2026-07-14T02:00:00Z", "--program", MOTION
    )
    assert proc.returncode == 0, proc.stderr
    assert balance(database, "milo", MOTION)["tier"] == "starter"
