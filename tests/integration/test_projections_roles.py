"""docs/sql/analyst_role.sql on PostgreSQL: analysts read the read models and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from projections.service import catch_up, rebuild
from tests.conftest import PG_URL, Database
from tests.integration.test_projections_support import apply, ledger_for, scenario, settings_for

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).parents[2] / "docs" / "sql" / "analyst_role.sql"


@pytest.fixture
def analyst(pg_database: Database) -> Iterator[str]:
    """The documented role under a name of its own (the database is shared), dropped after."""
    role = f"careledger_analyst_{uuid.uuid4().hex[:10]}"
    try:
        yield role
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def grant(schema: str, role: str) -> None:
    sql = SCRIPT.read_text().replace(':"schema"', f'"{schema}"')
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.replace("careledger_analyst", role).encode())


def as_role(schema: str, role: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'SET ROLE "{role}"')
        conn.execute(f'SET search_path TO "{schema}"')
        return list(conn.execute(statement.encode()))


async def test_the_analyst_role_reads_read_models_only(pg_database: Database, analyst: str) -> None:
    schema = pg_database.schema
    apply(ledger_for(pg_database), scenario())
    await catch_up(settings_for(pg_database))
    grant(schema, analyst)
    grant(schema, analyst)  # the script can be run again

    assert as_role(schema, analyst, "SELECT count(*) FROM balances") == [(3,)]
    assert as_role(schema, analyst, "SELECT count(*) FROM program_retention_12m") == [(1,)]
    for forbidden in (
        "SELECT count(*) FROM careledger_events",
        "SELECT count(*) FROM notification_tracking",
        "SELECT count(*) FROM projection_positions",
        "INSERT INTO dead_letters (origin, code, reason, received_at) "
        "VALUES ('x', 'c', 'r', now())",
        "UPDATE balances SET available = 0",
        "DELETE FROM ledger_entries",
        "TRUNCATE tier_history",
        "CREATE TABLE analyst_scratch (x int)",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            as_role(schema, analyst, forbidden)

    # A rebuild drops and re-creates the tables; the analysts keep their access.
    await rebuild(settings_for(pg_database))
    assert as_role(schema, analyst, "SELECT count(*) FROM ledger_entries") == [(20,)]
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(schema, analyst, "SELECT count(*) FROM careledger_events")
