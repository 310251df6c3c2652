"""What the HTML report shows, read from the read models: aggregates only, never a patient id.

The queries use the SQLAlchemy tables (not text SQL) so dates and times come back typed from
SQLite as well as PostgreSQL. Daily KPIs are folded into calendar months here, in Python,
because month truncation is spelled differently by each database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.ext.asyncio import AsyncConnection

from careledger.application.programs import load_programs
from careledger.settings import Settings
from projections.database import connect
from projections.runner import READ_MODELS_PROJECTION
from projections.tables import (
    activity_days,
    balances,
    membership_kpis_monthly,
    partner_liability,
    program_kpis_daily,
    projection_positions,
    retention_cohorts,
    vouchers,
)


@dataclass(frozen=True)
class CohortCell:
    """One cell of the retention heatmap: a cohort ``month_offset`` months after it joined."""

    cohort_month: date
    month_offset: int
    cohort_size: int
    active_patients: int
    retention_rate: float


@dataclass(frozen=True)
class TierCount:
    """How many patients hold ``tier`` now."""

    tier: str
    patients: int


@dataclass(frozen=True)
class MonthPoints:
    """A calendar month of ``program_kpis_daily``: point flows summed, liability at month end.

    ``liability_day`` is the month's last day with a KPI row: ``liability_points`` is a
    to-date figure, so the month's closing value is the one on that day.
    """

    month: date
    earned: int
    redeemed: int
    expired: int
    reversed: int
    liability_points: int
    liability_day: date


@dataclass(frozen=True)
class PartnerLiability:
    """A coalition partner's row of ``partner_liability``: points it issued and still owes."""

    partner: str
    issued: int
    redeemed: int
    expired: int
    reversed: int
    outstanding: int
    outstanding_value: Decimal | None


@dataclass(frozen=True)
class GoalDayBin:
    """How many patients had ``goal_days_30`` goal days in their latest 30 days."""

    goal_days_30: int
    patients: int


@dataclass(frozen=True)
class RewardVouchers:
    """The vouchers of one catalogue reward (or stamp card), by status."""

    reward_id: str
    issued: int  # every voucher issued, whatever became of it
    used: int
    expired: int
    cancelled: int


@dataclass(frozen=True)
class MembershipMonth:
    """A row of ``membership_kpis_monthly``."""

    month: date
    active: int
    started: int
    renewed: int
    lapsed: int
    revenue: Decimal


@dataclass(frozen=True)
class ProgramReport:
    """Everything the report shows for one program (partners only in a coalition, goal days
    only in a program with an activity goal, rewards and memberships only where there are
    vouchers or memberships)."""

    program_id: str
    cohorts: tuple[CohortCell, ...]
    tiers: tuple[TierCount, ...]
    months: tuple[MonthPoints, ...]
    partners: tuple[PartnerLiability, ...] = ()
    goal_days: tuple[GoalDayBin, ...] = ()
    rewards: tuple[RewardVouchers, ...] = ()
    memberships: tuple[MembershipMonth, ...] = ()


@dataclass(frozen=True)
class Report:
    """The report's data; ``as_of`` is the ledger's latest event the read models have seen."""

    as_of: datetime | None
    programs: tuple[ProgramReport, ...]


async def collect(settings: Settings, program_id: str | None = None) -> Report:
    """Read the report's data from the settings' database (every program, or one).

    Tiers are listed in each program's own order (bronze before silver), including tiers no
    patient holds yet, which only the program definitions know.
    """
    programs = load_programs([settings.programs_dir] if settings.programs_dir else [])
    tier_order = {pid: list(program.tier_names) for pid, program in programs.items()}
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.connect() as conn:
            return await read_report(conn, tier_order, program_id)
    finally:
        await engine.dispose()


async def read_report(
    conn: AsyncConnection, tier_order: Mapping[str, Sequence[str]], program_id: str | None
) -> Report:
    """The report for ``program_id``, or for every program that has read-model rows."""
    found = await _program_ids(conn)
    wanted = [program_id] if program_id is not None else found
    reports = [await _program(conn, pid, tier_order.get(pid, ())) for pid in wanted]
    return Report(await _as_of(conn), tuple(reports))


async def _program_ids(conn: AsyncConnection) -> list[str]:
    query = union(
        select(balances.c.program_id),
        select(program_kpis_daily.c.program_id),
        select(retention_cohorts.c.program_id),
    )
    return sorted(str(pid) for pid in (await conn.execute(query)).scalars())


