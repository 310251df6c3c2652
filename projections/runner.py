"""The projector: follows the ledger in global order and keeps the read models in step.

Each batch's rows and the projection's new position commit in one transaction, so a crash at
any point loses nothing and applies nothing twice: on restart the projector resumes from the
stored position. The next batch is read and decoded while the current one is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.changes import BalanceRow, BatchChanges, TierBenefits
from projections.database import check_read_models, create_read_models, missing_read_models
from projections.handlers import Fold, accounts_to_load
from projections.metrics import ProjectionMetrics
from projections.retention import CohortRefresher
from projections.source import CommitWatch, EventSource, first_set
from projections.stored import Recorded
from projections.tables import projection_positions
from projections.writer import (
    PointValues,
    PositionMoved,
    advance_position,
    load_accounts,
    lock_position,
    refresh_values,
    upsert,
    write_changes,
)

log = logging.getLogger(__name__)

# The projection that writes the read models: its row in projection_positions, its metrics label.
READ_MODELS_PROJECTION = "read_models"
# One more than the cores: a worker waiting for PostgreSQL leaves its core to another
# (measured on 2 cores: 2 workers 24.5-26.4k ledger entries/s, 3 workers 28.7-31.5k).
REBUILD_WORKERS = min(8, (os.cpu_count() or 1) + 1)
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 30.0  # seconds between retries while the database is away


@dataclass(frozen=True)
class ProjectionOptions:
    """How the projector paces itself (none of this changes what the read models hold)."""

    batch_size: int = 20_000  # most events per transaction
    account_cache: int = 200_000  # balances rows kept in memory between batches
    poll_interval: float = 0.1  # seconds between polls once caught up
    refresh_interval: float = 30.0  # most seconds between cohort refreshes while following
    rebuild_workers: int = REBUILD_WORKERS  # processes replaying a rebuild (PostgreSQL)


class Projector:
    """Applies ledger events after its stored position to every read model."""

    def __init__(
        self,
        engine: AsyncEngine,
        source: EventSource,
        metrics: ProjectionMetrics,
        options: ProjectionOptions,
        name: str = READ_MODELS_PROJECTION,
        clock: Callable[[], float] = time.monotonic,
        point_values: PointValues | None = None,
        tier_benefits: TierBenefits | None = None,
    ) -> None:
        self.engine, self.source, self.metrics, self.options = engine, source, metrics, options
        self.name = name
        # each program's money per point (from the loaded programs), for the partner tables
        self.point_values: PointValues = point_values or {}
        # each program's tiers' benefit codes, which tell a tier's benefit from a plan's
        self.tier_benefits: TierBenefits = tier_benefits or {}
        self.position = 0
        self.last_event_at: datetime | None = None
        self.cohorts = CohortRefresher(engine, metrics, name, options.refresh_interval, clock)
        # Committed balances rows, so most batches need not read them back; cleared whenever
        # a batch fails (handlers change rows in place before the commit).
        self._rows: OrderedDict[UUID, BalanceRow] = OrderedDict()

    async def start(self) -> None:
        """Create missing read models, check the stored ones are this version's, and load
        the stored position (and value the partners' points at the programs' point value)."""
        self._rows.clear()
        self.cohorts.all_stale()
        async with self.engine.begin() as conn:
            await check_read_models(conn, await missing_read_models(conn), self.name)
            await create_read_models(conn)
            await check_read_models(conn)
            await refresh_values(conn, self.point_values)
            row = {"name": self.name, "position": 0, "last_event_at": None}
            await conn.execute(upsert(conn, projection_positions).on_conflict_do_nothing(), row)
            stored = (
                await conn.execute(
                    select(projection_positions).where(projection_positions.c.name == self.name)
                )
            ).one()
        self.position, self.last_event_at = stored.position, stored.last_event_at

    async def catch_up(self, stop: asyncio.Event | None = None, refresh: bool = True) -> int:
        """Apply events until the head; returns how many. With ``refresh`` the cohorts are
        brought up to date at the end too."""
        size, total = self.options.batch_size, 0
        batch = await self._read(self.position)
        while batch:
            ahead = asyncio.create_task(self._read(batch[-1].position))
            try:
                await self._apply(batch)
            except BaseException:
                _discard(ahead)
                raise
            total += len(batch)
            batch = await ahead if len(batch) == size and not (stop and stop.is_set()) else []
            if not batch:
                _discard(ahead)
        if refresh:
            await self.cohorts.refresh()
        await self.update_lag()
        return total

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep up with the ledger until ``stop`` is set (finishing the current batch).

        Woken by the ledger's commits where the store announces them, else by polling.
        """
        watch = CommitWatch(self.engine, self.source.channel)
        try:
            backoff = FIRST_BACKOFF
            while not stop.is_set():
                watch.committed.clear()
                if await self._step(stop):
                    backoff = FIRST_BACKOFF
                    await watch.listen()  # (again, after an outage)
                    await first_set(stop, watch.committed, timeout=self.options.poll_interval)
                else:
                    await first_set(stop, timeout=backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            await watch.close()
            await self.cohorts.finish()

    async def _step(self, stop: asyncio.Event) -> bool:
        """Catch up once; on failure say so (and why, in logs and metrics) instead of dying.

        A failed batch committed nothing, so retrying it is safe. When the stored position is
        not the one expected (a commit whose acknowledgement was lost, or another projector),
        the position is read again: what is stored is always consistent with it.
        """
        try:
            await self.catch_up(stop, refresh=False)
            await self.cohorts.refresh_when_due()
            return True
        except Exception as exc:
            self.metrics.retries.labels(self.name, type(exc).__name__).inc()
            log.warning("projection step failed (%s); retrying", type(exc).__name__)
            if isinstance(exc, PositionMoved):
                with contextlib.suppress(Exception):
                    await self.start()
            return False

    async def update_lag(self) -> None:
        """Lag in events, and in seconds of ledger time: when the head was recorded minus
        when the last applied event was (or, before any, the first event)."""
        async with self.engine.connect() as conn:
            head = await self.source.head(conn)
            behind = max(head.position - self.position, 0)
            since = self.last_event_at
            if behind and since is None:
                first = await self.source.read(conn, 0, 1)
                since = first[0].facts.timestamp.value if first else None
        seconds = 0.0
        if behind and head.recorded_at and since:
            seconds = max((head.recorded_at - since).total_seconds(), 0.0)
        self.metrics.lag_events.labels(self.name).set(behind)
        self.metrics.lag_seconds.labels(self.name).set(seconds)

    # ----------------------------------------------------------------- batches
    async def _read(self, after: int) -> list[Recorded]:
        async with self.engine.connect() as conn:
            return await self.source.read(conn, after, self.options.batch_size)

    async def _apply(self, batch: list[Recorded]) -> None:
        started = time.perf_counter()
        changes = BatchChanges()
        try:
            async with self.engine.begin() as conn:
                await lock_position(conn, self.name, self.position)
                changes.accounts = await self._accounts(conn, accounts_to_load(batch))
                fold = Fold(changes, self.tier_benefits)
                for recorded in batch:
                    fold.apply(recorded)
                written = await write_changes(conn, changes, self.point_values)
                await advance_position(
                    conn, self.name, self.position, changes.position, changes.last_event_at
                )
        except BaseException:
            self._rows.clear()
            raise
        self._remember(changes.accounts)
        self.position, self.last_event_at = changes.position, changes.last_event_at
        self.cohorts.changed(program_id for program_id, _, _ in changes.months)
        self._observe(len(batch), written, time.perf_counter() - started)
        for (_, _, reason), count in changes.sums.refusals.items():
            self.metrics.refusals.labels(reason).inc(count)

    async def _accounts(self, conn: AsyncConnection, ids: set[UUID]) -> dict[UUID, BalanceRow]:
        rows = {key: self._rows[key] for key in ids if key in self._rows}
        rows.update(await load_accounts(conn, ids - rows.keys()))
        return rows

    def _remember(self, rows: dict[UUID, BalanceRow]) -> None:
        for key, row in rows.items():
            self._rows[key] = row
            self._rows.move_to_end(key)
        while len(self._rows) > self.options.account_cache:
            self._rows.popitem(last=False)

    def _observe(self, events: int, written: dict[str, int], seconds: float) -> None:
        m, name = self.metrics, self.name
        m.events.labels(name).inc(events)
        for table, rows in written.items():
            m.rows.labels(name, table).inc(rows)
        m.transaction_seconds.labels(name).observe(seconds)
        m.position.labels(name).set(self.position)
        log.debug("applied %d events up to position %d", events, self.position)


def _discard(task: asyncio.Task[list[Recorded]]) -> None:
    """Drop a read-ahead that is no longer wanted (and never report its failure)."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
