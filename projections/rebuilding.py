"""``projections rebuild``: replay the whole ledger into fresh read models, published at once.

Rebuilding in place, batch by batch as the follower works, showed analysts half-built tables
(and left them so after a crash), rewrote every touched ``balances`` row once per batch, and
ran in one process. Instead:

- The ledger is replayed up to its head when the rebuild starts, into empty tables that
  nobody reads yet: so no position is kept per batch, and a ``balances`` row is written once,
  when its account leaves the worker's cache or at the end. KPIs are kept in memory (one row
  per program and day) and written at the end.
- On PostgreSQL the tables are built in a schema of their own, ``<schema>__rebuild``, by
  ``workers`` processes, each replaying the accounts of one shard (all of an account's events
  are in its shard, so no two workers touch the same row; their KPIs are added up at the
  end). The finished tables then replace the live ones in one transaction: analysts and a
  running follower see the old tables until then, and the follower, finding the position
  moved, resumes from the rebuilt one.
- On SQLite (the embedded default: one writer, no schemas) the same replay runs in one
  worker inside one transaction.

Either way a rebuild that fails or is killed leaves the read models as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar
from uuid import UUID

from pydantic import SecretStr
from sqlalchemy import Index, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import ledger_mapper, open_store
from careledger.runtime import tune_garbage_collector
from projections.changes import (
    KPI_COLUMNS,
    BalanceRow,
    BatchChanges,
    KpiDelta,
    Sums,
    TierBenefits,
)
from projections.database import (
    connect,
    create_read_models,
    drop_read_models,
    grant,
    is_postgres,
    quote,
    secondary_indexes,
    select_grants,
)
from projections.handlers import Fold, accounts_to_load
from projections.retention import refresh_cohorts
from projections.source import EventSource, Head, Shard
from projections.stored import Recorded
from projections.tables import READ_MODEL_TABLES, projection_positions, retention_cohorts
from projections.views import VIEWS
from projections.writer import PointValues, load_accounts, write_kpis, write_rows, write_sums

log = logging.getLogger(__name__)
T = TypeVar("T")
DEADLOCK, PUBLISH_ATTEMPTS = "40P01", 5
Positions = tuple[int, int]  # replay the events after the first, up to the second
Kpis = dict[tuple[str, date], KpiDelta]
Replayed = tuple[int, Kpis, Sums]  # events applied, KPIs and partner/engagement sums
Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


@dataclass(frozen=True)
class Target:
    """Where a rebuild reads the ledger and writes the read models."""

    database_url: str
    schema: str  # the live read models' (and the ledger's) schema; "" for the default
    events_table: str
    batch_size: int
    account_cache: int
    tier_benefits: TierBenefits = field(default_factory=dict)  # (projections.handlers.Fold)
    ledger_secret: SecretStr | None = None  # the workers open sealed values (ADR 0015)


class ShardReplay:
    """Replays one shard of the ledger into empty read models (see the module docstring)."""

    def __init__(
        self,
        source: EventSource,
        positions: Positions,
        span: int,
        account_cache: int,
        tier_benefits: TierBenefits | None = None,
    ) -> None:
        self.source, self.account_cache = source, account_cache
        self.tier_benefits = tier_benefits or {}
        # Ranges of positions read at a time: ``span`` events of the whole ledger, of which
        # the shard's share is one batch.
        after, upto = positions
        self.ranges = [(start, min(start + span, upto)) for start in range(after, upto, span)]
        # Rows not written yet, least recently used first: a row is written when it leaves.
        self.rows: OrderedDict[UUID, BalanceRow] = OrderedDict()
        self.kpis: Kpis = {}
        self.sums = Sums()
        self.applied = 0

    async def run(self, reading: Transaction, writing: Transaction, ahead: bool) -> None:
        """Replay every event in range. ``ahead``: read the next batch while writing one
        (not on SQLite, whose single connection does one thing at a time)."""
        following: asyncio.Task[list[Recorded]] | None = None
        for number, positions in enumerate(self.ranges):
            batch = await following if following else await self._read(reading, *positions)
            following = None
            if ahead and number + 1 < len(self.ranges):
                following = asyncio.create_task(self._read(reading, *self.ranges[number + 1]))
            try:
                await self._apply(writing, batch)
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            self.applied += len(batch)
        async with writing() as conn:
            await write_rows(conn, BatchChanges(kpis=self.kpis), list(self.rows.values()))
        self.rows.clear()

    async def _read(self, reading: Transaction, after: int, until: int) -> list[Recorded]:
        async with reading() as conn:
            return await self.source.read_range(conn, after, until)

    async def _apply(self, writing: Transaction, batch: list[Recorded]) -> None:
        changes = BatchChanges(kpis=self.kpis, sums=self.sums)
        async with writing() as conn:
            needed = accounts_to_load(batch)
            cached = {key: self.rows[key] for key in needed if key in self.rows}
            changes.accounts = cached | await load_accounts(conn, needed - cached.keys())
            fold = Fold(changes, self.tier_benefits)
            for recorded in batch:
                fold.apply(recorded)
            await write_rows(conn, changes, self._remember(changes.accounts))

    def _remember(self, rows: dict[UUID, BalanceRow]) -> list[BalanceRow]:
        """Keep the batch's rows; returns those that leave the cache (to write now)."""
        for key, row in rows.items():
            self.rows[key] = row
            self.rows.move_to_end(key)
        leaving = []
        while len(self.rows) > self.account_cache:
            leaving.append(self.rows.popitem(last=False)[1])
        return leaving


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild replayed: events, up to which position."""

    applied: int
    position: int


async def rebuild(
    engine: AsyncEngine,
    live: EventSource,
    target: Target,
    workers: int,
    name: str,
    pool: Executor | None = None,
    point_values: PointValues | None = None,
) -> Rebuilt:
    """Rebuild every read model from the ledger, as projection ``name`` (with ``pool``'s
    processes for the shards but the first, else processes of its own); ``point_values``
    value the partners' points."""
    async with engine.connect() as conn:
        head = await live.head(conn)
        first = await live.read(conn, 0, 1)
    # (the ids may not start at 1: a ledger restored into a fresh sequence, say)
    positions = (first[0].position - 1 if first else 0, head.position)
    values = point_values or {}
    if engine.dialect.name == "postgresql":
        applied = await _rebuild_postgres(
            engine, live, target, max(workers, 1), name, head, positions, pool, values
        )
    else:
        applied = await _rebuild_sqlite(engine, live, target, name, head, positions, values)
    return Rebuilt(applied, head.position)