async def _as_of(conn: AsyncConnection) -> datetime | None:
    query = select(projection_positions.c.last_event_at).where(
        projection_positions.c.name == READ_MODELS_PROJECTION
    )
    value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def _program(
    conn: AsyncConnection, program_id: str, tier_order: Sequence[str]
) -> ProgramReport:
    return ProgramReport(
        program_id,
        await _cohorts(conn, program_id),
        await _tiers(conn, program_id, tier_order),
        await _months(conn, program_id),
        await _partners(conn, program_id),
        await _goal_days(conn, program_id),
        await _rewards(conn, program_id),
        await _memberships(conn, program_id),
    )


async def _rewards(conn: AsyncConnection, program_id: str) -> tuple[RewardVouchers, ...]:
    """The catalogue's redemptions: vouchers per reward, by what became of them."""
    c = vouchers.c

    def having(status: str) -> Any:
        return func.count().filter(c.status == status)

    query = (
        select(c.reward_id, func.count(), having("used"), having("expired"), having("cancelled"))
        .where(c.program_id == program_id)
        .group_by(c.reward_id)
        .order_by(c.reward_id)
    )
    return tuple(RewardVouchers(*row) for row in await conn.execute(query))


async def _memberships(conn: AsyncConnection, program_id: str) -> tuple[MembershipMonth, ...]:
    c = membership_kpis_monthly.c
    query = (
        select(c.month, c.active, c.started, c.renewed, c.lapsed, c.revenue)
        .where(c.program_id == program_id)
        .order_by(c.month)
    )
    return tuple(MembershipMonth(*row) for row in await conn.execute(query))


async def _partners(conn: AsyncConnection, program_id: str) -> tuple[PartnerLiability, ...]:
    """The partners' liability, none in a program without partners (its one row is '')."""
    c = partner_liability.c
    query = (
        select(
            c.partner,
            c.issued,
            c.redeemed,
            c.expired,
            c.reversed,
            c.outstanding,
            c.outstanding_value,
        )
        .where(c.program_id == program_id, c.partner != "")
        .order_by(c.partner)
    )
    return tuple(PartnerLiability(*row) for row in await conn.execute(query))


async def _goal_days(conn: AsyncConnection, program_id: str) -> tuple[GoalDayBin, ...]:
    """Patients by goal days in their latest 30 days, every count from 0 to the highest."""
    c = activity_days.c
    query = (
        select(c.goal_days_30, func.count())
        .where(c.program_id == program_id)
        .group_by(c.goal_days_30)
    )
    counts = {int(days): int(n) for days, n in await conn.execute(query)}
    if not counts:
        return ()
    return tuple(GoalDayBin(days, counts.get(days, 0)) for days in range(max(counts) + 1))


async def _cohorts(conn: AsyncConnection, program_id: str) -> tuple[CohortCell, ...]:
    c = retention_cohorts.c
    query = (
        select(c.cohort_month, c.month_offset, c.cohort_size, c.active_patients, c.retention_rate)
        .where(c.program_id == program_id)
        .order_by(c.cohort_month, c.month_offset)
    )
    return tuple(CohortCell(*row) for row in await conn.execute(query))


async def _tiers(
    conn: AsyncConnection, program_id: str, tier_order: Sequence[str]
) -> tuple[TierCount, ...]:
    query = (
        select(balances.c.tier, func.count())
        .where(balances.c.program_id == program_id)
        .group_by(balances.c.tier)
    )
    counts: dict[str, int] = {str(tier): int(n) for tier, n in await conn.execute(query)}
    # Tiers the program no longer defines still hold patients: they go last, by name.
    names = [*tier_order, *sorted(set(counts) - set(tier_order))]
    return tuple(TierCount(name, counts.get(name, 0)) for name in names)


async def _months(conn: AsyncConnection, program_id: str) -> tuple[MonthPoints, ...]:
    k = program_kpis_daily.c
    query = (
        select(
            k.day,
            k.points_earned,
            k.points_redeemed,
            k.points_expired,
            k.points_reversed,
            k.liability_points,
        )
        .where(k.program_id == program_id)
        .order_by(k.day)
    )
    return fold_months(tuple(row) for row in await conn.execute(query))


def fold_months(
    days: Iterable[tuple[date, int, int, int, int, int]],
) -> tuple[MonthPoints, ...]:
    """Fold day rows (day, earned, redeemed, expired, reversed, liability), oldest first."""
    months: list[MonthPoints] = []
    for day, earned, redeemed, expired, reversed_, liability in days:
        month = day.replace(day=1)
        if months and months[-1].month == month:
            last = months.pop()
            earned += last.earned
            redeemed += last.redeemed
            expired += last.expired
            reversed_ += last.reversed
        months.append(MonthPoints(month, earned, redeemed, expired, reversed_, liability, day))
    return tuple(months)
