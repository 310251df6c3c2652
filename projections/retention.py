"""Monthly retention cohorts, derived from ``patient_activity_months`` and nothing else.

A patient's cohort is the month of their first accepted interaction; they are active in a
month with at least one accepted interaction that counts as activity. The table is rewritten
per program from the helper table, so however the helper rows arrived (incrementally, after a
crash, in a rebuild) the result is the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.changes import month_start
from projections.metrics import ProjectionMetrics
from projections.tables import patient_activity_months, retention_cohorts
from projections.views import select_view

log = logging.getLogger(__name__)


class CohortRefresher:
    """Knows which programs' cohorts are out of date and rewrites them.

    After a start or a rebuild that is not known, so every program is. While following, a
    rewrite happens at most every ``interval`` seconds (``clock`` paces it; it is never
    written anywhere). On PostgreSQL it runs beside the batches in a snapshot of its own, so
    a large rewrite never delays fresh balances; SQLite has one writer, so there it runs in
    line.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: ProjectionMetrics,
        projection: str,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.engine, self.metrics, self.projection = engine, metrics, projection
        self.interval, self.clock = interval, clock
        self._stale: set[str] | None = None  # None: every program
        self._refreshed_at = -math.inf
        self._running: asyncio.Task[None] | None = None

    def all_stale(self) -> None:
        self._stale = None

    def changed(self, programs: Iterable[str]) -> None:
        if self._stale is not None:
            self._stale.update(programs)

    async def refresh_when_due(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            if not running.done():
                self._running = running
                return
            running.result()  # a failed rewrite fails this step (it is retried)
        stale = self._stale is None or bool(self._stale)
        if not stale or self.clock() - self._refreshed_at < self.interval:
            return
        if self.engine.dialect.name == "postgresql":
            self._running = asyncio.create_task(self.refresh())
        else:
            await self.refresh()

    async def finish(self) -> None:
        """Wait for a rewrite running in the background (on the way out: a failure is only
        logged, the next start rewrites every program anyway)."""
        running, self._running = self._running, None
        if running is not None:
            try:
                await running
            except Exception as exc:
                log.warning("cohort rewrite failed (%s)", type(exc).__name__)

    async def refresh(self) -> None:
        """Rewrite now the cohorts of the programs changed since the last rewrite."""
        programs, self._stale = self._stale, set()
        if programs is not None and not programs:
            return
        try:
            async with self.engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    rows = await refresh_cohorts(conn, programs)
        except BaseException:
            self._stale = None  # not known which programs are left: all of them next time
            raise
        self._refreshed_at = self.clock()
        self.metrics.rows.labels(self.projection, retention_cohorts.name).inc(rows)
        async with self.engine.connect() as conn:
            self.metrics.set_retention(await retention_12m(conn))


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


@dataclass(frozen=True)
class _Counts:
    sizes: dict[int, int]  # cohort month index -> patients
    active: dict[tuple[int, int], int]  # (cohort, month index) -> active patients
    latest: int  # the program's latest month with data


async def cohort_rows(conn: AsyncConnection, program_id: str) -> list[dict[str, Any]]:
    """Every (cohort, month offset) of a program, up to its latest month with data."""
    counts = await _count(conn, program_id)
    rows = []
    for cohort, size in sorted(counts.sizes.items()):
        for offset in range(counts.latest - cohort + 1):
            patients = counts.active.get((cohort, cohort + offset), 0)
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


async def _count(conn: AsyncConnection, program_id: str) -> _Counts:
    a = patient_activity_months
    mine = a.c.program_id == program_id
    cohorts = (
        select(a.c.patient_id, func.min(a.c.month_index).label("cohort"))
        .where(mine)
        .group_by(a.c.patient_id)
        .subquery()
    )
    sizes = await conn.execute(select(cohorts.c.cohort, func.count()).group_by(cohorts.c.cohort))
    active = await conn.execute(
        select(cohorts.c.cohort, a.c.month_index, func.count())
        .select_from(a.join(cohorts, a.c.patient_id == cohorts.c.patient_id))
        .where(mine, a.c.active)
        .group_by(cohorts.c.cohort, a.c.month_index)
    )
    latest = await conn.scalar(select(func.max(a.c.month_index)).where(mine))
    return _Counts(
        sizes={cohort: n for cohort, n in sizes},
        active={(cohort, month): n for cohort, month, n in active},
        latest=int(latest or 0),
    )


async def retention_12m(conn: AsyncConnection) -> dict[str, float | None]:
    """``program_retention_12m``: per program, the 12-month retention rate (None: no base)."""
    rows = await conn.execute(select_view("program_retention_12m"))
    return {row.program_id: row.retention_rate for row in rows}