async def _rebuild_sqlite(
    engine: AsyncEngine,
    live: EventSource,
    target: Target,
    name: str,
    head: Head,
    positions: Positions,
    values: PointValues,
) -> int:
    async with engine.begin() as conn:

        @asynccontextmanager
        async def same() -> AsyncIterator[AsyncConnection]:
            yield conn

        # Python's sqlite3 opens transactions only before DML, so the DROPs would commit at
        # once; an explicit BEGIN makes the whole rebuild one transaction, DDL included.
        await conn.exec_driver_sql("BEGIN")
        await drop_read_models(conn)
        await create_read_models(conn, indexes=False)
        replay = ShardReplay(
            live, positions, target.batch_size, target.account_cache, target.tier_benefits
        )
        await replay.run(same, same, ahead=False)
        steps = _finishing_steps(replay.kpis, replay.sums, values)
        for step in steps:  # one connection: one after the other
            await step(conn)
        await _set_position(conn, name, head)
    return replay.applied


async def _rebuild_postgres(
    engine: AsyncEngine,
    live: EventSource,
    target: Target,
    workers: int,
    name: str,
    head: Head,
    positions: Positions,
    pool: Executor | None,
    values: PointValues,
) -> int:
    schema = target.schema or "public"
    building = building_schema(schema)
    drop = text(f"DROP SCHEMA IF EXISTS {quote(building)} CASCADE")
    async with _only_rebuild(engine, building):
        try:
            async with engine.begin() as conn:
                await conn.execute(drop)  # what a killed rebuild left
                await conn.execute(text(f"CREATE SCHEMA {quote(building)}"))
            built = connect(target.database_url, building, then=schema)
            try:
                async with built.begin() as conn:
                    await create_read_models(conn, indexes=False)
                started = time.perf_counter()
                results = await _replay_shards(built, live, target, workers, positions, pool)
                replayed = time.perf_counter()
                kpis, sums = _add(results)
                await _finish_in_parallel(built, _finishing_steps(kpis, sums, values))
                finished = time.perf_counter()
            finally:
                await built.dispose()
            await _publish_retrying(engine, building, schema, name, head)
            log.info(
                "rebuilt up to position %d: replay %.2f s (%d workers), KPIs, cohorts and "
                "indexes %.2f s, publish %.2f s",
                head.position,
                replayed - started,
                workers,
                finished - replayed,
                time.perf_counter() - finished,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                async with engine.begin() as conn:
                    await conn.execute(drop)
            raise
    return sum(applied for applied, _, _ in results)


def building_schema(schema: str) -> str:
    """Where a rebuild of the read models in ``schema`` builds them."""
    return f"{schema}__rebuild"


@asynccontextmanager
async def _only_rebuild(engine: AsyncEngine, building: str) -> AsyncIterator[None]:
    """Hold a session lock while rebuilding: a second rebuild would drop the first's tables."""
    key = {"key": building}
    async with engine.connect() as conn:
        locked = await conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:key))"), key)
        await conn.commit()  # the lock is the session's; no transaction stays open
        if not locked:
            raise RuntimeError(f"another rebuild is building {building}")
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
            await conn.commit()


