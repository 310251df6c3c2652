"""The projector: follows the ledger in global order and keeps the read models in step.

Each batch's rows and the projection's new position commit in one transaction, so a crash at
any point loses nothing and applies nothing twice: on restart the projector resumes from the
stored position. The next batch is read and decoded while the current one is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.account import PatientAccount
from projections.changes import BatchChanges
from projections.database import create_read_models, drop_read_models
from projections.handlers import Fold
from projections.metrics import ProjectionMetrics
from projections.retention import refresh_cohorts, retention_12m
from projections.source import EventSource, Recorded
from projections.tables import projection_positions
from projections.writer import (
    advance_position,
    load_accounts,
    lock_position,
    upsert,
    write_changes,
)

log = logging.getLogger(__name__)

READ_MODELS = "read_models"


@dataclass(frozen=True)
class ProjectionOptions:
    """How the projector paces itself (none of this changes what the read models hold)."""

    batch_size: int = 5000  # events per transaction
    poll_interval: float = 0.1  # seconds between polls once caught up
    refresh_interval: float = 30.0  # most seconds between cohort refreshes while following


class Projector:
    """Applies ledger events after its stored position to every read model."""

    def __init__(
        self,
        engine: AsyncEngine,
        source: EventSource,
        metrics: ProjectionMetrics,
        options: ProjectionOptions,
        name: str = READ_MODELS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.source, self.metrics, self.options = engine, source, metrics, options
        self.name = name
        self.position = 0
        self.last_event_at: datetime | None = None
        self._clock = clock  # paces cohort refreshes only; never written anywhere
        self._stale: set[str] | None = None  # programs whose cohorts are out of date; None: all
        self._refreshed_at = -math.inf

    async def start(self) -> None:
        """Create missing read models and load the stored position."""
        async with self.engine.begin() as conn:
            await create_read_models(conn)
            row = {"name": self.name, "position": 0, "last_event_at": None}
            await conn.execute(upsert(conn, projection_positions).on_conflict_do_nothing(), row)
            stored = (
                await conn.execute(
                    select(projection_positions).where(projection_positions.c.name == self.name)
                )
            ).one()
        self.position, self.last_event_at = stored.position, stored.last_event_at

    async def rebuild(self) -> int:
        """Drop every read model, then replay the whole ledger; returns events applied."""
        async with self.engine.begin() as conn:
            await drop_read_models(conn, self.name)
        await self.start()
        self._stale = None
        return await self.catch_up()

    async def catch_up(self, stop: asyncio.Event | None = None, refresh: bool = True) -> int:
        """Apply events until the head; returns how many. ``refresh`` forces the cohorts
        to be brought up to date at the end (otherwise at most every refresh_interval)."""
        size, total = self.options.batch_size, 0
        batch = await self._read(self.position)
        while batch:
            ahead = asyncio.create_task(self._read(batch[-1].position))
            try:
                await self._apply(batch)
            except BaseException:
                ahead.cancel()
                raise
            total += len(batch)
            batch = await ahead if len(batch) == size and not (stop and stop.is_set()) else []
            if not batch:
                ahead.cancel()
        await self._refresh_cohorts(force=refresh)
        await self.update_lag()
        return total

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep up with the ledger until ``stop`` is set (finishing the current batch)."""
        while not stop.is_set():
            await self.catch_up(stop, refresh=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.poll_interval)

    async def update_lag(self) -> None:
        async with self.engine.connect() as conn:
            head = await self.source.head(conn)
        behind = max(head.position - self.position, 0)
        seconds = 0.0
        if behind and head.recorded_at and self.last_event_at:
            seconds = max((head.recorded_at - self.last_event_at).total_seconds(), 0.0)
        self.metrics.lag_events.labels(self.name).set(behind)
        self.metrics.lag_seconds.labels(self.name).set(seconds)

    # ----------------------------------------------------------------- batches
    async def _read(self, after: int) -> list[Recorded]:
        async with self.engine.connect() as conn:
            return await self.source.read(conn, after, self.options.batch_size)

    async def _apply(self, batch: list[Recorded]) -> None:
        started = time.perf_counter()
        changes = BatchChanges()
        async with self.engine.begin() as conn:
            await lock_position(conn, self.name, self.position)
            changes.accounts = await load_accounts(conn, _opened_before(batch))
            fold = Fold(changes)
            for recorded in batch:
                fold.apply(recorded)
            written = await write_changes(conn, changes)
            await advance_position(
                conn, self.name, self.position, changes.position, changes.last_event_at
            )
        self.position, self.last_event_at = changes.position, changes.last_event_at
        if self._stale is not None:
            self._stale.update(program_id for program_id, _, _ in changes.months)
        self._observe(len(batch), written, time.perf_counter() - started)

    def _observe(self, events: int, written: dict[str, int], seconds: float) -> None:
        m, name = self.metrics, self.name
        m.events.labels(name).inc(events)
        for table, rows in written.items():
            m.rows.labels(name, table).inc(rows)
        m.transaction_seconds.labels(name).observe(seconds)
        m.position.labels(name).set(self.position)
        log.debug("applied %d events up to position %d", events, self.position)

    async def _refresh_cohorts(self, force: bool) -> None:
        """Rewrite the cohorts of the programs that changed, from the helper table."""
        if self._stale is not None and not self._stale:
            return
        if not force and self._clock() - self._refreshed_at < self.options.refresh_interval:
            return
        async with self.engine.begin() as conn:
            rows = await refresh_cohorts(conn, self._stale)
        self._stale, self._refreshed_at = set(), self._clock()
        self.metrics.rows.labels(self.name, "retention_cohorts").inc(rows)
        async with self.engine.connect() as conn:
            self.metrics.set_retention(await retention_12m(conn))


def _opened_before(batch: list[Recorded]) -> set[UUID]:
    """Accounts the batch touches whose ``Opened`` is in an earlier batch (rows to load)."""
    touched: set[UUID] = set()
    opened: set[UUID] = set()
    for recorded in batch:
        event = recorded.event
        if isinstance(event, PatientAccount.Opened):
            opened.add(event.originator_id)
        elif isinstance(event, PatientAccount.Event):
            touched.add(event.originator_id)
    return touched - opened
