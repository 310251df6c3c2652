"""A golden scenario for a program written as data (tests/programs/tiered-test.yaml), through
the ledger service on SQLite and PostgreSQL.

The program renames its tiers (member / plus / vip), caps visits at 2 per ISO week across
visit types, doubles screenings in October 2025, keeps plus for 60 days below its threshold,
never drops vip, and raises in_person from 100 to 120 in a version effective 2025-07-01.
Late events are decided by the version and the tier in force at their event time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from careledger.application.ledger import Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from domain.account import PatientAccount
from tests.conftest import Database
from tests.events import cloudevent

pytestmark = pytest.mark.integration
PROGRAMS = Path(__file__).parent.parent / "programs"
PROGRAM = "tiered-test"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ledger_for(db: Database) -> Ledger:
    settings = Settings(database_url=db.url, database_schema=db.schema, programs_dir=PROGRAMS)
    return build_ledger(settings)


def event(kind: str, patient: str, day: str, data: dict[str, Any], id: str) -> Inbound:
    raw = cloudevent(kind, patient, f"{day}T09:00:00Z", data, id=id, programid=PROGRAM)
    return Inbound(f"file:golden:{id}", json.dumps(raw).encode(), NOW)


def visit(patient: str, day: str, visit_type: str = "in_person") -> Inbound:
    data = {"visit_id": f"v-{day}", "visit_type": visit_type}
    return event("visit.completed", patient, day, data, f"{patient}-visit-{day}")


def screening(patient: str, day: str) -> Inbound:
    data = {"checkup_type": "screening"}
    return event("checkup.completed", patient, day, data, f"{patient}-screening-{day}")


def review(patient: str, day: str) -> Inbound:
    return event("review.submitted", patient, day, {"rating": 5}, f"{patient}-review-{day}")


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T00:00:00+00:00")


def earned_lines(ledger: Ledger, patient: str) -> list[tuple[str, int, str, str, str]]:
    """(day, points, rule, version, kind) of every entry that moved points."""
    return [
        (e.occurred_at.date().isoformat(), e.points, e.rule_id, e.program_version, e.kind)
        for e in ledger.statement(PROGRAM, patient)
        if e.points
    ]


def events_of(ledger: Ledger, patient: str) -> list[Any]:
    account = ledger.load_account(PROGRAM, patient)
    assert account is not None
    return list(ledger.store.events.get(account.id))


def test_the_golden_scenario(database: Database) -> None:
    first = ledger_for(database)
    results = first.apply_batch(
        [
            visit("gwen", "2025-01-06"),
            visit("gwen", "2025-01-07", "telehealth"),
            visit("gwen", "2025-01-08"),  # third visit of the ISO week: capped
            visit("gwen", "2025-01-13"),  # a new week
            screening("gwen", "2025-02-03"),
            screening("gwen", "2025-03-03"),
            screening("gwen", "2025-03-04"),
            screening("gwen", "2025-03-05"),  # reaches 1000: plus after this one
            visit("gwen", "2025-03-10"),  # at plus: 110
        ]
    ).results
    assert [r.outcome for r in results] == ["accepted"] * 9

    # A fresh ledger (accounts replayed from the store) takes the rest, late events included.
    second = ledger_for(database)
    second.apply_batch(
        [
            visit("gwen", "2025-02-10"),  # late: member then, version 2025.1
            visit("gwen", "2025-07-07"),  # version 2025.2 at plus: 120 x 1.10
            visit("gwen", "2025-06-30"),  # late: version 2025.1 at plus: 100 x 1.10
            screening("gwen", "2025-10-06"),  # October campaign doubles it
            screening("gwen", "2025-11-03"),  # campaign over
            review("gwen", "2025-11-04"),  # five stars at plus: the condition holds
            review("gwen", "2025-01-20"),  # late: member then, so the condition fails
        ]
    )

    assert earned_lines(second, "gwen") == [
        ("2025-01-06", 100, "visit.in_person", "2025.1", "earned"),
        ("2025-01-07", 50, "visit.other", "2025.1", "earned"),
        ("2025-01-13", 100, "visit.in_person", "2025.1", "earned"),
        ("2025-02-03", 200, "checkup.screening", "2025.1", "earned"),
        ("2025-03-03", 200, "checkup.screening", "2025.1", "earned"),
        ("2025-03-04", 200, "checkup.screening", "2025.1", "earned"),
        ("2025-03-05", 200, "checkup.screening", "2025.1", "earned"),
        ("2025-03-10", 110, "visit.in_person", "2025.1", "earned"),
        ("2025-02-10", 100, "visit.in_person", "2025.1", "earned"),
        ("2025-07-07", 132, "visit.in_person", "2025.2", "earned"),
        ("2025-06-30", 110, "visit.in_person", "2025.1", "earned"),
        ("2025-10-06", 220, "checkup.screening", "2025.2", "earned"),
        ("2025-10-06", 220, "campaign.october-screenings", "2025.2", "earned"),
        ("2025-11-03", 220, "checkup.screening", "2025.2", "earned"),
        ("2025-11-04", 33, "review.five_stars", "2025.2", "earned"),
    ]
    noted = [
        (e.source_id, e.outcome, e.rule_id)
        for e in events_of(second, "gwen")
        if isinstance(e, PatientAccount.InteractionNoted)
    ]
    assert noted == [
        ("gwen-visit-2025-01-08", "capped", "visit.in_person"),
        ("gwen-review-2025-01-20", "no_rule", None),
    ]
    balance = second.balance(PROGRAM, "gwen")
    assert balance is not None
    assert (balance.available, balance.tier) == (2195, "plus")

    # Maintenance: below plus's threshold from 2026-03-06 (750 qualifying points in the
    # window); the grace runs 60 days, so plus holds on 2026-04-06 and ends on 2026-05-05.
    second.maintain(PROGRAM, at("2026-03-06"))
    assert second.balance(PROGRAM, "gwen").tier == "plus"  # type: ignore[union-attr]
    second.maintain(PROGRAM, at("2026-04-06"))
    assert second.balance(PROGRAM, "gwen").tier == "plus"  # type: ignore[union-attr]
    second.maintain(PROGRAM, at("2026-05-05"))
    after = ledger_for(database).balance(PROGRAM, "gwen")
    assert after is not None and after.tier == "member"
    tiers = [
        (type(e).__name__, getattr(e, "to_tier", None), getattr(e, "reason", None))
        for e in events_of(second, "gwen")
        if "Tier" in type(e).__name__
    ]
    assert tiers == [
        ("TierChanged", "plus", "qualifying_points"),
        ("TierGraceStarted", None, None),
        ("TierChanged", "member", "grace_ended"),
    ]
    grace = next(e for e in events_of(second, "gwen") if type(e).__name__ == "TierGraceStarted")
    assert (grace.as_of, grace.qualifying_points) == (at("2026-03-06"), 750)


def test_a_vip_never_drops(database: Database) -> None:
    ledger = ledger_for(database)
    days = [f"2025-03-{d:02d}" for d in range(2, 17)]  # 15 screenings: 3000 base points
    ledger.apply_batch([screening("vic", day) for day in days])
    assert ledger.balance(PROGRAM, "vic").tier == "vip"  # type: ignore[union-attr]

    ledger.maintain(PROGRAM, at("2026-06-01"))  # nothing qualifies any more

    again = ledger_for(database).balance(PROGRAM, "vic")
    assert again is not None
    assert (again.tier, again.qualifying_points, again.available) == ("vip", 0, 0)
