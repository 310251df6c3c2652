"""Shared fixtures: real PostgreSQL (a fresh schema per test) and SQLite, side by side."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.kafka_support import kafka_broker  # noqa: F401  (a session-wide broker fixture)

PG_URL = os.environ.get("CARELEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Database:
    """Where a test's ledger lives: a URL plus, on PostgreSQL, a schema of its own."""

    kind: str
    url: str
    schema: str = ""

    def env(self) -> dict[str, str]:
        """The CARELEDGER_* variables that point a careledger process here."""
        env = {"CARELEDGER_DATABASE_URL": self.url}
        if self.schema:
            env["CARELEDGER_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture
def pg_database() -> Iterator[Database]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database("postgres", PG_URL, schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return Database("sqlite", f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    """Every store and CLI test runs on both backends (contract tests)."""
    name = "sqlite_database" if request.param == "sqlite" else "pg_database"
    db: Database = request.getfixturevalue(name)
    return db
