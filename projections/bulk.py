"""Bulk inserts and upserts, fast on PostgreSQL and plain on SQLite.

On PostgreSQL a whole batch goes in as one statement over ``unnest`` of one array per column:
one round trip and nothing for SQLAlchemy to compile per row, which is what makes a rebuild
fast. On SQLite (a single local file) an ``executemany`` is fast enough. Both render the same
``ON CONFLICT`` rule from one :class:`Upsert` description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Table, or_, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

Merge = Literal["replace", "add", "or"]
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Upsert:
    """How a batch of rows meets the rows already there.

    No ``keys``: a plain insert. ``keys`` and no ``merge``: skip rows already present.
    ``merge`` says how each other column combines: take the new value, add, or OR.
    """

    table: Table
    keys: tuple[str, ...] = ()
    merge: Mapping[str, Merge] = field(default_factory=dict)
    returning: tuple[str, ...] = ()

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
        return f" ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {assignments}"


async def write(
    conn: AsyncConnection, spec: Upsert, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Insert or merge ``rows``; returns the ``returning`` columns of rows actually written."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return await _postgres(conn, spec, rows)
    return await _sqlite(conn, spec, rows)


async def _postgres(
    conn: AsyncConnection, spec: Upsert, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    columns = [c.name for c in spec.table.columns]
    arrays = ", ".join(
        f"CAST(:c{i} AS {column.type.compile(dialect=_PG)}[])"
        for i, column in enumerate(spec.table.columns)
    )
    sql = (
        f"INSERT INTO {spec.table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        + spec.conflict_sql()
    )
    if spec.returning:
        sql += f" RETURNING {', '.join(spec.returning)}"
    params = {f"c{i}": [row[name] for row in rows] for i, name in enumerate(columns)}
    result = await conn.execute(text(sql), params)
    return [tuple(row) for row in result] if spec.returning else []


async def _sqlite(
    conn: AsyncConnection, spec: Upsert, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    table = spec.table
    statement = sqlite_insert(table)
    if spec.keys and spec.merge:
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=list(spec.keys),
            set_={c: _merged(table, excluded, c, how) for c, how in spec.merge.items()},
        )
    elif spec.keys:
        statement = statement.on_conflict_do_nothing(index_elements=list(spec.keys))
    if not spec.returning:
        await conn.execute(statement, list(rows))
        return []
    returning = statement.returning(*(table.c[c] for c in spec.returning))
    written: list[tuple[Any, ...]] = []
    for row in rows:  # the sqlite3 driver's executemany returns no rows
        written.extend(tuple(r) for r in await conn.execute(returning, dict(row)))
    return written


def _merged(table: Table, excluded: Any, column: str, how: Merge) -> Any:
    if how == "add":
        return table.c[column] + excluded[column]
    if how == "or":
        return or_(table.c[column], excluded[column])
    return excluded[column]
