"""Turns one batch's row changes into a handful of bulk statements, inside the caller's
transaction (the runner commits them together with the projection's new position).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import (
    Float,
    Table,
    Uuid,
    any_,
    bindparam,
    case,
    cast,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import bulk
from projections.bulk import Record, Upsert
from projections.changes import (
    BALANCE_COLUMNS,
    CENT,
    ENGAGEMENT_COLUMNS,
    KPI_COLUMNS,
    LIABILITY_COLUMNS,
    MEMBERSHIP_KPI_COLUMNS,
    REWARD_VALUE_COLUMNS,
    BalanceRow,
    BatchChanges,
    KpiDelta,
    MembershipRow,
    Redemption,
    Sums,
    VoucherRow,
    goal_summary,
    month_start,
)
from projections.erasure import erase_accounts
from projections.tables import (
    activity_days,
    balances,
    benefits,
    dead_letters,
    engagement_monthly,
    ledger_entries,
    marketing_consent,
    membership_kpis_monthly,
    memberships,
    partner_liability,
    partner_redemptions,
    partner_settlement,
    patient_activity_days,
    patient_activity_months,
    patient_goal_readings,
    program_kpis_daily,
    projection_positions,
    refusals_monthly,
    reward_value_by_year,
    tier_history,
    vouchers,
    wallets,
)

CHUNK = 1000
T = TypeVar("T")
PointValues = Mapping[str, Decimal | None]  # money per point of each program's latest version


class UnknownRedemption(LookupError):
    """Raised when a cancellation names a redemption the read models never saw."""


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
LIABILITY = Upsert(
    partner_liability,
    keys=("program_id", "partner"),
    merge=dict.fromkeys(LIABILITY_COLUMNS, "add"),
)
SETTLEMENT = Upsert(
    partner_settlement,
    keys=("program_id", "issuing_partner", "redeeming_partner", "month"),
    merge={"points": "add"},
)
ENGAGEMENT = Upsert(
    engagement_monthly,
    keys=("program_id", "month", "action"),
    merge=dict.fromkeys(ENGAGEMENT_COLUMNS, "add"),
)
ACTIVITY = Upsert(
    activity_days,
    keys=("program_id", "patient_id"),
    merge={c.name: "replace" for c in activity_days.columns if not c.primary_key},
)
GOAL_READINGS = Upsert(patient_goal_readings)
REDEMPTIONS = Upsert(partner_redemptions)


def _replacing(table: Table) -> Upsert:
    """Rows written whole: the key's row takes every other column's new value."""
    keys = tuple(c.name for c in table.primary_key.columns)
    return Upsert(
        table, keys=keys, merge={c.name: "replace" for c in table.columns if not c.primary_key}
    )


VOUCHERS = _replacing(vouchers)
MEMBERSHIPS = _replacing(memberships)
BENEFITS = _replacing(benefits)
WALLETS = _replacing(wallets)
MEMBERSHIP_KPIS = Upsert(
    membership_kpis_monthly,
    keys=("program_id", "month"),
    merge=dict.fromkeys(MEMBERSHIP_KPI_COLUMNS, "add"),
)

REWARD_VALUES = Upsert(
    reward_value_by_year,
    keys=("program_id", "patient_id", "year", "payer_class"),
    merge=dict.fromkeys(REWARD_VALUE_COLUMNS, "add"),
)
REFUSALS = Upsert(
    refusals_monthly, keys=("program_id", "month", "reason"), merge={"interactions": "add"}
)
CONSENTS = _replacing(marketing_consent)


async def write_changes(
    conn: AsyncConnection, changes: BatchChanges, point_values: PointValues
) -> dict[str, int]:
    """Write every row change of the batch; returns rows written per table."""
    written = await write_rows(conn, changes, changes.accounts.values())
    written.update(await write_kpis(conn, changes.kpis))
    written.update(await write_sums(conn, changes.sums, point_values))
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
    await _cancel_earlier_redemptions(conn, changes)
    await put(REDEMPTIONS, _redemption_records(changes.redemptions.values()))
    written.update(await _write_goal_days(conn, changes))
    writers = (
        _write_vouchers,
        _write_memberships,
        _write_benefits,
        _write_wallets,
        _write_consents,
    )
    for write in writers:
        written.update(await write(conn, changes))
    written.update(await erase_accounts(conn, changes))  # last: the rows above included
    return written


async def _stored(
    conn: AsyncConnection, table: Table, keys: Collection[tuple[Any, ...]]
) -> list[Any]:
    """The rows of ``table`` whose leading key columns are among ``keys``."""
    if not keys:
        return []
    ordered = sorted(keys)
    columns = list(table.primary_key.columns)[: len(ordered[0])]
    found: list[Any] = []
    for part in chunks(ordered, CHUNK // len(columns)):
        found.extend(await conn.execute(select(table).where(tuple_(*columns).in_(part))))
    return found


async def _put_whole(conn: AsyncConnection, spec: Upsert, records: list[Record]) -> dict[str, int]:
    await bulk.write(conn, spec, records)
    return {spec.table.name: len(records)} if records else {}


async def _write_vouchers(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Vouchers issued in the batch, and those of earlier batches it used or ended."""
    rows = dict(changes.vouchers)
    for stored in await _stored(conn, vouchers, changes.voucher_changes.keys()):
        row = VoucherRow(*stored)
        rows[(row.program_id, row.patient_id, row.redemption_id)] = row
    for key, voucher_changes in changes.voucher_changes.items():
        if key not in rows:
            raise LookupError(f"voucher {key} changed but never issued")
        for change in voucher_changes:
            change.apply(rows[key])
    return await _put_whole(conn, VOUCHERS, [astuple(row) for row in rows.values()])


