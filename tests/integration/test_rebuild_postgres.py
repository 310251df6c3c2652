"""Rebuilds on PostgreSQL: the swap waits for a follower's batch rather than deadlock with
it; a reader that does deadlock with the swap costs a retry, never the rebuilt tables; a
ledger whose ids start far from 1 is read from its first id."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import psycopg
import pytest

from projections.runner import ProjectionOptions
from projections.service import catch_up, rebuild
from tests.conftest import PG_URL, Database
from tests.integration.test_projections_support import (
    activity,
    apply,
    clinic_discounts,
    coalition,
    dump,
    explained,
    ledger_for,
    membership_plus,
    scenario,
    settings_for,
)
from tests.integration.test_worker_support import wait_for

pytestmark = pytest.mark.integration


def waiting_for_lock(schema: str, table: str) -> bool:
    """Whether some session waits for a lock on ``schema.table``."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT l.granted AND n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
    return bool(row and row[0])


def reader_taking_tables_in_the_other_order(schema: str, outcome: list[str]) -> None:
    """Reads the last table the swap locks, waits until the swap waits for it, then reads
    the first one: a lock cycle PostgreSQL breaks by ending one of the two transactions."""
    with psycopg.connect(PG_URL) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("SELECT count(*) FROM retention_cohorts")
        wait_for(lambda: waiting_for_lock(schema, "retention_cohorts"), 30, "the swap to wait")
        try:
            conn.execute("SELECT count(*) FROM balances")
            outcome.append("reader finished")
        except psycopg.errors.DeadlockDetected:
            outcome.append("reader was the victim")
        conn.rollback()


async def rebuild_beside(
    session: Callable[[str, list[str]], None], db: Database, options: ProjectionOptions
) -> list[str]:
    """Rebuild while ``session`` runs in a thread against the live tables; the read models
    come out as they were. Returns what the session reported."""
    settings = settings_for(db)
    apply(
        ledger_for(db),
        [
            *scenario(),
            *explained(),
            *coalition(),
            *activity(),
            *membership_plus(),
            *clinic_discounts(),
        ],
    )
    await catch_up(settings)
    expected = await dump(settings)
    outcome: list[str] = []
    thread = threading.Thread(target=session, args=(db.schema, outcome))
    thread.start()
    try:
        await rebuild(settings, options)
    finally:
        await asyncio.to_thread(thread.join, 60)
    assert await dump(settings) == expected
    return outcome


async def test_a_swap_that_deadlocks_with_a_reader_is_retried(pg_database: Database) -> None:
    # a deadlock on the swap's side is retried
    outcome = await rebuild_beside(
        reader_taking_tables_in_the_other_order, pg_database, ProjectionOptions()
    )
    assert len(outcome) == 1  # one of the two was ended either way


def a_follower_batch_across_the_swap(schema: str, outcome: list[str]) -> None:
    """A follower's batch as the projector runs it: the position row first, then the tables;
    its tables are touched only once the swap waits for that row."""
    with psycopg.connect(PG_URL) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(
            "SELECT position FROM projection_positions WHERE name = 'read_models' FOR UPDATE"
        )
        wait_for(someone_waits_for_a_lock, 30, "the swap to wait for the batch")
        try:
            conn.execute("SELECT count(*) FROM balances")
            conn.commit()
            outcome.append("batch committed")
        except psycopg.errors.DeadlockDetected:
            outcome.append("batch was the victim")


def someone_waits_for_a_lock() -> bool:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


async def test_the_swap_waits_for_a_follower_batch_instead_of_deadlocking(
    pg_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await rebuild_beside(
        a_follower_batch_across_the_swap, pg_database, ProjectionOptions(rebuild_workers=1)
    )
    assert outcome == ["batch committed"]
    assert "deadlocked" not in caplog.text  # the swap never needed its retry


async def test_a_ledger_whose_ids_start_high_is_rebuilt_from_its_first_id(
    pg_database: Database,
) -> None:
    settings = settings_for(pg_database)
    ledger = ledger_for(pg_database)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        table = f'"{pg_database.schema}".careledger_events'
        conn.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), 1000000000000)",
            (table,),
        )
    apply(
        ledger,
        [
            *scenario(),
            *explained(),
            *coalition(),
            *activity(),
            *membership_plus(),
            *clinic_discounts(),
        ],
    )
    assert ledger.store.recorder.max_notification_id() > 1_000_000_000_000
    await catch_up(settings)
    expected = await dump(settings)
    rebuilt = await rebuild(settings, ProjectionOptions(batch_size=4, rebuild_workers=2))
    assert rebuilt.position == ledger.store.recorder.max_notification_id()
    assert await dump(settings) == expected