async def _replay_shards(
    built: AsyncEngine,
    live: EventSource,
    target: Target,
    workers: int,
    positions: Positions,
    pool: Executor | None,
) -> list[Replayed]:
    """Shard 0 here, the others in processes of their own, all at once."""
    if workers == 1:
        return [await _replay(built, live, target, positions, workers)]
    with contextlib.ExitStack() as stack:
        if pool is None:  # a fresh interpreter per worker: safe from any caller
            spawn = multiprocessing.get_context("spawn")
            die = functools.partial(_die_with, os.getpid())
            pool = stack.enter_context(
                ProcessPoolExecutor(workers - 1, mp_context=spawn, initializer=die)
            )
        loop = asyncio.get_running_loop()
        others = [
            loop.run_in_executor(pool, replay_in_process, target, Shard(i, workers), positions)
            for i in range(1, workers)
        ]
        here = _replay(built, live.sharded(Shard(0, workers)), target, positions, workers)
        return await _together(here, *others)


async def _together(*steps: Awaitable[T]) -> list[T]:
    """Run ``steps`` at once; the first failure cancels the others and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_waited(step)) for step in steps]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _waited(step: Awaitable[T]) -> T:
    return await step


@contextlib.contextmanager
def replay_processes(workers: int, database_url: str) -> Iterator[Executor | None]:
    """The worker processes of a PostgreSQL rebuild with ``workers`` shards, forked now.

    Call it before the program starts any thread (a fork copies only the calling thread,
    and locks held by others would stay held in the child): forked workers start at once,
    where spawned ones first import careledger again (~1.5 s of CPU each, measured).
    """
    if workers < 2 or not is_postgres(database_url):
        yield None
        return
    fork = multiprocessing.get_context("fork")
    die = functools.partial(_die_with, os.getpid())
    with ProcessPoolExecutor(workers - 1, mp_context=fork, initializer=die) as pool:
        for started in [pool.submit(int) for _ in range(workers - 1)]:
            started.result()  # every process is up before any thread exists
        yield pool


def _die_with(parent: int) -> None:
    """Make this worker process die with the rebuild that started it (Linux).

    A worker outliving a killed rebuild would go on filling a schema nobody will publish,
    holding its locks until the next rebuild waits them out.
    """
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1  # (linux/prctl.h)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


def replay_in_process(target: Target, shard: Shard, positions: Positions) -> Replayed:
    """A worker process: replay one shard into the rebuild's schema."""
    tune_garbage_collector()
    return asyncio.run(_replay_shard(target, shard, positions))


async def _replay_shard(target: Target, shard: Shard, positions: Positions) -> Replayed:
    schema = target.schema or "public"
    built = connect(target.database_url, building_schema(schema), then=schema)
    ring = KeyRing.of(target.ledger_secret)
    store = open_store(target.database_url, target.schema, keyring=ring) if ring else None
    try:
        mapper = store.mapper if store is not None else ledger_mapper()
        source = EventSource(mapper, target.events_table, "postgresql", shard=shard)
        return await _replay(built, source, target, positions, shard.count)
    finally:
        await built.dispose()
        if store is not None:
            store.close()


async def _replay(
    built: AsyncEngine, source: EventSource, target: Target, positions: Positions, shards: int
) -> Replayed:
    span = target.batch_size * shards  # so that a shard's batches are about batch_size
    replay = ShardReplay(source, positions, span, target.account_cache, target.tier_benefits)
    await replay.run(built.connect, built.begin, ahead=True)
    return replay.applied, replay.kpis, replay.sums


