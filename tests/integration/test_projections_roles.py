"""docs/sql/analyst_role.sql on PostgreSQL: analysts read the read models and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from projections.service import catch_up, rebuild
from projections.tables import READ_MODEL_TABLES
from projections.views import VIEWS
from tests.conftest import PG_URL, Database
from tests.integration.test_projections_support import (
    PLUS,
    PLUS_MAINTENANCE,
    apply,
    explained,
    ledger_for,
    membership_plus,
    scenario,
    settings_for,
)

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
    apply(ledger_for(pg_database), [*scenario(), *explained()])
    await catch_up(settings_for(pg_database))
    grant(schema, analyst)
    grant(schema, analyst)  # the script can be run again

    assert as_role(schema, analyst, "SELECT count(*) FROM balances") == [(4,)]
    assert as_role(schema, analyst, "SELECT count(*) FROM program_retention_12m") == [(1,)]
    # every one, every column
    for name in [table.name for table in READ_MODEL_TABLES] + list(VIEWS):
        as_role(schema, analyst, f"SELECT * FROM {name} LIMIT 1")
    assert as_role(schema, analyst, WHY_NOTHING_LAST_MONTH) == [
        ("already_awarded_this_year", "checkup.annual_wellness", 1, 1),
        ("insufficient_points", "", 1, 1),
        ("no_steps_top_up", "activity.steps", 1, 1),
        ("review_cooldown", "review", 1, 1),
    ]
    assert as_role(schema, analyst, ADJUSTMENTS) == [
        ("duplicate_account", "staff-7", 1, -2000),
        ("goodwill", "staff-7", 1, 250),
    ]
    for forbidden in (
        "SELECT count(*) FROM careledger_events",
        "SELECT count(*) FROM notification_tracking",
        "SELECT count(*) FROM projection_positions",
        # crypto-shredding's key and lookup tables (ADR 0015): never the analysts'
        "SELECT count(*) FROM account_keys",
        "SELECT count(*) FROM account_directory",
        "SELECT count(*) FROM interaction_keys",
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
    assert as_role(schema, analyst, "SELECT count(*) FROM ledger_entries") == [(31,)]
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(schema, analyst, "SELECT count(*) FROM careledger_events")


# docs/analysts.md's examples, in May 2026 (the month of the scenario's explained() events)
NOW = "timestamptz '2026-06-15 12:00Z'"
WHY_NOTHING_LAST_MONTH = f"""
SELECT reason, rule_id, count(*) AS interactions, count(DISTINCT patient_id) AS patients
FROM ledger_entries
WHERE program_id = 'clinic-default' AND kind = 'noted'
  AND occurred_at >= date_trunc('month', {NOW}) - interval '1 month'
  AND occurred_at <  date_trunc('month', {NOW})
GROUP BY reason, rule_id ORDER BY interactions DESC, reason
"""
ADJUSTMENTS = f"""
SELECT reason, operator, count(*) AS adjustments, sum(points) AS points
FROM ledger_entries
WHERE program_id = 'clinic-default' AND kind = 'adjusted'
  AND occurred_at >= date_trunc('month', {NOW}) - interval '1 month'
  AND occurred_at <  date_trunc('month', {NOW})
GROUP BY reason, operator ORDER BY reason, operator
"""


def docs_query(heading: str, comment: str) -> str:
    """The SQL after ``-- comment`` in docs/analysts.md's section ``heading``."""
    text = (SCRIPT.parents[1] / "analysts.md").read_text()
    section = text[text.index(heading) :]
    start = section.index(f"-- {comment}\n") + len(comment) + 4
    return section[start : section.index(";", start)]


async def test_analysts_read_the_rewards_side_with_the_documented_queries(
    pg_database: Database, analyst: str
) -> None:
    schema = pg_database.schema
    ledger = ledger_for(pg_database)
    apply(ledger, membership_plus())
    ledger.maintain(PLUS, PLUS_MAINTENANCE)
    await catch_up(settings_for(pg_database))
    grant(schema, analyst)
    heading = "## `wallets`"
    holders = docs_query(heading, "Who holds event_invitations today (a CRM's invitation list)")
    assert as_role(schema, analyst, holders) == []  # nobody is premier
    booking = holders.replace("event_invitations", "priority_booking")
    assert [row[:2] for row in as_role(schema, analyst, booking)] == [("pia", "tier")]
    revenue = as_role(
        schema, analyst, docs_query(heading, "Membership revenue and members per month")
    )
    assert [(str(row[0]), row[5]) for row in revenue[:3]] == [
        ("2026-01-01", Decimal("525.00")),
        ("2026-02-01", Decimal("45.00")),
        ("2026-03-01", Decimal("0.00")),
    ]
    per_reward = docs_query(heading, "Vouchers issued vs used per reward")
    assert as_role(schema, analyst, per_reward) == [("parking-pass", 3, 1, 1, 1)]
    wallets = docs_query(heading, "Prepaid money held for patients, and cashback outstanding")
    assert as_role(schema, analyst, wallets) == []
