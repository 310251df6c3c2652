"""Erasure by crypto-shredding (ADR 0015), end to end through the CLI, on SQLite and PostgreSQL.

A patient with history in three programs (points, a redemption and its cancellation, an
adjustment, a void, a payment, a referral, a membership, a voucher, a prepaid wallet and a
refused event) is erased with ``careledger erase``. Afterwards a full dump of the database
holds neither the subject nor any of its interaction ids; the KPIs and liability are what
they were minus the forfeiture entry; a rebuild equals the incremental read models; and the
patient's old events, delivered again, are refused ``subject_erased``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from careledger.settings import Settings
from projections.service import catch_up, rebuild
from tests.conftest import PG_URL, Database
from tests.events import cloudevent, jsonl
from tests.integration.test_projections_support import dump, query

SECRET = "erasure-test-secret-0123456789abcdef-0123"
SUBJECT = "subj-erase-7f3k"
KEEP = "subj-keep-9q2m"
PLUS, DISCOUNTS = "membership-plus", "clinic-discounts"


def _ev(kind: str, subject: str, day: str, data: dict[str, Any], eid: str, **kw: Any) -> Any:
    return cloudevent(kind, subject, f"{day}T10:00:00Z", data, id=eid, **kw)


def history() -> list[dict[str, Any]]:
    """Every id of the erased patient starts ``ia-erase`` or ``x-erase`` (searched for)."""
    s = SUBJECT
    visit = {"visit_type": "in_person"}
    return [
        _ev("patient.enrolled", s, "2026-01-05", {"channel": "web"}, "ia-erase-enrol"),
        *[
            _ev(
                "visit.completed",
                s,
                f"2026-01-{d:02d}",
                {**visit, "visit_id": f"x-erase-v{d}"},
                f"ia-erase-v{d}",
            )
            for d in range(6, 12)
        ],
        _ev(
            "redemption.requested",
            s,
            "2026-01-12",
            {"redemption_id": "x-erase-rd1", "reward_id": "gift", "points": 200},
            "ia-erase-rd1",
        ),
        _ev(
            "redemption.cancelled",
            s,
            "2026-01-13",
            {"redemption_id": "x-erase-rd1"},
            "ia-erase-cx1",
        ),
        _ev(
            "points.adjusted",
            s,
            "2026-01-14",
            {
                "adjustment_id": "x-erase-adj1",
                "points": 50,
                "reason": "goodwill",
                "operator": "staff-1",
            },
            "ia-erase-adj1",
        ),
        _ev(
            "interaction.voided",
            s,
            "2026-01-15",
            {
                "voided_id": "ia-erase-v6",
                "voided_source": "urn:careledger:test",
                "reason": "entered_in_error",
            },
            "ia-erase-void1",
        ),
        _ev(
            "payment.recorded",
            s,
            "2026-01-16",
            {"amount": "80.00", "currency": "USD"},
            "ia-erase-pay1",
        ),
        _ev("referral.made", s, "2026-01-17", {"referee": KEEP}, "ia-erase-ref1"),
        _ev(
            "visit.completed",
            s,
            "2026-01-18",
            {"visit_type": "nope", "visit_id": "x-erase-bad"},
            "ia-erase-bad1",
        ),  # refused: a dead letter of the patient
        _ev("visit.completed", KEEP, "2026-01-20", {**visit, "visit_id": "v-keep-1"}, "keep-v1"),
        _ev("visit.completed", KEEP, "2026-01-21", {**visit, "visit_id": "v-keep-2"}, "keep-v2"),
        # membership-plus: a membership and a parking-pass voucher
        _ev(
            "membership.purchased",
            s,
            "2026-01-05",
            {
                "membership_id": "x-erase-mb1",
                "plan_id": "monthly",
                "amount": "45.00",
                "currency": "USD",
            },
            "ia-erase-mb1",
            programid=PLUS,
        ),
        *[
            _ev(
                "checkup.completed",
                s,
                f"2026-01-0{d}",
                {"checkup_type": "screening"},
                f"ia-erase-ck{d}",
                programid=PLUS,
            )
            for d in (6, 7)
        ],
        _ev(
            "redemption.requested",
            s,
            "2026-01-08",
            {"redemption_id": "x-erase-vc1", "reward_id": "parking-pass"},
            "ia-erase-vc1",
            programid=PLUS,
        ),
        _ev(
            "checkup.completed",
            KEEP,
            "2026-01-09",
            {"checkup_type": "screening"},
            "keep-ck1",
            programid=PLUS,
        ),
        # clinic-discounts: prepaid money, owed back to the patient
        _ev(
            "prepayment.recorded",
            s,
            "2026-01-05",
            {"prepayment_id": "x-erase-pp1", "amount": "100.00", "currency": "GBP"},
            "ia-erase-pp1",
            programid=DISCOUNTS,
        ),
        _ev(
            "payment.recorded",
            s,
            "2026-01-06",
            {"amount": "30.00", "currency": "GBP", "prepaid_used": "20.00"},
            "ia-erase-dpay1",
            programid=DISCOUNTS,
        ),
    ]


def env(db: Database) -> dict[str, str]:
    return {**os.environ, **db.env(), "CARELEDGER_LEDGER_SECRET": SECRET}


def careledger(db: Database, *args: str, stdin: bytes | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        env=env(db),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def settings_for(db: Database) -> Settings:
    return Settings(
        database_url=db.url, database_schema=db.schema, metrics_port=0, ledger_secret=SECRET
    )


def secrets_of_the_subject() -> set[bytes]:
    """The subject and every id of its interactions, as they would appear in a dump."""
    ids = {SUBJECT}
    for event in history():
        if event["subject"] == SUBJECT:
            ids.add(event["id"])
            ids.update(
                v
                for k, v in event["data"].items()
                if k.endswith("_id") and v.startswith(("x-erase", "ia-erase"))
            )
    return {i.encode() for i in ids}


def full_dump(db: Database) -> bytes:
    if db.kind == "sqlite":
        path = Path(db.url.removeprefix("sqlite:///"))
        return b"".join(
            p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)
        )
    out = subprocess.run(
        ["pg_dump", "--no-owner", "-n", db.schema, PG_URL],
        capture_output=True,
        check=True,
        timeout=120,
    )
    # bytea columns (the events' JSON, keys, hashes) are dumped as hex: decode them too
    blobs = [bytes.fromhex(h.decode()) for h in re.findall(rb"\\\\x((?:[0-9a-f]{2})+)", out.stdout)]
    assert blobs, "the dump holds the events table"
    return out.stdout + b"\n".join(blobs)


async def totals(settings: Settings) -> dict[str, Any]:
    """Liability and KPIs per program, summed over every day."""
    kpis = await query(
        settings,
        "SELECT program_id, SUM(interactions), SUM(points_earned), SUM(points_redeemed),"
        " SUM(points_expired), SUM(points_reversed), SUM(points_adjusted), SUM(new_patients)"
        " FROM program_kpis_daily GROUP BY program_id ORDER BY program_id",
    )
    liability = await query(
        settings,
        "SELECT program_id, SUM(available), SUM(lifetime_earned), SUM(lifetime_redeemed)"
        " FROM balances GROUP BY program_id ORDER BY program_id",
    )
    return {"kpis": kpis, "liability": liability}


@pytest.mark.e2e
async def test_erasure_shreds_the_patient_and_keeps_the_money_side(
    database: Database, tmp_path: Path
) -> None:
    settings = settings_for(database)
    events = jsonl(history())
    first = ok(careledger(database, "ingest", "-", stdin=events))
    assert first == {"accepted": 22, "duplicates": 0, "rejected": 1}
    await catch_up(settings)
    before = await totals(settings)
    owed = await query(
        settings,
        "SELECT program_id, available FROM balances WHERE patient_id = :p ORDER BY program_id",
        p=SUBJECT,
    )
    forfeited = dict(owed)
    assert forfeited["clinic-default"] > 0

    erased = ok(careledger(database, "erase", SUBJECT, "--reason", "gdpr_art17"))
    assert erased == {"erased_programs": sorted(forfeited), "reason": "gdpr_art17"}
    assert careledger(database, "balance", SUBJECT).returncode == 1  # nobody by that subject
    await catch_up(settings)
    after = await totals(settings)

    # KPIs and liability: as before, minus the forfeiture (and one more interaction each)
    for (program, *was), (same, *now) in zip(before["kpis"], after["kpis"], strict=True):
        assert program == same
        expected = list(was)
        expected[0] += 1  # the erasure request itself
        expected[5] -= forfeited[program]  # points_adjusted: the forfeiture entry
        assert now == expected, program
    for (program, available, earned, redeemed), row in zip(
        before["liability"], after["liability"], strict=True
    ):
        assert row == (program, available - forfeited[program], earned, redeemed)
    settlements = await query(
        settings,
        "SELECT program_id, reason, points_forfeited, cashback_owed, prepaid_owed"
        " FROM erasure_settlements ORDER BY program_id",
    )
    assert [(p, r, f) for p, r, f, _, _ in settlements] == [
        (p, "gdpr_art17", forfeited[p]) for p in sorted(forfeited)
    ]
    assert {p: Decimal(str(prepaid)) for p, _, _, _, prepaid in settlements}[DISCOUNTS] == Decimal(
        "80.00"
    )

    incremental = await dump(settings)
    head = await rebuild(settings)
    assert head.applied == head.position
    assert await dump(settings) == incremental

    dumped = full_dump(database)
    assert b"urn:careledger:test" in dumped  # the dump holds the ledger (sources are not ids)
    assert {secret for secret in secrets_of_the_subject() if secret in dumped} == set()

    # redeliveries: every accepted event of the patient refused subject_erased
    again = careledger(database, "ingest", "-", stdin=events)
    assert ok(again) == {"accepted": 0, "duplicates": 3, "rejected": 20}
    refusals = [line for line in again.stderr.splitlines() if "rejected" in line]
    assert sum("subject_erased" in line for line in refusals) == 19
    assert sum("invalid_field" in line for line in refusals) == 1
    await catch_up(settings)
    assert await dump(settings) != incremental  # only the new dead letters differ:
    rebuilt_again = await dump(settings)
    assert {k: v for k, v in rebuilt_again.items() if k != "dead_letters"} == {
        k: v for k, v in incremental.items() if k != "dead_letters"
    }
    # subject_erased dead letters keep no id; the invalid event names nobody the ledger knows
    # any more, so its dead letter keeps its id as any new subject's would (ADR 0015)
    dumped = full_dump(database)
    assert {secret for secret in secrets_of_the_subject() if secret in dumped} == {b"ia-erase-bad1"}

    # a new event for the same subject starts a new account
    later = _ev(
        "visit.completed",
        SUBJECT,
        "2026-02-01",
        {"visit_type": "in_person", "visit_id": "v-new"},
        "new-visit-1",
    )
    assert ok(careledger(database, "ingest", "-", stdin=jsonl([later])))["accepted"] == 1
    balance = ok(careledger(database, "balance", SUBJECT, "--json"))
    assert balance["lifetime_earned"] == balance["available"] > 0


def test_a_subject_erased_and_seen_again_in_one_batch_is_as_in_two(database: Database) -> None:
    """Events after the erasure in the same batch start the new account (one account, however
    many events), the erased account's old ones are refused: the outcome never depends on
    where batches end."""
    from datetime import UTC, datetime

    from careledger.application.ledger import Inbound
    from careledger.bootstrap import build_ledger

    visit = {"visit_type": "telehealth"}
    events = [
        _ev("visit.completed", "p1", "2026-03-01", {**visit, "visit_id": "a"}, "e1"),
        _ev("account.erasure_requested", "p1", "2026-03-02", {"reason": "gdpr"}, "e2"),
        _ev("visit.completed", "p1", "2026-03-03", {**visit, "visit_id": "b"}, "e3"),
        _ev("visit.completed", "p1", "2026-03-04", {**visit, "visit_id": "c"}, "e4"),
        _ev("visit.completed", "p1", "2026-03-01", {**visit, "visit_id": "a"}, "e1"),
    ]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    inputs = [Inbound(f"t:{i}", json.dumps(e).encode(), now) for i, e in enumerate(events)]
    together = build_ledger(settings_for(database))
    outcomes = [(r.outcome, r.code) for r in together.apply_batch(inputs).results]
    assert outcomes == [("accepted", None)] * 4 + [("rejected", "subject_erased")]
    balance = together.balance("clinic-default", "p1")
    assert balance is not None and balance.lifetime_earned == 100  # two telehealth visits
