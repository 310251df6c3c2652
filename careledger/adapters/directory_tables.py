"""The two tables beside the events that crypto-shredding needs (ADR 0015), on both stores.

* ``account_keys``: each account's data key, wrapped with the application secret.
* ``account_directory``: each account's lookup hash (an HMAC of program and subject) -> its
  random id. Nobody without the secret can find a subject's account from the subject.

Rows are written and deleted inside the ledger's batch transaction (the recorders call
:func:`write_postgres` / :func:`write_sqlite` from ``_insert_events``), so an account's key
and lookup row exist exactly when its first events do, and an erasure destroys both with its
own events and positions, or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composed, Identifier

KEYS_TABLE = "account_keys"
DIRECTORY_TABLE = "account_directory"


@dataclass(frozen=True)
class NewAccount:
    """A new account's directory row and wrapped key, written with its first events."""

    account_id: UUID
    lookup: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class DirectoryWrites:
    """What one transaction adds to and removes from the two tables."""

    opened: Sequence[NewAccount] = ()
    erased: Sequence[UUID] = ()

    def __bool__(self) -> bool:
        return bool(self.opened or self.erased)


def postgres_create(schema: str) -> list[Composed]:
    names = {"schema": Identifier(schema)}
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.account_keys ("
            "account_id uuid PRIMARY KEY, wrapped bytea NOT NULL)"
        ).format(**names),
        SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.account_directory ("
            "lookup bytea PRIMARY KEY, account_id uuid NOT NULL UNIQUE)"
        ).format(**names),
    ]


SQLITE_CREATE = [
    f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (account_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {DIRECTORY_TABLE} ("
    "lookup BLOB PRIMARY KEY, account_id TEXT NOT NULL UNIQUE)",
]


def write_postgres(curs: Any, schema: str, writes: DirectoryWrites) -> None:
    """Erased rows first: a subject erased and seen again in one batch gets a new row."""
    names = {"schema": Identifier(schema)}
    if writes.erased:
        erased = sorted(writes.erased)
        for table in (KEYS_TABLE, DIRECTORY_TABLE):
            curs.execute(
                SQL("DELETE FROM {schema}.{table} WHERE account_id = ANY(%s)").format(
                    table=Identifier(table), **names
                ),
                [erased],
            )
    opened = sorted(writes.opened, key=lambda a: a.lookup)  # one lock order across writers
    if opened:
        curs.execute(
            SQL(
                "INSERT INTO {schema}.account_keys (account_id, wrapped) "
                "SELECT * FROM unnest(%b::uuid[], %b::bytea[])"
            ).format(**names),
            [[a.account_id for a in opened], [a.wrapped_key for a in opened]],
        )
        curs.execute(
            SQL(
                "INSERT INTO {schema}.account_directory (lookup, account_id) "
                "SELECT * FROM unnest(%b::bytea[], %b::uuid[])"
            ).format(**names),
            [[a.lookup for a in opened], [a.account_id for a in opened]],
        )


def write_sqlite(curs: Any, writes: DirectoryWrites) -> None:
    if writes.erased:  # a deleted key must not linger in a free page of the file
        curs.execute("PRAGMA secure_delete = ON")
    for table in (KEYS_TABLE, DIRECTORY_TABLE):
        curs.executemany(
            f"DELETE FROM {table} WHERE account_id = ?", [(i.hex,) for i in writes.erased]
        )
    if writes.opened:
        curs.executemany(
            f"INSERT INTO {KEYS_TABLE} (account_id, wrapped) VALUES (?, ?)",
            [(a.account_id.hex, a.wrapped_key) for a in writes.opened],
        )
        curs.executemany(
            f"INSERT INTO {DIRECTORY_TABLE} (lookup, account_id) VALUES (?, ?)",
            [(a.lookup, a.account_id.hex) for a in writes.opened],
        )


def select_postgres(
    conn: Any, schema: str, table: str, column: str, values: list[Any]
) -> list[Any]:
    """Rows of ``table`` whose ``column`` is one of ``values`` (one query)."""
    with conn.cursor() as curs:
        curs.execute(
            SQL("SELECT * FROM {schema}.{table} WHERE {column} = ANY(%s)").format(
                schema=Identifier(schema), table=Identifier(table), column=Identifier(column)
            ),
            [values],
        )
        return list(curs.fetchall())


def select_sqlite(curs: Any, table: str, column: str, values: list[Any]) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        curs.execute(
            f"SELECT * FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk
        )
        rows.extend(curs.fetchall())
    return rows
