"""Turns one batch's row changes into a handful of bulk statements, inside the caller's
transaction (the runner commits them together with the projection's new position).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple
from datetime import date, datetime
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Float, Table, Uuid, any_, bindparam, case, cast, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import bulk
from projections.bulk import Record, Upsert
from projections.changes import (
    BALANCE_COLUMNS,
    KPI_COLUMNS,
    BalanceRow,
    BatchChanges,
    KpiDelta,
    month_start,
)
from projections.tables import (
    balances,
    dead_letters,
    ledger_entries,
    patient_activity_days,
    patient_activity_months,
    program_kpis_daily,
    projection_positions,
    tier_history,
)

CHUNK = 1000
T = TypeVar("T")


class PositionMoved(RuntimeError):
    """Raised when another projector advanced the position first; this batch is rolled back."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert(conn: AsyncConnection, table: Table) -> Any:
    """``INSERT`` with the dialect's ``ON CONFLICT`` support."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


async def load_accounts(conn: AsyncConnection, ids: Collection[UUID]) -> dict[UUID, BalanceRow]:
    """The stored ``balances`` rows of the given accounts."""
    loaded: dict[UUID, BalanceRow] = {}
    if not ids:
        return loaded
    if conn.dialect.name == "postgresql":  # one array parameter instead of one per id
        ids_param = bindparam("ids", list(ids), type_=postgresql.ARRAY(Uuid))
        queries = [BALANCE_FIELDS.where(balances.c.account_id == any_(ids_param))]
    else:
        account = balances.c.account_id
        queries = [BALANCE_FIELDS.where(account.in_(part)) for part in chunks(list(ids))]
    for query in queries:
        for row in await conn.execute(query):
            loaded[row.account_id] = BalanceRow(*row)
    return loaded


# balances columns in BalanceRow's field order, so a row loads as BalanceRow(*row).
BALANCE_FIELDS = select(*(balances.c[name] for name in BALANCE_COLUMNS))
balance_record = attrgetter(*(column.name for column in balances.columns))
BALANCES = Upsert(
    balances,
    keys=("program_id", "patient_id"),
    merge={c: "replace" for c in BALANCE_COLUMNS if c not in ("program_id", "patient_id")},
)
ENTRIES = Upsert(ledger_entries)
TIER_HISTORY = Upsert(tier_history)
DEAD_LETTERS = Upsert(dead_letters)
MONTHS = Upsert(
    patient_activity_months,
    keys=("program_id", "patient_id", "month_index"),
    merge={"active": "or"},
)
# A patient-day new to the table is one more active patient that day.
DAYS = Upsert(
    patient_activity_days,
    keys=("program_id", "day", "patient_id"),
    count_new_by=("program_id", "day"),
)
KPIS = Upsert(
    program_kpis_daily, keys=("program_id", "day"), merge=dict.fromkeys(KPI_COLUMNS, "add")
)


async def write_changes(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Write every row change of the batch; returns rows written per table."""
    written = await write_rows(conn, changes, changes.accounts.values())
    written.update(await write_kpis(conn, changes.kpis))
    return written


async def write_rows(
    conn: AsyncConnection, changes: BatchChanges, accounts: Collection[BalanceRow]
) -> dict[str, int]:
    """Write the batch's rows except KPIs, and ``accounts`` as ``balances`` rows; the
    patient-days new to the table are added to ``changes.kpis`` as active patients."""
    written: dict[str, int] = {}

    async def put(spec: Upsert, records: Sequence[Record]) -> list[Record]:
        returned = await bulk.write(conn, spec, records)
        if records:
            new = sum(group[-1] for group in returned)
            written[spec.table.name] = new if spec.count_new_by else len(records)
        return returned

    await put(BALANCES, [balance_record(row) for row in accounts])
    await put(ENTRIES, list(changes.entries.values()))
    await put(TIER_HISTORY, changes.tier_changes)
    await put(DEAD_LETTERS, changes.dead_letters)
    await put(MONTHS, _month_records(changes))
    for program_id, day, new in await put(DAYS, list(changes.days)):
        changes.kpi(program_id, day).active_patients += new
    return written


async def write_kpis(
    conn: AsyncConnection, kpis: Mapping[tuple[str, date], KpiDelta]
) -> dict[str, int]:
    """Add ``kpis`` to ``program_kpis_daily`` and bring the to-date columns up to date."""
    # The to-date columns (liability, rates) start empty; refresh_running_totals fills them.
    records = [
        (program_id, day, *astuple(delta), 0, None, None)
        for (program_id, day), delta in kpis.items()
    ]
    await bulk.write(conn, KPIS, records)
    for program_id, since in _earliest_days(kpis).items():
        await refresh_running_totals(conn, program_id, since)
    return {KPIS.table.name: len(records)} if records else {}


def _earliest_days(kpis: Iterable[tuple[str, date]]) -> dict[str, date]:
    """Per program, the earliest day among ``kpis``' keys (where running totals change)."""
    earliest: dict[str, date] = {}
    for program_id, day in kpis:
        if program_id not in earliest or day < earliest[program_id]:
            earliest[program_id] = day
    return earliest


def _month_records(changes: BatchChanges) -> list[Record]:
    return [
        (program_id, patient_id, index, month_start(index), active)
        for (program_id, patient_id, index), active in changes.months.items()
    ]


async def refresh_running_totals(conn: AsyncConnection, program_id: str, since: date) -> None:
    """Recompute the to-date columns (liability, rates) of ``program_id`` from ``since`` on."""
    k = program_kpis_daily

    def to_date(column: Any) -> Any:
        return func.sum(column).over(order_by=k.c.day, rows=(None, 0))

    totals = (
        select(
            k.c.day,
            to_date(k.c.points_earned).label("earned"),
            to_date(k.c.points_redeemed).label("redeemed"),
            to_date(k.c.points_expired).label("expired"),
            to_date(k.c.points_reversed).label("reversed"),
            to_date(k.c.points_adjusted).label("adjusted"),
        )
        .where(k.c.program_id == program_id)
        .subquery()
    )
    earned = totals.c.earned

    def rate(points: Any) -> Any:
        return case((earned > 0, cast(points, Float) / earned), else_=None)

    await conn.execute(
        update(k)
        .where(k.c.program_id == program_id, k.c.day >= since, k.c.day == totals.c.day)
        .values(
            liability_points=earned
            + totals.c.adjusted
            - totals.c.redeemed
            - totals.c.expired
            - totals.c.reversed,
            redemption_rate=rate(totals.c.redeemed),
            breakage_rate=rate(totals.c.expired),
        )
    )


async def lock_position(conn: AsyncConnection, name: str, expected: int) -> None:
    """Start the batch's transaction by locking the position row (one projector at a time)."""
    table = projection_positions
    stored = await conn.scalar(
        select(table.c.position).where(table.c.name == name).with_for_update()
    )
    if stored != expected:
        raise PositionMoved(f"projection {name} is at {stored}, not {expected}")


async def advance_position(
    conn: AsyncConnection, name: str, old: int, new: int, last_event_at: datetime | None
) -> None:
    """Move the position from ``old`` to ``new``, or fail if someone else moved it."""
    table = projection_positions
    result = await conn.execute(
        update(table)
        .where(table.c.name == name, table.c.position == old)
        .values(position=new, last_event_at=last_event_at)
    )
    if result.rowcount != 1:
        raise PositionMoved(f"projection {name} is no longer at position {old}")
