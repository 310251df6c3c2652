"""Bulk inserts and upserts, fast on PostgreSQL and plain on SQLite.

On PostgreSQL a batch goes in by binary ``COPY`` (through a temporary staging table when rows
may already exist): no SQL is compiled per row and asyncpg encodes the rows in C, which is
what makes a rebuild fast. On SQLite (a single local file) an ``executemany`` is fast enough. Both
render the same ``ON CONFLICT`` rule from one :class:`Upsert` description.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Table, or_, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.database import asyncpg_connection

Merge = Literal["replace", "add", "or"]


@dataclass(frozen=True)
class Upsert:
    """How a batch of rows meets the rows already there.

    No ``keys``: a plain insert. ``keys`` and no ``merge``: skip rows already present.
    ``merge`` says how each other column combines: take the new value, add, or OR.
    ``count_new_by``: report how many rows were new, grouped by these columns (counted in
    the database, so a batch's new rows never travel back).
    """

    table: Table
    keys: tuple[str, ...] = ()
    merge: Mapping[str, Merge] = field(default_factory=dict)
    count_new_by: tuple[str, ...] = ()

    def conflict_sql(self) -> str:
        if not self.keys:
            return ""
        if not self.merge:
            return f" ON CONFLICT ({', '.join(self.keys)}) DO NOTHING"
        name = self.table.name
        sets = {
            "replace": "{c} = EXCLUDED.{c}",
            "add": f"{{c}} = {name}.{{c}} + EXCLUDED.{{c}}",
            "or": f"{{c}} = {name}.{{c}} OR EXCLUDED.{{c}}",
        }
        assignments = ", ".join(sets[how].format(c=c) for c, how in self.merge.items())
        sql = f" ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {assignments}"
        if set(self.merge.values()) == {"or"}:  # only when a flag turns on: no dead rows
            flips = [f"(EXCLUDED.{c} AND NOT {name}.{c})" for c in self.merge]
            sql += f" WHERE {' OR '.join(flips)}"
        return sql


Record = tuple[Any, ...]


async def write(conn: AsyncConnection, spec: Upsert, records: Sequence[Record]) -> list[Record]:
    """Insert or merge ``records`` (values in the table's column order); returns, with
    ``count_new_by``, the ``(*group, new_rows)`` of the rows actually inserted."""
    if not records:
        return []
    if conn.dialect.name == "postgresql":
        return await _postgres(conn, spec, records)
    return await _sqlite(conn, spec, records)


async def _postgres(conn: AsyncConnection, spec: Upsert, records: Sequence[Record]) -> list[Record]:
    """Binary ``COPY`` of the rows; upserts copy into a session-local staging table first."""
    assert conn.in_transaction(), "bulk writes need an open transaction"
    async with asyncpg_connection(conn) as raw:
        if not raw.is_in_transaction():  # SQLAlchemy starts it lazily, with the first statement
            await conn.execute(text("SELECT 1"))
        table = spec.table.name
        columns = [c.name for c in spec.table.columns]
        if not spec.keys:
            await raw.copy_records_to_table(table, records=records, columns=columns)
            return []
        staging = f"staging_{table}"
        await raw.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        await raw.copy_records_to_table(staging, records=records, columns=columns)
        names = ", ".join(columns)
        sql = f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging}" + spec.conflict_sql()
        if spec.count_new_by:
            group = ", ".join(spec.count_new_by)
            counted = f"WITH new AS ({sql} RETURNING {group}) SELECT {group}, count(*) FROM new"
            return [tuple(r) for r in await raw.fetch(f"{counted} GROUP BY {group}")]
        await raw.execute(sql)
        return []


async def _sqlite(conn: AsyncConnection, spec: Upsert, records: Sequence[Record]) -> list[Record]:
    table = spec.table
    columns = [c.name for c in table.columns]
    rows = [dict(zip(columns, record, strict=True)) for record in records]
    statement = sqlite_insert(table)
    if spec.keys and spec.merge:
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=list(spec.keys),
            set_={c: _merged(table, excluded, c, how) for c, how in spec.merge.items()},
        )  # (the PostgreSQL-only WHERE of an "or" merge only saves dead rows)
    elif spec.keys:
        statement = statement.on_conflict_do_nothing(index_elements=list(spec.keys))
    if not spec.count_new_by:
        await conn.execute(statement, rows)
        return []
    returning = statement.returning(*(table.c[c] for c in spec.count_new_by))
    new: Counter[Record] = Counter()
    for row in rows:  # the sqlite3 driver's executemany returns no rows
        new.update(tuple(r) for r in await conn.execute(returning, row))
    return [(*group, count) for group, count in new.items()]


def _merged(table: Table, excluded: Any, column: str, how: Merge) -> Any:
    if how == "add":
        return table.c[column] + excluded[column]
    if how == "or":
        return or_(table.c[column], excluded[column])
    return excluded[column]
