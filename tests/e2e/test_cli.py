"""The CLI flow end to end, as processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.events import cloudevent, jsonl

pytestmark = pytest.mark.e2e


def careledger(
    db: Database, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **db.env()}
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert proc.returncode == 0, proc.stderr
    last: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return last


def scenario() -> list[dict[str, Any]]:
    visit = lambda s, t, i, kind="in_person": cloudevent(  # noqa: E731
        "visit.completed", s, t, {"visit_id": f"v-{i}", "visit_type": kind}, id=f"visit-{i}"
    )
    return [
        cloudevent(
            "patient.enrolled",
            "alice",
            "2026-01-01T08:00:00Z",
            {"channel": "web"},
            id="enrol-alice",
        ),
        cloudevent(
            "patient.enrolled",
            "bob",
            "2026-01-02T08:00:00Z",
            {"channel": "app", "referred_by": "alice"},
            id="enrol-bob",
        ),
        *[visit("alice", f"2026-01-{d:02d}T10:00:00Z", d) for d in range(3, 14)],
        visit("bob", "2026-01-20T10:00:00Z", 100, "telehealth"),
        cloudevent(
            "checkup.completed",
            "alice",
            "2026-02-01T10:00:00Z",
            {"checkup_type": "annual_wellness"},
            id="aw-1",
        ),
        cloudevent(
            "checkup.completed",
            "alice",
            "2026-03-01T10:00:00Z",
            {"checkup_type": "annual_wellness"},
            id="aw-2",
        ),
        cloudevent(
            "redemption.requested",
            "alice",
            "2026-03-02T10:00:00Z",
            {"redemption_id": "r-1", "reward_id": "mug", "points": 300},
            id="red-1",
        ),
        cloudevent(
            "redemption.requested",
            "alice",
            "2026-03-03T10:00:00Z",
            {"redemption_id": "r-2", "reward_id": "tv", "points": 999999},
            id="red-2",
        ),
        cloudevent(
            "redemption.cancelled",
            "alice",
            "2026-03-04T10:00:00Z",
            {"redemption_id": "r-1"},
            id="cancel-1",
        ),
        cloudevent(
            "interaction.voided",
            "alice",
            "2026-03-05T10:00:00Z",
            {
                "voided_id": "visit-3",
                "voided_source": "urn:careledger:test",
                "reason": "entered_in_error",
            },
            id="void-1",
        ),
        cloudevent(
            "payment.recorded",
            "alice",
            "2026-03-06T10:00:00Z",
            {"amount": "150.00", "currency": "USD"},
            id="pay-1",
        ),
    ]


def test_ingest_balance_statement_maintenance(database: Database, tmp_path: Path) -> None:
    events = scenario()
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        jsonl(events)
        + b"this is not json\n"
        + jsonl(
            [
                cloudevent(
                    "review.submitted",
                    "alice",
                    "2026-03-07T10:00:00Z",
                    {"rating": 5, "text": "free text is refused"},
                )
            ]
        )
        + jsonl(
            [
                cloudevent(
                    "redemption.cancelled",
                    "alice",
                    "2026-03-08T10:00:00Z",
                    {"redemption_id": "never-made"},
                )
            ]
        )
    )
    assert summary(careledger(database, "ingest", str(path))) == {
        "accepted": len(events),
        "duplicates": 0,
        "rejected": 3,
    }

    # The same file again: every good line is a duplicate, the bad ones are refused again.
    assert summary(careledger(database, "ingest", str(path))) == {
        "accepted": 0,
        "duplicates": len(events),
        "rejected": 3,
    }

    proc = careledger(database, "balance", "alice", "--json")
    assert proc.returncode == 0, proc.stderr
    balance = json.loads(proc.stdout)
    # 10 visits at bronze (1000 -> silver), 11th at 1.10 = 110, annual wellness 550 once,
    # referrer bonus 1000 (bob's first visit 18 days after the referral), void of visit-3 -100,
    # redemption 300 returned on cancel, the 999999 redemption rejected.
    assert balance == {
        "patient_id": "alice",
        "program_id": "clinic-default",
        "available": 2560,
        "tier": "silver",
        "qualifying_points": 1500,
        "lifetime_earned": 2660,
        "lifetime_redeemed": 0,
        "lifetime_expired": 0,
        "lifetime_reversed": 100,
        "discount_percent": 2,
        "spend_total": "150.00",
        "rewards_unlocked": 0,
        "next_expiry": "2027-01-04T10:00:00+00:00",
        "marketing_consent": False,  # never told: off
        "marketing_consent_since": None,
        "payer_class": "other",  # never told
    }
    bob = json.loads(careledger(database, "balance", "bob", "--json").stdout)
    assert (bob["available"], bob["lifetime_earned"]) == (550, 550)

    proc = careledger(database, "statement", "alice", "--json")
    entries = json.loads(proc.stdout)
    assert [e["kind"] for e in entries].count("earned") == 12
    assert entries[-1]["balance_after"] == balance["available"]
    assert sum(e["points"] for e in entries) == balance["available"]
    bonus = next(e for e in entries if e["kind"] == "bonus")
    assert bonus == {**bonus, "points": 1000, "rule": "referral.referrer"}
    assert {"source": "urn:careledger:test", "id": "aw-1"} in [e["source"] for e in entries]
    # Every interaction that paid nothing is a zero-point line saying why, at the balance then.
    noted = [(e["source"]["id"], e["points"], e["reason"]) for e in entries if e["kind"] == "noted"]
    assert noted == [("aw-2", 0, "already_awarded_this_year"), ("red-2", 0, "insufficient_points")]
    rejected = next(e for e in entries if e["source"]["id"] == "red-2")
    before = entries[entries.index(rejected) - 1]
    assert rejected["balance_after"] == before["balance_after"]
    assert all(e["reason"] is None for e in entries if e["kind"] != "noted")
    assert all(e["operator"] is None for e in entries)

    letters = json.loads(careledger(database, "dead-letters", "--json").stdout)
    assert sorted(letter["code"] for letter in letters) == sorted(
        ["not_json", "unknown_field", "unknown_redemption"] * 2
    )
    assert all("free text" not in json.dumps(letter) for letter in letters)

    # Maintenance a year and a half later: every lot has expired, the tier falls to bronze.
    proc = careledger(database, "maintenance", "--as-of", "2027-07-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["programs"]["clinic-default"]
    assert report["accounts"] == 2 and report["tier_changes"] == 1
    after = json.loads(careledger(database, "balance", "alice", "--json").stdout)
    assert (after["available"], after["tier"], after["lifetime_expired"]) == (0, "bronze", 2560)
    again = json.loads(
        careledger(database, "maintenance", "--as-of", "2027-07-01T00:00:00Z").stdout
    )
    assert again["programs"]["clinic-default"]["changed_accounts"] == 0


def test_ingest_from_stdin_and_unknown_patient(database: Database) -> None:
    event = cloudevent(
        "assessment.completed", "carol", "2026-05-01T00:00:00+02:00", {"assessment_id": "a-1"}
    )
    assert summary(careledger(database, "ingest", "-", stdin=jsonl([event]))) == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
    }
    assert json.loads(careledger(database, "balance", "carol", "--json").stdout)["available"] == 250
    missing = careledger(database, "balance", "nobody", "--json")
    assert missing.returncode == 1 and "no account" in missing.stderr


def test_statement_shows_adjustments_with_reason_and_operator(database: Database) -> None:
    adjust = lambda points, i: cloudevent(  # noqa: E731
        "points.adjusted",
        "dora",
        f"2026-04-0{i}T10:00:00Z",
        {"adjustment_id": f"a-{i}", "points": points, "reason": "goodwill", "operator": "staff-7"},
        id=f"adjust-{i}",
    )
    visit = cloudevent(
        "visit.completed",
        "dora",
        "2026-04-01T09:00:00Z",
        {"visit_id": "v-1", "visit_type": "in_person"},
        id="dora-visit",
    )
    events = [visit, adjust(40, 2), adjust(-500, 3)]
    assert summary(careledger(database, "ingest", "-", stdin=jsonl(events)))["accepted"] == 3

    proc = careledger(database, "statement", "dora", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [
        (e["kind"], e["points"], e["balance_after"], e["reason"], e["operator"])
        for e in json.loads(proc.stdout)
    ]
    assert lines == [
        ("earned", 100, 100, None, None),
        ("adjusted", 40, 140, "goodwill", "staff-7"),
        ("adjusted", -500, -360, "goodwill", "staff-7"),  # a debit may leave it negative
    ]
    balance = json.loads(careledger(database, "balance", "dora", "--json").stdout)
    assert (balance["available"], balance["lifetime_earned"]) == (-360, 100)
    text = careledger(database, "statement", "dora").stdout.splitlines()
    assert text[-1].endswith("adjustment  (goodwill staff-7)")
