"""The read models on both stores: exact rows after a mixed scenario, crash and resume,
rebuild equals incremental, metrics, retention and following the ledger."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

import projections.runner
from careledger.application.ledger import Ledger
from domain.ids import account_id
from projections import rebuilding
from projections.database import ReadModelsOutdated, connect
from projections.rebuilding import Rebuilt
from projections.runner import ProjectionOptions, Projector
from projections.service import catch_up, open_projector, rebuild
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_projections_support import (
    DISCOUNTS,
    DISCOUNTS_MAINTENANCE,
    MAINTENANCE_AS_OF,
    PLUS,
    PLUS_MAINTENANCE,
    PROGRAM,
    SOURCE,
    activity,
    apply,
    clinic_discounts,
    clinic_discounts_after,
    coalition,
    dump,
    explained,
    ledger_for,
    membership_plus,
    query,
    scenario,
    settings_for,
)

pytestmark = pytest.mark.integration

SMALL = ProjectionOptions(batch_size=4)


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def last_recorded(ledger: Ledger, patient: str) -> datetime:
    events = list(ledger.store.events.get(account_id(PROGRAM, patient)))
    return events[-1].timestamp


@pytest.fixture
def ledger(database: Database) -> Ledger:
    """The scenario applied, then maintenance expires ann's 2026 lots and drops her tier."""
    ledger = ledger_for(database)
    apply(ledger, scenario())
    ledger.maintain(PROGRAM, MAINTENANCE_AS_OF)
    return ledger


