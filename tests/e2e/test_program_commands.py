"""``careledger programs list|show|validate`` and ``explain``, as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from careledger.application.programs import read_file
from tests.conftest import Database
from tests.events import cloudevent, jsonl

pytestmark = pytest.mark.e2e

SHIPPED = Path(__file__).parents[2] / "domain" / "programs" / "clinic-default.yaml"

# Not shipped: two versions, the second (from 2025-07-01) raising in_person to 120, with a
# condition, a campaign window and a points limit so show prints every kind of line.
TWO_VERSIONS = """
program_id: two-step
timezone: Europe/Berlin
versions:
  - version: "2025.1"
    effective_from: "2025-01-01T00:00:00Z"
    lot_lifetime_days: 365
    qualification: {basis: qualifying_points, window_days: 365}
    tiers: &tiers
      - {name: member, threshold: 0, multiplier: "1.00"}
      - {name: elite, threshold: 2000, multiplier: "1.50", downgrade: never, benefits: [lounge]}
    rules:
      - id: visit.in_person
        on: visit.completed
        match: {visit_type: in_person}
        award: {points: 100}
        limits: [{per: iso_week, awards: 2, reason: weekly_visit_cap}]
      - id: screening
        on: checkup.completed
        match: {checkup_type: screening}
        when: account.tier_rank >= 0
        award: {points: 200}
        limits: [{per: month, points: 300}]
      - id: october.double
        on: checkup.completed
        window: {from: "2025-10-01T00:00:00+02:00", until: "2025-11-01T00:00:00+01:00"}
        award: {boost: {multiply: "2.00", applies_to: [screening]}}
    referral: &referral {enabled: false, window_days: 90, referrer_bonus: 0, referee_bonus: 0}
    spend: &spend
      currency: EUR
      discount_threshold: "100.00"
      discount_base_percent: 2
      discount_step: "100.00"
      discount_step_percent: 1
      discount_max_percent: 10
      reward_every_payments: 5
      reward_id: free-service
  - version: "2025.2"
    effective_from: "2025-07-01T00:00:00Z"
    lot_lifetime_days: 365
    qualification: {basis: qualifying_points, window_days: 365}
    tiers: *tiers
    rules:
      - id: visit.in_person
        on: visit.completed
        match: {visit_type: in_person}
        award: {points: 120}
    referral: *referral
    spend: *spend