async def _write_memberships(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Apply the batch's membership changes to the stored rows, in ledger order, counting
    each month's starts, renewals, lapses, revenue and active memberships into the sums."""
    rows: dict[tuple[str, str, str], MembershipRow] = {}
    for stored in await _stored(conn, memberships, changes.membership_changes.keys()):
        row = MembershipRow(*stored)
        rows[(row.program_id, row.patient_id, row.membership_id)] = row
    for key, membership_changes in changes.membership_changes.items():
        for change in membership_changes:
            rows[key] = change.apply(key, rows.get(key), changes.sums)
    return await _put_whole(conn, MEMBERSHIPS, [astuple(row) for row in rows.values()])


async def _write_benefits(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Close the rows of benefits no longer held and open rows for new ones, in order."""
    accounts = {(change.program_id, change.patient_id) for change in changes.benefit_changes}
    held: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for stored in await _stored(conn, benefits, accounts):
        if stored.until is None:
            held.setdefault((stored.program_id, stored.patient_id), {})[stored.benefit] = list(
                stored
            )
    written: dict[tuple[str, str, str, datetime], list[Any]] = {}
    for change in changes.benefit_changes:
        account = (change.program_id, change.patient_id)
        now = held.setdefault(account, {})
        for benefit in sorted(now.keys() - set(change.benefits)):
            row = now.pop(benefit)
            row[-1] = change.at  # until
            written[(*account, benefit, row[3])] = row
        for benefit in change.benefits:
            if benefit not in now:
                source = "tier" if benefit in change.tier_benefits else "membership"
                row = now[benefit] = [*account, benefit, change.at, source, None]
                written[(*account, benefit, change.at)] = row
    return await _put_whole(conn, BENEFITS, [tuple(row) for row in written.values()])


async def _write_wallets(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """The batch's wallet movements added to the stored balances; the discount of the
    latest payment."""
    stored = {
        (r.program_id, r.patient_id): r for r in await _stored(conn, wallets, changes.wallets)
    }
    records: list[Record] = []
    for key, delta in changes.wallets.items():
        before = stored.get(key)
        cashback = (before.cashback_balance if before else Decimal(0)) + delta.cashback
        prepaid = (before.prepaid_balance if before else Decimal(0)) + delta.prepaid
        discount = delta.discount_percent
        if discount is None:
            discount = before.prepayment_discount_percent if before else 0
        records.append(
            (*key, cashback.quantize(CENT), prepaid.quantize(CENT), discount, delta.updated_at)
        )
    return await _put_whole(conn, WALLETS, records)


async def _write_consents(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Each account's latest consent by event time: a batch's change replaces the stored one
    unless that is later (a late consent.changed does not undo a newer one)."""
    stored = {
        (r.program_id, r.patient_id): r.since
        for r in await _stored(conn, marketing_consent, changes.consents)
    }
    records: list[Record] = [
        (*key, marketing, since)
        for key, (marketing, since) in changes.consents.items()
        if key not in stored or since >= stored[key]
    ]
    return await _put_whole(conn, CONSENTS, records)


def _redemption_records(redemptions: Iterable[Redemption]) -> list[Record]:
    return [
        (r.program_id, r.patient_id, r.redemption_id, issuer, r.redeemer, points)
        for r in redemptions
        for issuer, points in r.by_issuer.items()
    ]


async def _cancel_earlier_redemptions(conn: AsyncConnection, changes: BatchChanges) -> None:
    """Give back, into ``changes.sums``, what the cancelled redemptions of earlier batches
    took (as the fold does for those of the same batch)."""
    if not changes.cancellations:
        return
    t = partner_redemptions
    keys = [(c.program_id, c.patient_id, c.redemption_id) for c in changes.cancellations]
    found: dict[tuple[str, str, str], Redemption] = {}
    for part in chunks(keys, CHUNK // 3):
        query = select(t).where(tuple_(t.c.program_id, t.c.patient_id, t.c.redemption_id).in_(part))
        for row in await conn.execute(query):
            key = (row.program_id, row.patient_id, row.redemption_id)
            stored = found.setdefault(key, Redemption(*key, row.redeeming_partner, {}))
            stored.by_issuer[row.issuing_partner] = row.points
    for cancellation, key in zip(changes.cancellations, keys, strict=True):
        redemption = found.get(key)
        if redemption is None:
            raise UnknownRedemption(f"redemption {key} cancelled but never seen")
        changes.sums.cancel(redemption, cancellation)


async def _write_goal_days(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Add and remove goal readings, and rewrite ``activity_days`` of the accounts whose
    goal days may have changed (from all their goal readings, so any batching agrees)."""
    voided_accounts = {key[:2] for key in changes.goal_voids}
    accounts = changes.goal_accounts | voided_accounts
    if not accounts:
        return {}
    t = patient_goal_readings
    stored: dict[tuple[str, str], dict[tuple[str, str], date]] = {}
    for part in chunks(sorted(accounts), CHUNK // 2):
        query = select(t).where(tuple_(t.c.program_id, t.c.patient_id).in_(part))
        for row in await conn.execute(query):
            readings = stored.setdefault((row.program_id, row.patient_id), {})
            readings[(row.source, row.source_id)] = row.day
    gone = [key for key in changes.goal_voids if key[2:] in stored.get(key[:2], {})]
    columns = (t.c.program_id, t.c.patient_id, t.c.source, t.c.source_id)
    for doomed in chunks(sorted(gone), CHUNK // 4):
        await conn.execute(t.delete().where(tuple_(*columns).in_(doomed)))
    for program_id, patient_id, source, source_id in gone:
        del stored[(program_id, patient_id)][(source, source_id)]
    added = [(*key, day) for key, day in changes.goal_readings.items()]
    await bulk.write(conn, GOAL_READINGS, added)
    for program_id, patient_id, source, source_id, day in added:
        stored.setdefault((program_id, patient_id), {})[(source, source_id)] = day
    # a row once an account has had a goal day (counts drop to 0 if voids take them all)
    rows = [
        (*account, *goal_summary(set(stored.get(account, {}).values())))
        for account in sorted(accounts)
        if account in changes.goal_accounts or account in stored
    ]
    await bulk.write(conn, ACTIVITY, rows)
    written = {ACTIVITY.table.name: len(rows)} if rows else {}
    if added or gone:
        written[t.name] = len(added) + len(gone)
    return written


async def write_sums(
    conn: AsyncConnection, sums: Sums, point_values: PointValues
) -> dict[str, int]:
    """Add the partner, engagement and membership KPI rows, then value the partners'
    points."""
    liability = [
        (program_id, partner, *astuple(delta), delta.outstanding, None, None)
        for (program_id, partner), delta in sums.liability.items()
    ]
    settlement = [(*key, points, None) for key, points in sums.settlement.items()]
    engagement = [(*key, *astuple(delta)) for key, delta in sums.engagement.items()]
    membership_kpis = [(*key, *astuple(delta)) for key, delta in sums.memberships.items()]
    reward_values = [
        (*key, delta.redemptions, delta.value.quantize(CENT))
        for key, delta in sums.reward_values.items()
    ]
    refusals = [(*key, count) for key, count in sums.refusals.items()]
    written = {}
    writes = (
        (LIABILITY, liability),
        (SETTLEMENT, settlement),
        (ENGAGEMENT, engagement),
        (MEMBERSHIP_KPIS, membership_kpis),
        (REWARD_VALUES, reward_values),
        (REFUSALS, refusals),
    )
    for spec, records in writes:
        await bulk.write(conn, spec, records)
        if records:
            written[spec.table.name] = len(records)
    await refresh_values(conn, point_values, sums.programs())
    return written


async def refresh_values(
    conn: AsyncConnection, point_values: PointValues, program_ids: Collection[str] | None = None
) -> None:
    """Value the outstanding and settled points of ``program_ids`` (default: every program
    with rows) at each program's point value (null where it has none), to the cent."""
    liability, settlement = partner_liability.c, partner_settlement.c
    if program_ids is None:
        found = await conn.scalars(select(liability.program_id).distinct())
        program_ids = set(found) | set(await conn.scalars(select(settlement.program_id).distinct()))
    for program_id in sorted(program_ids):
        value = point_values.get(program_id)
        rows = await conn.execute(
            select(liability.partner, liability.outstanding).where(
                liability.program_id == program_id
            )
        )
        await _set_values(
            conn,
            partner_liability,
            [
                {
                    "b_program": program_id,
                    "b_partner": partner,
                    "b_point_value": value,
                    "b_value": _value(points, value),
                }
                for partner, points in rows
            ],
        )
        settled = await conn.execute(
            select(
                settlement.issuing_partner,
                settlement.redeeming_partner,
                settlement.month,
                settlement.points,
            ).where(settlement.program_id == program_id)
        )
        await _set_values(
            conn,
            partner_settlement,
            [
                {
                    "b_program": program_id,
                    "b_issuer": issuer,
                    "b_redeemer": redeemer,
                    "b_month": month,
                    "b_value": _value(points, value),
                }
                for issuer, redeemer, month, points in settled
            ],
        )


def _value(points: int, point_value: Decimal | None) -> Decimal | None:
    return None if point_value is None else (points * point_value).quantize(CENT)


async def _set_values(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    c = table.c
    if table is partner_liability:
        statement = (
            update(table)
            .where(c.program_id == bindparam("b_program"), c.partner == bindparam("b_partner"))
            .values(point_value=bindparam("b_point_value"), outstanding_value=bindparam("b_value"))
        )
    else:
        statement = (
            update(table)
            .where(
                c.program_id == bindparam("b_program"),
                c.issuing_partner == bindparam("b_issuer"),
                c.redeeming_partner == bindparam("b_redeemer"),
                c.month == bindparam("b_month"),
            )
            .values(value=bindparam("b_value"))
        )
    await conn.execute(statement, rows)


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