async def test_the_scenario_leaves_exactly_these_rows(database: Database, ledger: Ledger) -> None:
    settings = settings_for(database)
    applied = await catch_up(settings)
    assert applied == ledger.store.recorder.max_notification_id()
    tables = await dump(settings)

    balances = {row[1]: row for row in tables["balances"]}
    assert balances["ann"][3:] == (
        1000,  # available: 2330 earned - 300 redeemed - 100 reversed - 930 expired
        "bronze",  # silver on 2026-01-15, bronze again at maintenance
        0,  # nothing qualifying in the year before 2027-02-20
        2330,  # 10 x 100 + 110 + 220 (silver) + 1000 referrer bonus
        300,  # 500 + 300 redeemed - 500 returned
        930,
        100,
        2,  # discount: 120.00 spent after the 85.50 payment was voided
        Decimal("120.00"),
        0,
        at("2026-01-05"),
        at("2026-02-19"),
        last_recorded(ledger, "ann"),
    )
    assert balances["bob"][3:] == (
        600,
        "bronze",
        100,
        600,
        0,
        0,
        0,
        0,
        Decimal("0.00"),
        0,
        at("2026-03-01"),
        at("2026-04-02"),
        last_recorded(ledger, "bob"),
    )
    assert balances["cy"][3:12] == (0, "bronze", 0, 0, 0, 0, 0, 0, Decimal("50.00"))
    for patient, row in balances.items():  # what Ledger.balance reports, field by field
        expected = dataclasses.asdict(ledger.balance(PROGRAM, patient))  # type: ignore[arg-type]
        assert row[3:13] == tuple(expected[k] for k in list(expected)[2:12])

    entries = tables["ledger_entries"]
    assert len(entries) == 29
    by_kind: dict[str, int] = {}
    for row in entries:
        by_kind[row[3]] = by_kind.get(row[3], 0) + row[4]
    assert by_kind == {
        "earned": 1430,
        "bonus": 1500,
        "redeemed": -800,
        "returned": 500,
        "reversed": -100,
        "expired": -930,
        "noted": 0,  # the redemption refused for want of points
    }
    (refused,) = [row for row in entries if row[3] == "noted"]
    assert refused[1:] == (
        *(PROGRAM, "ann", "noted", 0, 830, "", "2026.1", SOURCE, "ann-r-2", at("2026-02-13")),
        refused[11],  # (when the ledger recorded it)
        "insufficient_points",
        None,
    )
    assert all(row[12] is None and row[13] is None for row in entries if row[3] != "noted")
    assert (next(row[1:10] for row in entries if row[9] == "ann-void-1")) == (
        PROGRAM,
        "ann",
        "reversed",
        -100,
        930,
        "void",
        "2026.1",
        SOURCE,
        "ann-void-1",
    )
    expiries = sorted((row[10], row[4]) for row in entries if row[3] == "expired")
    assert expiries == [
        *[(at(f"2027-01-{d}"), -100) for d in range(10, 16)],
        (at("2027-02-10"), -110),
        (at("2027-02-11"), -220),
    ]
    ann_entries = [row for row in entries if row[2] == "ann"]
    assert sum(row[4] for row in ann_entries) == 1000

    assert tables["tier_history"] == [
        (PROGRAM, "ann", "bronze", "silver", at("2026-01-15"), "qualifying_points"),
        (PROGRAM, "ann", "silver", "bronze", MAINTENANCE_AS_OF, "maintenance"),
    ]
    received = datetime(2026, 6, 1, tzinfo=UTC)
    assert tables["dead_letters"] == [
        (
            "file:t:26",
            None,
            None,
            "not_json",
            "not_json: payload: not valid JSON (Expecting value at line 1 column 1)",
            received,
        ),
        (
            "file:t:27",
            SOURCE,
            "ann-x2",
            "unknown_redemption",
            "unknown_redemption: no such redemption on this account",
            received,
        ),
    ]

    # cohorts: ann (Jan, active Jan-Feb), bob (Mar, active Mar-Apr), cy (Apr, only a payment)
    assert [row[1:] for row in tables["retention_cohorts"]] == [
        (date(2026, 1, 1), 0, 1, 1, 1.0),
        (date(2026, 1, 1), 1, 1, 1, 1.0),
        (date(2026, 1, 1), 2, 1, 0, 0.0),
        (date(2026, 1, 1), 3, 1, 0, 0.0),
        (date(2026, 3, 1), 0, 1, 1, 1.0),
        (date(2026, 3, 1), 1, 1, 1, 1.0),
        (date(2026, 4, 1), 0, 1, 0, 0.0),
    ]
    assert tables["program_retention_12m"] == [(PROGRAM, date(2026, 4, 1), 0, 0, None)]

    kpis = {row[1]: row[2:] for row in tables["program_kpis_daily"]}
    assert len(kpis) == 33
    # interactions, active, new, earned, redeemed (net), expired, reversed, adjusted,
    # liability, rates
    assert kpis[date(2026, 1, 5)] == (1, 1, 1, 0, 0, 0, 0, 0, 0, None, None)
    assert kpis[date(2026, 1, 15)] == (1, 1, 0, 100, 0, 0, 0, 0, 1000, 0.0, 0.0)
    assert kpis[date(2026, 2, 12)] == (1, 0, 0, 0, 500, 0, 0, 0, 830, 500 / 1330, 0.0)
    assert kpis[date(2026, 2, 14)] == (1, 0, 0, 0, -500, 0, 0, 0, 1330, 0.0, 0.0)
    assert kpis[date(2026, 2, 16)] == (1, 0, 0, 0, 0, 0, 100, 0, 930, 300 / 1330, 0.0)
    assert kpis[date(2026, 3, 10)] == (1, 1, 0, 1550, 0, 0, 0, 0, 2480, 300 / 2880, 0.0)
    assert kpis[date(2026, 4, 5)] == (1, 0, 1, 0, 0, 0, 0, 0, 2530, 300 / 2930, 0.0)
    assert kpis[date(2027, 2, 11)] == (0, 0, 0, 0, 0, 220, 0, 0, 1600, 300 / 2930, 930 / 2930)
    assert sum(k[2] for k in kpis.values()) == 3  # new patients
    assert kpis[max(kpis)][8] == sum(row[3] for row in tables["balances"])  # liability