"""

TWO_PROBLEMS = TWO_VERSIONS.replace("Europe/Berlin", "Mars/Olympus").replace(
    "threshold: 2000", "threshold: 0"
)


def careledger(
    *args: str, db: Database | None = None, programs: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(db.env() if db else {})}
    if programs is not None:
        env["CARELEDGER_PROGRAMS_DIR"] = str(programs)
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def programs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "programs"
    folder.mkdir()
    (folder / "two-step.yaml").write_text(TWO_VERSIONS)
    return folder


def test_list_names_every_program_with_its_versions(programs_dir: Path) -> None:
    listed = json.loads(ok(careledger("programs", "list", "--json", programs=programs_dir)))
    by_id = {row["program_id"]: row for row in listed}
    assert by_id["clinic-default"]["timezone"] == "UTC"
    assert by_id["two-step"]["timezone"] == "Europe/Berlin"
    assert by_id["two-step"]["versions"] == [
        {"version": "2025.1", "effective_from": "2025-01-01T00:00:00+00:00"},
        {"version": "2025.2", "effective_from": "2025-07-01T00:00:00+00:00"},
    ]
    text = ok(careledger("programs", "list", programs=programs_dir))
    assert "two-step  (Europe/Berlin" in text
    assert "2025.2       from 2025-07-01T00:00:00+00:00" in text


def test_show_at_picks_the_version_in_force(programs_dir: Path) -> None:
    def shown(at: str) -> dict[str, Any]:
        out = ok(
            careledger("programs", "show", "two-step", "--at", at, "--json", programs=programs_dir)
        )
        document: dict[str, Any] = json.loads(out)
        return document

    before, after = shown("2025-06-30T23:59:59Z"), shown("2025-07-01T00:00:00Z")
    assert [v["version"] for v in before["versions"]] == ["2025.1"]
    assert [v["version"] for v in after["versions"]] == ["2025.2"]
    assert after["versions"][0]["rules"][0]["award"] == {"points": 120}
    assert shown("2024-01-01T00:00:00Z")["versions"][0]["version"] == "2025.1"  # the first

    early = ok(
        careledger(
            "programs",
            "show",
            "two-step",
            "--at",
            "2025-03-01T00:00:00+01:00",
            programs=programs_dir,
        )
    )
    assert "version 2025.1, in force from 2025-01-01T00:00:00+00:00" in early
    assert "version 2025.2" not in early
    for line in [
        "visit.in_person: on visit.completed, match visit_type=in_person",
        "limit at most 2 awards per iso_week (reason weekly_visit_cap)",
        "when account.tier_rank >= 0",
        "limit at most 300 points per month (reason capped)",
        "award boost x2.00 of screening",
        "window from 2025-10-01T00:00:00+02:00 until 2025-11-01T00:00:00+01:00",
        "tier multiplier: yes, counts toward tier: no",
        "elite        from    2000  x1.50  downgrade never, benefits lounge",
    ]:
        assert line in early, line
    late = ok(
        careledger(
            "programs", "show", "two-step", "--at", "2025-08-01T00:00:00Z", programs=programs_dir
        )
    )
    assert "award 120 points" in late
    assert "version 2025.1" not in late


@pytest.mark.parametrize("at", [None, "2025-05-01T00:00:00Z", "2025-09-01T00:00:00Z"])
@pytest.mark.parametrize("program_id", ["clinic-default", "two-step"])
def test_show_json_is_a_program_file_validate_accepts(
    programs_dir: Path, tmp_path: Path, program_id: str, at: str | None
) -> None:
    args = ["programs", "show", program_id, "--json", *(["--at", at] if at else [])]
    path = tmp_path / "shown.json"
    path.write_text(ok(careledger(*args, programs=programs_dir)))
    versions = 1 if at or program_id == "clinic-default" else 2
    plural = "s" * (versions != 1)
    assert ok(careledger("programs", "validate", str(path))) == (
        f"ok: {program_id} ({versions} version{plural})\n"
    )
    if at is None:  # the whole program: the same file, read back
        original = SHIPPED if program_id == "clinic-default" else programs_dir / "two-step.yaml"
        assert read_file(path.read_text(), "shown") == read_file(original.read_text(), "original")


def test_validate_prints_every_problem_with_its_path(programs_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_PROBLEMS)
    good = programs_dir / "two-step.yaml"
    proc = careledger("programs", "validate", str(good), str(bad))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "ok: two-step (2 versions)",
        f"{bad}: timezone: unknown IANA time zone",
        f"{bad}: versions[0].tiers[1].threshold: must be above tiers[0].threshold (0)",
        f"{bad}: versions[1].tiers[1].threshold: must be above tiers[0].threshold (0)",
    ]


def test_validate_a_missing_file_fails(tmp_path: Path) -> None:
    proc = careledger("programs", "validate", str(tmp_path / "nowhere.yaml"))
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{tmp_path / 'nowhere.yaml'}: (file): cannot be read")


# ----------------------------------------------------------------------------- explain
def _events() -> list[dict[str, Any]]:
    return [
        cloudevent(
            "visit.completed",
            "pat-1",
            "2026-01-05T10:00:00Z",
            {"visit_id": "v-1", "visit_type": "in_person"},
            id="visit-1",
        ),
        cloudevent(
            "assessment.completed",
            "pat-1",
            "2026-01-10T10:00:00Z",
            {"assessment_id": "a-1"},
            id="assess-1",
        ),
        cloudevent(
            "assessment.completed",
            "pat-1",
            "2026-02-10T10:00:00Z",
            {"assessment_id": "a-2"},
            id="assess-2",
        ),
        cloudevent(
            "points.adjusted",
            "pat-1",
            "2026-02-11T10:00:00Z",
            {"adjustment_id": "adj-1", "points": 300, "reason": "goodwill", "operator": "staff-7"},
            id="adjust-1",
        ),
        cloudevent(
            "payment.recorded",
            "pat-1",
            "2026-02-12T10:00:00Z",
            {"amount": "120.00", "currency": "USD"},
            id="pay-1",
        ),
    ]


def explained(database: Database, event_id: str) -> dict[str, Any]:
    args = ["explain", "pat-1", "--source", "urn:careledger:test", "--id", event_id, "--json"]
    report: dict[str, Any] = json.loads(ok(careledger(*args, db=database)))
    return report


def test_explain_says_which_version_rule_and_limit_decided(
    database: Database, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(_events()))
    ingested = json.loads(ok(careledger("ingest", str(path), db=database)).splitlines()[-1])
    assert ingested == {"accepted": 5, "duplicates": 0, "rejected": 0}

    visit = explained(database, "visit-1")
    assert (visit["program_version"], visit["version_basis"]) == ("2026.1", "recorded on the event")
    assert visit["outcome"] == "paid"
    (award,) = visit["awards"]
    assert award | {"rule": None} == {
        "rule_id": "visit.in_person",
        "points": 100,
        "base_points": 100,
        "qualifying": 100,
        "trimmed_by": None,
        "rule": None,
    }
    assert award["rule"]["match"] == {"visit_type": "in_person"}
    assert [(e["kind"], e["points"], e["balance_after"]) for e in visit["entries"]] == [
        ("earned", 100, 100)
    ]

    capped = explained(database, "assess-2")
    assert (capped["recorded_as"], capped["outcome"]) == (
        "InteractionNoted",
        "already_awarded_this_quarter",
    )
    assert capped["rule_id"] == "assessment"
    assert capped["rule"]["limits"] == [
        {"per": "quarter", "awards": 1, "reason": "already_awarded_this_quarter"}
    ]
    assert (capped["points"], capped["entries"]) == (0, [])

    adjusted = explained(database, "adjust-1")
    assert adjusted["recorded_as"] == "PointsAdjusted"
    assert adjusted["facts"]["adjustment_id"] == "adj-1"
    (entry,) = adjusted["entries"]
    assert (entry["kind"], entry["points"], entry["reason"], entry["operator"]) == (
        "adjusted",
        300,
        "goodwill",
        "staff-7",
    )

    payment = explained(database, "pay-1")
    assert payment["facts"] | {"qualifying_points": 0} == {
        "qualifying_points": 0,
        "amount": "120.00",
        "currency": "USD",
        "spend_total": "120.00",
        "discount_percent": 2,
        "payments": 1,
        "reward_unlocked": None,
    }
    assert payment["program_version"] == "2026.1"
    assert payment["version_basis"] == "in force at its time"

    text = ok(
        careledger(
            "explain", "pat-1", "--source", "urn:careledger:test", "--id", "assess-2", db=database
        )
    )
    assert "decided by clinic-default version 2026.1 (recorded on the event)" in text
    assert "rule assessment decided it: already_awarded_this_quarter" in text
    assert "limit at most 1 award per quarter (reason already_awarded_this_quarter)" in text
    text = ok(
        careledger(
            "explain", "pat-1", "--source", "urn:careledger:test", "--id", "adjust-1", db=database
        )
    )
    assert "entry adjusted +300 -> balance 650" in text
    assert "reason goodwill, operator staff-7" in text

    statement = json.loads(ok(careledger("statement", "pat-1", "--json", db=database)))
    assert [(r["kind"], r["points"], r["reason"], r["operator"]) for r in statement] == [
        ("earned", 100, None, None),
        ("earned", 250, None, None),
        ("noted", 0, "already_awarded_this_quarter", None),
        ("adjusted", 300, "goodwill", "staff-7"),
    ]


def test_explain_an_unknown_patient_or_interaction_fails(
    database: Database, tmp_path: Path
) -> None:
    unknown = careledger(
        "explain", "nobody", "--source", "urn:careledger:test", "--id", "x", db=database
    )
    assert unknown.returncode == 1
    assert "no account for that patient in program clinic-default" in unknown.stderr
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(_events()[:1]))
    ok(careledger("ingest", str(path), db=database))
    missing = careledger(
        "explain", "pat-1", "--source", "urn:careledger:test", "--id", "never", db=database
    )
    assert missing.returncode == 1
    assert "no accepted interaction with that source and id" in missing.stderr
