"""The payer rules' golden scenarios (issue 12) through the ledger service and the read
models, on SQLite and PostgreSQL.

clinic-default values points at 10.00 USD per 1,000 and holds medicare, medicaid and tricare
patients to 15.00 a reward and 75.00 a calendar year, with no referral bonus to either side:

- medi (medicare) is refused 16.00, gets 15.00 five times (75.00), is refused 1.00 more,
  cancels one and gets 10.00 within what that freed, and starts again in 2026;
- comm (commercial) redeems 50.00 twice: no cap;
- medd (medicaid), referred by refr, qualifies with a visit: neither is paid a bonus, and
  both statements say ``referral_not_permitted``;
- swap is commercial until 1 Jun 2025 and medicare after: 60.00 in March stands, counts
  toward the year, and leaves room for 15.00 after the change; a redemption dated before
  the change that arrives late is decided as a commercial one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from careledger.application.ledger import Ledger
from projections.database import ReadModelsOutdated, connect
from projections.runner import ProjectionOptions
from projections.service import catch_up, open_projector, rebuild
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_projections_support import apply, dump, ledger_for, settings_for

pytestmark = pytest.mark.integration
PROGRAM = "clinic-default"
PAYER_TABLES = ("reward_value_by_year", "refusals_monthly", "marketing_consent")


def _event(kind: str, patient: str, day: str, data: dict[str, Any], eid: str) -> dict[str, Any]:
    return cloudevent(kind, patient, f"{day}T10:00:00Z", data, id=eid)


def enrol(patient: str, day: str, payer_class: str, referred_by: str | None = None) -> Any:
    data: dict[str, Any] = {"channel": "web", "payer_class": payer_class}
    if referred_by:
        data["referred_by"] = referred_by
    return _event("patient.enrolled", patient, day, data, f"{patient}-enrol")


def credit(patient: str, day: str, points: int) -> Any:
    data = {"adjustment_id": f"adj-{patient}", "points": points, "reason": "goodwill"}
    data["operator"] = "staff-1"
    return _event("points.adjusted", patient, day, data, f"{patient}-adj")


def redeem(patient: str, day: str, rid: str, points: int) -> Any:
    data = {"redemption_id": rid, "reward_id": "gift-card", "points": points}
    return _event("redemption.requested", patient, day, data, f"{patient}-{rid}")


def cancel(patient: str, day: str, rid: str) -> Any:
    return _event("redemption.cancelled", patient, day, {"redemption_id": rid}, f"{patient}-x{rid}")


def cover(patient: str, day: str, payer_class: str) -> Any:
    data = {"payer_class": payer_class}
    return _event("coverage.changed", patient, day, data, f"{patient}-cover-{day}")


def consent(patient: str, day: str, marketing: bool) -> Any:
    data = {"marketing": marketing}
    return _event("consent.changed", patient, day, data, f"{patient}-consent-{day}")


def visit(patient: str, day: str) -> Any:
    data = {"visit_id": f"v-{patient}-{day}", "visit_type": "in_person"}
    return _event("visit.completed", patient, day, data, f"{patient}-visit-{day}")


def history() -> list[Any]:
    medi = [
        enrol("medi", "2025-01-02", "medicare"),
        credit("medi", "2025-01-03", 20000),
        redeem("medi", "2025-02-01", "r-1", 1600),  # 16.00: above 15.00 an item
        *[redeem("medi", f"2025-0{m}-02", f"r-{m}", 1500) for m in range(2, 7)],  # 5 x 15.00
        redeem("medi", "2025-07-01", "r-7", 100),  # 1.00 more than 75.00 in 2025
        cancel("medi", "2025-07-02", "r-2"),  # frees 15.00 of 2025
        redeem("medi", "2025-07-03", "r-8", 1000),  # 10.00: 70.00 in 2025
        redeem("medi", "2026-01-02", "r-9", 1500),  # a new calendar year
        consent("medi", "2025-02-01", True),
        consent("medi", "2025-01-15", False),  # late, and older: consent stays on
    ]
    comm = [
        enrol("comm", "2025-01-02", "commercial"),
        credit("comm", "2025-01-03", 20000),
        redeem("comm", "2025-02-01", "r-1", 5000),
        redeem("comm", "2025-03-01", "r-2", 5000),
    ]
    referral = [
        enrol("refr", "2025-01-02", "commercial"),
        enrol("medd", "2025-01-10", "medicaid", referred_by="refr"),
        visit("medd", "2025-01-20"),  # the qualifying visit: earns its 100 points
    ]
    swap = [
        enrol("swap", "2025-01-02", "commercial"),
        credit("swap", "2025-01-03", 20000),
        redeem("swap", "2025-03-01", "r-1", 6000),  # 60.00 while commercial
        cover("swap", "2025-06-01", "medicare"),
        redeem("swap", "2025-06-10", "r-2", 2000),  # 20.00: above 15.00 an item
        redeem("swap", "2025-06-11", "r-3", 1500),  # 60.00 + 15.00 = 75.00: allowed
        redeem("swap", "2025-06-12", "r-4", 100),  # over 75.00
        redeem("swap", "2025-05-01", "r-5", 2000),  # late, dated while commercial
    ]
    return [*medi, *comm, *referral, *swap]


def outcome(ledger: Ledger, patient: str) -> list[tuple[str, str, int, str | None]]:
    """(day, kind, points, reason) of every statement line."""
    return [
        (e.occurred_at.date().isoformat(), e.kind, e.points, e.reason)
        for e in ledger.statement(PROGRAM, patient)
    ]


def redemptions(ledger: Ledger, patient: str) -> list[tuple[str, str, int, str | None]]:
    return [line for line in outcome(ledger, patient) if line[1] in ("redeemed", "noted")]


async def test_payer_rules_decide_by_the_class_in_force(database: Database) -> None:
    ledger = ledger_for(database)
    apply(ledger, history())
    assert redemptions(ledger, "medi") == [
        ("2025-02-01", "noted", 0, "payer_cap"),
        *[(f"2025-0{m}-02", "redeemed", -1500, None) for m in range(2, 7)],
        ("2025-07-01", "noted", 0, "payer_cap"),
        ("2025-07-03", "redeemed", -1000, None),
        ("2026-01-02", "redeemed", -1500, None),
    ]
    assert redemptions(ledger, "comm") == [
        ("2025-02-01", "redeemed", -5000, None),
        ("2025-03-01", "redeemed", -5000, None),
    ]
    assert redemptions(ledger, "swap") == [
        ("2025-03-01", "redeemed", -6000, None),
        ("2025-06-10", "noted", 0, "payer_cap"),
        ("2025-06-11", "redeemed", -1500, None),
        ("2025-06-12", "noted", 0, "payer_cap"),
        ("2025-05-01", "redeemed", -2000, None),  # commercial at its event time
    ]
    # the referral: no bonus to either side, the reason on both statements
    assert outcome(ledger, "medd") == [
        ("2025-01-20", "earned", 100, None),
        ("2025-01-20", "noted", 0, "referral_not_permitted"),
    ]
    assert outcome(ledger, "refr") == [("2025-01-20", "noted", 0, "referral_not_permitted")]
    balances = [ledger.balance(PROGRAM, patient) for patient in ("refr", "medd")]
    assert [b.available if b else None for b in balances] == [0, 100]
    medi = ledger.standing(PROGRAM, "medi")
    assert medi is not None
    assert (medi.marketing_consent, medi.marketing_consent_since) == (True, t("2025-02-01"))
    assert medi.payer_class == "medicare"

    settings = settings_for(database)
    await catch_up(settings, ProjectionOptions(batch_size=5))
    tables = await dump(settings)
    assert tables["reward_value_by_year"] == [
        (PROGRAM, "comm", 2025, "commercial", 2, Decimal("100.00")),
        (PROGRAM, "medi", 2025, "medicare", 5, Decimal("70.00")),  # 5 x 15.00 - 15.00 + 10.00
        (PROGRAM, "medi", 2026, "medicare", 1, Decimal("15.00")),
        (PROGRAM, "swap", 2025, "commercial", 2, Decimal("80.00")),
        (PROGRAM, "swap", 2025, "medicare", 1, Decimal("15.00")),
    ]
    assert tables["refusals_monthly"] == [
        (PROGRAM, date(2025, 1, 1), "referral_not_permitted", 2),
        (PROGRAM, date(2025, 2, 1), "payer_cap", 1),
        (PROGRAM, date(2025, 6, 1), "payer_cap", 2),
        (PROGRAM, date(2025, 7, 1), "payer_cap", 1),
    ]
    assert tables["marketing_consent"] == [(PROGRAM, "medi", True, t("2025-02-01"))]
    noted = [row for row in tables["ledger_entries"] if row[3] == "noted"]
    assert sorted((row[2], row[12]) for row in noted) == [
        ("medd", "referral_not_permitted"),
        ("medi", "payer_cap"),
        ("medi", "payer_cap"),
        ("refr", "referral_not_permitted"),
        ("swap", "payer_cap"),
        ("swap", "payer_cap"),
    ]

    followed = tables
    await rebuild(settings)
    assert await dump(settings) == followed
    await rebuild(settings, ProjectionOptions(batch_size=2, account_cache=1, rebuild_workers=3))
    assert await dump(settings) == followed


async def test_the_projector_counts_refusals_by_reason_code_only(database: Database) -> None:
    settings = settings_for(database)
    apply(ledger_for(database), history())
    registry = CollectorRegistry()
    async with open_projector(settings, ProjectionOptions(batch_size=3), registry) as projector:
        await projector.catch_up()
    name = "careledger_refusals_total"
    assert registry.get_sample_value(name, {"reason": "payer_cap"}) == 4
    assert registry.get_sample_value(name, {"reason": "referral_not_permitted"}) == 2
    (refusals,) = [m for m in registry.collect() if m.name == "careledger_refusals"]
    assert {label for s in refusals.samples for label in s.labels} == {"reason"}


async def test_read_models_built_before_the_payer_tables_are_rebuilt(database: Database) -> None:
    """A store whose read models predate these tables: the follower refuses to guess and a
    rebuild fills them from the ledger (the ledger's old events load with class defaults)."""
    settings = settings_for(database)
    apply(ledger_for(database), history())
    await catch_up(settings)
    expected = await dump(settings)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.begin() as conn:
            for table in PAYER_TABLES:
                await conn.execute(text(f"DROP TABLE {table}"))
    finally:
        await engine.dispose()
    with pytest.raises(ReadModelsOutdated, match=r"reward_value_by_year, .*projections rebuild"):
        await catch_up(settings)
    await rebuild(settings)
    assert await catch_up(settings) == 0
    assert await dump(settings) == expected


def t(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC)