async def test_what_paid_nothing_and_adjustments_leave_exactly_these_rows(
    database: Database,
) -> None:
    settings = settings_for(database)
    ledger = ledger_for(database)
    apply(ledger, explained())
    await catch_up(settings)
    tables = await dump(settings)

    entries = sorted(tables["ledger_entries"], key=lambda row: row[10])  # by event time
    # (source id, kind, points, balance_after, rule, version, reason, operator)
    assert [(r[9], *r[3:8], r[12], r[13]) for r in entries] == [
        ("dan-v1", "earned", 100, 100, "visit.in_person", "2026.1", None, None),
        ("dan-aw1", "earned", 500, 600, "checkup.annual_wellness", "2026.1", None, None),
        ("dan-aw2", "noted", 0, 600, "checkup.annual_wellness", "2026.1", _once, None),
        ("dan-rv1", "earned", 50, 650, "review", "2026.1", None, None),
        ("dan-rv2", "noted", 0, 650, "review", "2026.1", "review_cooldown", None),
        ("dan-steps", "noted", 0, 650, "activity.steps", "2026.1", "no_steps_top_up", None),
        ("dan-adj1", "adjusted", 250, 900, "adjustment", "2026.1", "goodwill", "staff-7"),
        ("dan-r-9", "noted", 0, 900, "", "2026.1", "insufficient_points", None),
        ("dan-adj2", "adjusted", -2000, -1100, "adjustment", "2026.1", _dup, "staff-7"),
        ("dan-v2", "earned", 100, -1000, "visit.in_person", "2026.1", None, None),
    ]
    # exactly the lines of the patient's statement (careledger statement)
    lines = ledger.statement(PROGRAM, "dan")
    assert {(r[0], *r[3:11], r[12], r[13]) for r in entries} == {
        (
            e.entry_id,
            e.kind,
            e.points,
            e.balance_after,
            e.rule_id,
            e.program_version,
            e.source,
            e.source_id,
            e.occurred_at,
            e.reason,
            e.operator,
        )
        for e in lines
    }
    (balance,) = tables["balances"]
    expected = dataclasses.asdict(ledger.balance(PROGRAM, "dan"))  # type: ignore[arg-type]
    assert balance[3:13] == tuple(expected[k] for k in list(expected)[2:12])
    assert (balance[3], balance[6]) == (-1000, 750)  # available, lifetime earned

    kpis = {row[1]: row[2:] for row in tables["program_kpis_daily"]}
    # interactions, active, earned, adjusted, liability (adjustments included)
    assert [(k[0], k[1], k[3], k[7], k[8]) for k in kpis.values()][6:] == [
        (1, 1, 0, 0, 650),  # too few steps: noted, but active
        (1, 0, 0, 250, 900),  # staff adjustments are not patient activity
        (1, 0, 0, 0, 900),
        (1, 0, 0, -2000, -1100),
        (1, 1, 100, 0, -1000),
    ]
    assert kpis[max(kpis)][8] == balance[3]


_once, _dup = "already_awarded_this_year", "duplicate_account"


