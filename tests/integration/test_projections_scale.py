"""At 10,000 simulated patients, every ``balances`` row equals what the ledger reports.

``workload`` (a seeded random mix of every interaction type, with duplicates, refusals,
late arrivals and maintenance) is shared with ``bench/bench_projections.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from careledger.application.ledger import Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from projections.database import connect
from projections.service import catch_up
from projections.tables import balances
from tests.conftest import Database

pytestmark = pytest.mark.integration

PROGRAM = "clinic-default"
SOURCE = "urn:careledger:sim"
RECEIVED_AT = datetime(2026, 11, 1, tzinfo=UTC)
VISIT_TYPES = ("in_person", "in_person", "specialist", "telehealth", "urgent_care")
CHECKUPS = ("annual_wellness", "screening", "vaccination", "dental_cleaning")


@dataclass
class _Patient:
    pid: str
    at: datetime
    prefix: str
    earned: list[str] = field(default_factory=list)  # voidable interaction ids
    redemptions: list[str] = field(default_factory=list)


@dataclass
class Workload:
    """Events in arrival order, and the maintenance runs due along the way."""

    events: list[tuple[datetime, dict[str, Any] | bytes]]
    maintenance: list[datetime]


def workload(
    seed: int,
    patients: int,
    start: datetime = datetime(2024, 9, 1, tzinfo=UTC),
    end: datetime = datetime(2026, 10, 1, tzinfo=UTC),
    per_patient: int = 6,
    prefix: str = "sim",
) -> Workload:
    """A seeded mix of every interaction type over ``start``..``end``; patients and event ids
    start with ``prefix``."""
    rnd = random.Random(seed)
    span = (end - start).total_seconds()
    out: list[tuple[datetime, dict[str, Any] | bytes]] = []
    for n in range(patients):
        born = start + timedelta(seconds=rnd.uniform(0, span * 0.8))
        patient = _Patient(f"{prefix}-{n:06d}", born, prefix)
        referrer = f"{prefix}-{rnd.randrange(n):06d}" if n and rnd.random() < 0.1 else None
        data: dict[str, Any] = {"channel": "web", "referred_by": referrer}
        out.append((patient.at, _event(patient, "patient.enrolled", data, f"enrol-{n}")))
        for k in range(max(1, int(rnd.expovariate(1 / per_patient)))):
            patient.at += timedelta(days=rnd.expovariate(1 / 35), seconds=rnd.randrange(86400))
            if patient.at >= end:
                break
            event = _interaction(rnd, patient, f"{n}-{k}", patients)
            out.append((patient.at, event))
            if rnd.random() < 0.02:  # redelivered later: a duplicate
                out.append((patient.at + timedelta(days=rnd.uniform(0, 60)), event))
        if rnd.random() < 0.01:
            out.append((patient.at, b'{"specversion": "1.0", "id": "broken"'))
    out.sort(key=lambda item: item[0])
    quarters = [datetime(y, m, 1, tzinfo=UTC) for y in (2025, 2026) for m in (1, 4, 7, 10)]
    return Workload(out, [q for q in quarters if start < q <= end])


def _event(patient: _Patient, kind: str, data: dict[str, Any], eid: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{patient.prefix}-{eid}",
        "source": SOURCE,
        "type": kind,
        "time": patient.at.isoformat(),
        "subject": patient.pid,
        "data": data,
    }


def _interaction(rnd: random.Random, p: _Patient, eid: str, patients: int) -> dict[str, Any]:
    roll = rnd.random()
    if roll < 0.08 and p.redemptions:
        data = {"redemption_id": rnd.choice(p.redemptions)}
        return _event(p, "redemption.cancelled", data, eid)
    if roll < 0.16:
        p.redemptions.append(rid := f"r-{eid}")
        data = {"redemption_id": rid, "reward_id": "gift", "points": rnd.randrange(50, 900)}
        return _event(p, "redemption.requested", data, eid)
    if roll < 0.21 and p.earned:
        target = f"{p.prefix}-{rnd.choice(p.earned)}"
        data = {"voided_id": target, "voided_source": SOURCE, "reason": "entered_in_error"}
        return _event(p, "interaction.voided", data, eid)
    if roll < 0.29:
        p.earned.append(eid)
        amount = f"{rnd.randrange(1000, 30000) / 100:.2f}"
        return _event(p, "payment.recorded", {"amount": amount, "currency": "USD"}, eid)
    if roll < 0.31:
        referee = {"referee": f"{p.prefix}-{rnd.randrange(patients):06d}"}
        return _event(p, "referral.made", referee, eid)
    if roll < 0.39:
        data = {"metric": "steps", "day": p.at.date().isoformat(), "value": rnd.randrange(12000)}
        return _event(p, "activity.reading", data, eid)
    if roll < 0.45:
        return _event(p, "review.submitted", {"rating": rnd.randrange(1, 6)}, eid)
    p.earned.append(eid)
    if roll < 0.52:
        return _event(p, "assessment.completed", {"assessment_id": f"a-{eid}"}, eid)
    if roll < 0.62:
        return _event(p, "checkup.completed", {"checkup_type": rnd.choice(CHECKUPS)}, eid)
    data = {"visit_id": f"v-{eid}", "visit_type": rnd.choice(VISIT_TYPES)}
    return _event(p, "visit.completed", data, eid)


def apply_workload(ledger: Ledger, load: Workload, batch: int = 2000, run: str = "sim") -> int:
    """Apply in arrival order in big batches, with maintenance when its time has come."""
    due = list(load.maintenance)
    pending: list[Inbound] = []
    for number, (at, event) in enumerate(load.events):
        if due and at >= due[0]:
            _flush(ledger, pending)
            ledger.maintain(PROGRAM, due.pop(0))
        raw = event if isinstance(event, bytes) else json.dumps(event).encode()
        pending.append(Inbound(f"file:{run}:{number}", raw, RECEIVED_AT))
        if len(pending) >= batch:
            _flush(ledger, pending)
    _flush(ledger, pending)
    for as_of in due:
        ledger.maintain(PROGRAM, as_of)
    ledger.relay_until_idle()
    return len(load.events)


def _flush(ledger: Ledger, pending: list[Inbound]) -> None:
    if pending:
        ledger.apply_batch(pending)
        pending.clear()
        ledger.relay_until_idle()


def balance_rows(settings: Settings) -> Iterator[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        engine = connect(settings.database_url, settings.database_schema)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(balances))
                return [dict(row._mapping) for row in rows]
        finally:
            await engine.dispose()

    return iter(asyncio.run(fetch()))


def test_ten_thousand_patients_balances_equal_the_ledger(pg_database: Database) -> None:
    settings = Settings(database_url=pg_database.url, database_schema=pg_database.schema)
    ledger = build_ledger(settings)
    load = workload(seed=20261123, patients=10_000, per_patient=5)
    apply_workload(ledger, load)
    assert asyncio.run(catch_up(settings)) > len(load.events)

    rows = {row["patient_id"]: row for row in balance_rows(settings)}
    assert len(rows) >= 10_000
    for patient_id, row in rows.items():
        balance = ledger.balance(PROGRAM, patient_id)
        assert balance is not None
        expected = dataclasses.asdict(balance)
        common = {name: row[name] for name in expected if name in row}
        assert common == {name: expected[name] for name in common}, patient_id