def _add(shards: Iterable[Replayed]) -> tuple[Kpis, Sums]:
    """The KPIs and sums of all shards, added up."""
    total: Kpis = {}
    sums = Sums()
    for _, kpis, shard_sums in shards:
        for key, delta in kpis.items():
            into = total.setdefault(key, KpiDelta())
            for column in KPI_COLUMNS:
                setattr(into, column, getattr(into, column) + getattr(delta, column))
        sums.add(shard_sums)
    return total, sums


def _finishing_steps(
    kpis: Kpis, sums: Sums, values: PointValues
) -> list[Callable[[AsyncConnection], Awaitable[object]]]:
    """What the replay leaves to the end: KPIs, partner and engagement sums, cohorts and
    each secondary index."""
    return [
        functools.partial(write_kpis, kpis=kpis),
        functools.partial(write_sums, sums=sums, point_values=values),
        functools.partial(refresh_cohorts, program_ids=None),
        *(functools.partial(_create_index, index) for index in secondary_indexes()),
    ]


async def _finish_in_parallel(
    built: AsyncEngine, steps: list[Callable[[AsyncConnection], Awaitable[object]]]
) -> None:
    """The finishing steps, each in a transaction of its own (nobody reads these tables
    yet), so that PostgreSQL builds the indexes and cohorts on every core."""

    async def in_own_transaction(step: Callable[[AsyncConnection], Awaitable[object]]) -> None:
        async with built.begin() as conn:
            await step(conn)

    await _together(*(in_own_transaction(step) for step in steps))


async def _create_index(index: Index, conn: AsyncConnection) -> None:
    await conn.run_sync(index.create)


async def _set_position(conn: AsyncConnection, name: str, head: Head) -> None:
    """(The table exists: ``create_read_models`` or ``_publish`` made sure of it.)"""
    await conn.execute(projection_positions.delete().where(projection_positions.c.name == name))
    await conn.execute(
        projection_positions.insert(),
        {"name": name, "position": head.position, "last_event_at": head.recorded_at},
    )


async def _publish_retrying(
    engine: AsyncEngine, building: str, schema: str, name: str, head: Head
) -> None:
    """``_publish``, tried again when PostgreSQL ends it to break a deadlock (with a reader
    that took the same tables in another order): the built tables are worth a retry."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                await _publish(conn, building, schema, name, head)
            return
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != DEADLOCK or attempt == PUBLISH_ATTEMPTS:
                raise
            log.warning("publishing the rebuilt read models deadlocked; trying again")


async def _publish(
    conn: AsyncConnection, building: str, schema: str, name: str, head: Head
) -> None:
    """Swap the built tables in for the live ones, with the live ones' SELECT grants."""
    # The position row first, as a follower's batch takes it: a batch under way finishes
    # first, the next one waits and then finds its position moved (no deadlock).
    await conn.run_sync(lambda sync: projection_positions.create(sync, checkfirst=True))
    positions = projection_positions.c
    await conn.execute(select(positions.position).where(positions.name == name).with_for_update())
    # Then every live table at once, cohorts last: the cohort refresher reads the activity
    # tables before it writes the cohorts, so this order cannot deadlock with it.
    ordered = sorted(READ_MODEL_TABLES, key=lambda table: table is retention_cohorts)
    live = [f"{quote(schema)}.{table.name}" for table in ordered]
    regclass = text("SELECT to_regclass(name)::text FROM unnest(CAST(:names AS text[])) name")
    present = [found for found in await conn.scalars(regclass, {"names": live}) if found]
    if present:
        await conn.execute(text(f"LOCK TABLE {', '.join(present)} IN ACCESS EXCLUSIVE MODE"))
    grants = await select_grants(conn)
    await drop_read_models(conn)
    for table in READ_MODEL_TABLES:
        await conn.execute(
            text(f"ALTER TABLE {quote(building)}.{table.name} SET SCHEMA {quote(schema)}")
        )
    for view in VIEWS:
        await conn.execute(text(f"ALTER VIEW {quote(building)}.{view} SET SCHEMA {quote(schema)}"))
    await _set_position(conn, name, head)
    await grant(conn, grants)
    await conn.execute(text(f"DROP SCHEMA {quote(building)} CASCADE"))