async def test_a_crash_mid_run_resumes_to_the_same_tables(
    database: Database, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database)
    real_write = projections.runner.write_changes
    calls = 0

    async def crash_on_fourth_batch(conn: Any, changes: Any, values: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("projector killed")
        return await real_write(conn, changes, values)

    monkeypatch.setattr(projections.runner, "write_changes", crash_on_fourth_batch)
    with pytest.raises(RuntimeError, match="projector killed"):
        await catch_up(settings, SMALL)
    positions = await query(settings, "SELECT position FROM projection_positions")
    assert positions == [(12,)]  # three batches of four committed, the fourth rolled back
    assert len((await dump(settings))["balances"]) == 1  # ann opened, bob not yet

    monkeypatch.setattr(projections.runner, "write_changes", real_write)
    assert await catch_up(settings, SMALL) == ledger.store.recorder.max_notification_id() - 12
    resumed = await dump(settings)
    await rebuild(settings)
    assert resumed == await dump(settings)


async def test_rebuild_equals_incremental(database: Database) -> None:
    settings = settings_for(database)
    ledger = ledger_for(database)
    events = [
        *scenario(),
        *explained(),
        *coalition(),
        *activity(),
        *membership_plus(),
        *clinic_discounts(),
    ]
    for start in range(0, len(events), 9):  # follow along while the ledger grows
        apply(ledger, events[start : start + 9], run=f"part{start}")
        await catch_up(settings, SMALL)
    ledger.maintain(PROGRAM, datetime(2026, 12, 1, tzinfo=UTC))
    ledger.maintain(PLUS, PLUS_MAINTENANCE)  # a lapse, an expired voucher, benefits ended
    await catch_up(settings, ProjectionOptions(batch_size=3))
    ledger.maintain(PROGRAM, MAINTENANCE_AS_OF)
    ledger.maintain(DISCOUNTS, DISCOUNTS_MAINTENANCE)  # cashback expired
    apply(ledger, clinic_discounts_after(), run="after")
    await catch_up(settings, SMALL)
    incremental = await dump(settings)

    head = ledger.store.recorder.max_notification_id()
    assert await rebuild(settings) == Rebuilt(applied=head, position=head)
    assert await dump(settings) == incremental
    assert incremental["balances"] and incremental["retention_cohorts"]
    assert incremental["partner_settlement"] and incremental["activity_days"]
    for rewards in ("vouchers", "benefits", "memberships", "membership_kpis_monthly", "wallets"):
        assert incremental[rewards], rewards
    kinds = {row[3] for row in incremental["ledger_entries"]}
    assert {"noted", "adjusted", "expired"} <= kinds
    # small batches, an account cache of one row (every row written as it leaves) and, on
    # PostgreSQL, three worker processes with a shard each
    tight = ProjectionOptions(batch_size=4, account_cache=1, rebuild_workers=3)
    assert await rebuild(settings, tight) == Rebuilt(applied=head, position=head)
    assert await dump(settings) == incremental


async def test_read_models_of_an_earlier_version_are_refused_until_rebuilt(
    database: Database,
) -> None:
    """A store whose tables predate a column (ledger_entries before reason and operator,
    the KPIs before points_adjusted) is not followed half-right: rebuild it."""
    settings = settings_for(database)
    apply(ledger_for(database), [*scenario(), *explained()])
    await catch_up(settings)
    expected = await dump(settings)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.begin() as conn:
            for table, column in [
                ("ledger_entries", "operator"),
                ("ledger_entries", "reason"),
                ("program_kpis_daily", "points_adjusted"),
            ]:
                await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    finally:
        await engine.dispose()
    outdated = r"ledger_entries, program_kpis_daily .*projections rebuild"
    with pytest.raises(ReadModelsOutdated, match=outdated):
        await catch_up(settings)
    await rebuild(settings)
    assert await catch_up(settings) == 0
    assert await dump(settings) == expected


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_failed_rebuild_leaves_the_read_models_as_they_were(
    database: Database, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Killed in this process's shard (with two workers, while the other process replays)."""
    settings = settings_for(database)
    apply(ledger_for(database), scenario())
    await catch_up(settings)
    before = await dump(settings)
    real_write = rebuilding.write_rows
    calls = 0

    async def crash_on_third_batch(*args: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("rebuild killed")
        return await real_write(*args)

    monkeypatch.setattr(rebuilding, "write_rows", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="rebuild killed"):
        await rebuild(settings, ProjectionOptions(batch_size=4, rebuild_workers=workers))
    assert calls == 3
    assert await dump(settings) == before
    if database.kind == "postgres":  # and the half-built schema is gone
        building = rebuilding.building_schema(database.schema)
        schemas = f"SELECT 1 FROM pg_namespace WHERE nspname = '{building}'"
        assert await query(settings, schemas) == []
    monkeypatch.setattr(rebuilding, "write_rows", real_write)
    await rebuild(settings)
    assert await dump(settings) == before


async def stop_at(head: int, projector: Projector, stop: asyncio.Event, following: Any) -> None:
    """Stop the follower once it reaches ``head`` (or after 10 s)."""
    for _ in range(500):
        if projector.position == head:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(following, 10)


async def test_a_follower_running_through_a_rebuild_resumes_from_it(pg_database: Database) -> None:
    settings = settings_for(pg_database)
    ledger = ledger_for(pg_database)
    events = [*scenario(), *explained()]
    stop = asyncio.Event()
    options = ProjectionOptions(batch_size=3, poll_interval=0.01)
    async with open_projector(settings, options) as projector:
        following = asyncio.create_task(projector.follow(stop))
        for start in range(0, len(events), 5):  # the ledger grows while the rebuild runs
            apply(ledger, events[start : start + 5], run=f"part{start}")
            if start == 10:
                rebuilt = await rebuild(
                    settings, ProjectionOptions(batch_size=2, rebuild_workers=1)
                )
                assert rebuilt.position >= 10
        head = ledger.store.recorder.max_notification_id()
        await stop_at(head, projector, stop, following)
    assert projector.position == head
    assert await catch_up(settings) == 0  # (and cohorts, rewritten at most every 30 s while
    followed = await dump(settings)  # following, brought up to date)
    await rebuild(settings)
    assert followed == await dump(settings)


async def test_metrics_report_lag_rows_and_transactions(database: Database, ledger: Ledger) -> None:
    settings = settings_for(database)
    registry = CollectorRegistry()
    async with open_projector(settings, SMALL, registry) as projector:
        await projector.update_lag()
        head = ledger.store.recorder.max_notification_id()
        assert registry.get_sample_value("careledger_projection_lag_events", _rm()) == head
        assert registry.get_sample_value("careledger_projection_lag_seconds", _rm()) > 0
        await projector.catch_up()

    assert registry.get_sample_value("careledger_projection_lag_events", _rm()) == 0
    assert registry.get_sample_value("careledger_projection_lag_seconds", _rm()) == 0
    assert registry.get_sample_value("careledger_projection_events_total", _rm()) == head
    rows = {"projection": "read_models", "table": "ledger_entries"}
    assert registry.get_sample_value("careledger_projection_rows_written_total", rows) == 29
    batches = -(-head // SMALL.batch_size)
    name = "careledger_projection_transaction_seconds_count"
    assert registry.get_sample_value(name, _rm()) == batches
    for metric in registry.collect():
        for sample in metric.samples:
            assert set(sample.labels) <= {"projection", "table", "program_id", "le", "reason"}
            assert not {"ann", "bob", "cy"} & set(sample.labels.values())


def _rm() -> dict[str, str]:
    return {"projection": "read_models"}


async def test_twelve_month_retention_view_and_gauge(database: Database) -> None:
    """Latest month 2026-05: previous 12 months are 2024-06..2025-05, last 12 2025-06..2026-05."""
    ledger = ledger_for(database)
    visit = "visit.completed"
    history = {
        "p1": [("2025-03-10", visit), ("2026-04-10", visit)],  # retained
        "p2": [("2025-01-10", visit)],  # lapsed
        "p3": [("2025-05-10", visit), ("2026-03-10", "payment.recorded")],  # paying is not active
        "p4": [("2026-05-20", visit)],  # new: not in the base
        "p5": [("2024-06-10", "patient.enrolled"), ("2025-08-10", "review.submitted")],
    }
    data = {
        visit: {"visit_id": "v", "visit_type": "in_person"},
        "payment.recorded": {"amount": "10.00", "currency": "USD"},
        "patient.enrolled": {"channel": "web"},
        "review.submitted": {"rating": 4},
    }
    events: list[dict[str, Any] | bytes] = []
    for patient, items in history.items():
        for n, (day, kind) in enumerate(items):
            events.append(_cloudevent(kind, patient, day, data[kind], f"{patient}-{n}"))
    apply(ledger, sorted(events, key=lambda e: e["time"]))  # type: ignore[index]
    settings = settings_for(database)
    registry = CollectorRegistry()
    await catch_up(settings, registry=registry)

    views = await dump(settings)
    assert views["program_retention_12m"] == [(PROGRAM, _month(2026, 5), 4, 2, 0.5)]
    monthly = views["program_retention_12m_monthly"]
    assert monthly[-1] == (PROGRAM, _month(2026, 5), 4, 2, 0.5)
    assert monthly[0] == (PROGRAM, _month(2024, 6), 0, 0, None)
    assert len(monthly) == 8  # every month with any accepted interaction
    labels = {"program_id": PROGRAM}
    assert registry.get_sample_value("careledger_program_retention_rate", labels) == 0.5


def _month(year: int, month: int) -> Any:
    return date(year, month, 1)


def _cloudevent(kind: str, patient: str, day: str, data: dict[str, Any], eid: str) -> Any:
    return cloudevent(kind, patient, f"{day}T10:00:00Z", data, id=eid)


async def test_follow_applies_new_events_until_stopped(database: Database) -> None:
    settings = settings_for(database)
    ledger = ledger_for(database)
    stop = asyncio.Event()
    async with open_projector(settings, ProjectionOptions(poll_interval=0.02)) as projector:
        following = asyncio.create_task(projector.follow(stop))
        apply(ledger, scenario()[:3])
        head = ledger.store.recorder.max_notification_id()
        await stop_at(head, projector, stop, following)
    assert projector.position == head
    rows = await query(settings, "SELECT patient_id, available FROM balances")
    assert rows == [("ann", 200)]
