"""Monthly retention cohorts, derived from ``patient_activity_months`` and nothing else.

A patient's cohort is the month of their first accepted interaction; they are active in a
month with at least one accepted interaction that counts as activity. The table is rewritten
per program from the helper table, so however the helper rows arrived (incrementally, after a
crash, in a rebuild) the result is the same.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.changes import month_start
from projections.tables import patient_activity_months, retention_cohorts


async def refresh_cohorts(conn: AsyncConnection, program_ids: Collection[str] | None) -> int:
    """Rewrite ``retention_cohorts`` for ``program_ids`` (``None``: every program)."""
    a = patient_activity_months
    if program_ids is None:
        program_ids = list((await conn.scalars(select(a.c.program_id).distinct())).all())
    written = 0
    for program_id in sorted(program_ids):
        rows = await cohort_rows(conn, program_id)
        await conn.execute(
            retention_cohorts.delete().where(retention_cohorts.c.program_id == program_id)
        )
        if rows:
            await conn.execute(retention_cohorts.insert(), rows)
        written += len(rows)
    return written


async def cohort_rows(conn: AsyncConnection, program_id: str) -> list[dict[str, Any]]:
    """Every (cohort, month offset) of a program, up to its latest month with data."""
    a = patient_activity_months
    mine = a.c.program_id == program_id
    cohorts = (
        select(a.c.patient_id, func.min(a.c.month_index).label("cohort"))
        .where(mine)
        .group_by(a.c.patient_id)
        .subquery()
    )
    size_rows = await conn.execute(
        select(cohorts.c.cohort, func.count()).group_by(cohorts.c.cohort)
    )
    sizes: dict[int, int] = {cohort: n for cohort, n in size_rows}
    active_rows = await conn.execute(
        select(cohorts.c.cohort, a.c.month_index, func.count())
        .select_from(a.join(cohorts, a.c.patient_id == cohorts.c.patient_id))
        .where(mine, a.c.active)
        .group_by(cohorts.c.cohort, a.c.month_index)
    )
    active = {(cohort, month): n for cohort, month, n in active_rows}
    latest = await conn.scalar(select(func.max(a.c.month_index)).where(mine))
    rows = []
    for cohort, size in sorted(sizes.items()):
        for offset in range(int(latest or cohort) - cohort + 1):
            patients = active.get((cohort, cohort + offset), 0)
            rows.append(
                {
                    "program_id": program_id,
                    "cohort_month": month_start(cohort),
                    "month_offset": offset,
                    "cohort_size": size,
                    "active_patients": patients,
                    "retention_rate": patients / size,
                }
            )
    return rows


async def retention_12m(conn: AsyncConnection) -> dict[str, float | None]:
    """``program_retention_12m``: per program, the 12-month retention rate (None: no base)."""
    rows = await conn.execute(text("SELECT program_id, retention_rate FROM program_retention_12m"))
    return {str(program_id): rate for program_id, rate in rows}
