"""The read models' database: the same database (and PostgreSQL schema) as the event store.

asyncpg serves ``postgresql://`` URLs and aiosqlite ``sqlite:///`` ones. On PostgreSQL the
connection's ``search_path`` is the configured schema, and tables are also schema-qualified
through ``schema_translate_map``, so plain SQL (views, the events table) and SQLAlchemy
tables land in the same place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Index, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from projections.tables import READ_MODEL_TABLES, metadata, projection_positions
from projections.views import VIEWS, create_views, drop_views

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")


@asynccontextmanager
async def asyncpg_connection(conn: AsyncConnection) -> AsyncIterator[Any]:
    """asyncpg's own connection under ``conn``, for what SQLAlchemy makes slow (bulk fetches,
    binary COPY). SQLAlchemy never sees those calls fail, so a connection found dead in one
    is invalidated here: otherwise the pool would hand it to every later caller, long after
    the database is back."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    try:
        yield raw
    except Exception:
        if raw.is_closed():
            await conn.invalidate()
        raise


def is_postgres(database_url: str) -> bool:
    return database_url.partition("://")[0] in _PG_SCHEMES


def async_url(database_url: str) -> str:
    """The SQLAlchemy async URL for a careledger ``postgresql://`` or ``sqlite:///`` URL."""
    scheme, sep, rest = database_url.partition("://")
    if is_postgres(database_url):
        return f"postgresql+asyncpg{sep}{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite{sep}{rest}"
    raise ValueError("database URL must start with postgresql:// or sqlite:///")


def connect(database_url: str, schema: str = "", then: str = "") -> AsyncEngine:
    """An async engine on the ledger's database, pointed at its schema (and, for names not
    found there, at schema ``then``: how a rebuild's schema still sees the events table)."""
    url = make_url(async_url(database_url))
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        if schema:
            path = ", ".join(quote(name) for name in (schema, then) if name)
            connect_args["server_settings"] = {"search_path": path}
            options["schema_translate_map"] = {None: schema}
    else:
        # Waits for the ledger's writers instead of failing with "database is locked".
        connect_args["timeout"] = 30
    engine = create_async_engine(
        url, connect_args=connect_args, execution_options=options, pool_size=4
    )
    return engine


async def create_read_models(conn: AsyncConnection, indexes: bool = True) -> None:
    """Create whatever is missing: tables, views and the secondary indexes. Without
    ``indexes`` the read models are left without secondary indexes: a rebuild loads first
    and indexes once at the end, much faster than maintaining them row by row."""
    await conn.run_sync(metadata.create_all)  # (which creates a new table's indexes too)
    await create_views(conn)
    await conn.run_sync(_create_indexes if indexes else _drop_indexes)


class ReadModelsOutdated(RuntimeError):
    """Raised when stored read models lack columns this version writes (or have others).

    They were built by an earlier version: the read models are derived from the ledger, so
    ``careledger projections rebuild`` replaces them (rows included, e.g. the ``noted``
    entries of interactions recorded before those rows existed).
    """


async def missing_read_models(conn: AsyncConnection) -> list[str]:
    """The read models not in the database (yet)."""

    def absent(sync: Connection) -> list[str]:
        inspector = inspect(sync)
        return [table.name for table in READ_MODEL_TABLES if not inspector.has_table(table.name)]

    return await conn.run_sync(absent)


async def check_read_models(
    conn: AsyncConnection, missing: list[str] | None = None, projection: str = ""
) -> None:
    """Fail with :class:`ReadModelsOutdated` unless every read model has this version's
    columns (a follower would otherwise fail on every batch, or leave old rows unexplained).

    With ``missing`` (tables not there yet) and the ``projection`` that follows them: fail
    when the projection has already applied events, since tables created now would miss
    what came before (e.g. ``partner_liability`` beside read models of an earlier version).
    """
    if missing is not None:
        positions = projection_positions
        has_positions = await conn.run_sync(lambda sync: inspect(sync).has_table(positions.name))
        position = has_positions and await conn.scalar(
            select(positions.c.position).where(positions.c.name == projection)
        )
        if missing and position:
            raise ReadModelsOutdated(
                f"the read models {', '.join(missing)} are missing beside read models built "
                "by an earlier version of careledger: run `careledger projections rebuild` "
                "to rebuild them from the ledger"
            )
        return

    def differing(sync: Connection) -> list[str]:
        inspector = inspect(sync)
        return [
            table.name
            for table in READ_MODEL_TABLES
            if [c["name"] for c in inspector.get_columns(table.name)]
            != [c.name for c in table.columns]
        ]

    outdated = await conn.run_sync(differing)
    if outdated:
        raise ReadModelsOutdated(
            f"the read models {', '.join(outdated)} were built by an earlier version of "
            "careledger: run `careledger projections rebuild` to rebuild them from the ledger"
        )


def secondary_indexes() -> Iterator[Index]:
    for table in READ_MODEL_TABLES:
        yield from table.indexes


def _create_indexes(sync: Connection) -> None:
    for index in secondary_indexes():
        index.create(sync, checkfirst=True)


def _drop_indexes(sync: Connection) -> None:
    for index in secondary_indexes():
        index.drop(sync, checkfirst=True)


async def drop_read_models(conn: AsyncConnection) -> None:
    """Drop every read model, views first (positions are not read models: they stay)."""
    await drop_views(conn)
    await conn.run_sync(
        lambda sync: metadata.drop_all(sync, tables=list(READ_MODEL_TABLES), checkfirst=True)
    )


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


Grants = list[tuple[str, str]]


async def select_grants(conn: AsyncConnection) -> Grants:
    """(grantee, table) for every SELECT granted on a read model, whoever granted it."""
    if conn.dialect.name != "postgresql":
        return []
    names = [table.name for table in READ_MODEL_TABLES] + list(VIEWS)
    rows = await conn.execute(
        text(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
            "ELSE pg_get_userbyid(a.grantee) END, c.relname "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "aclexplode(c.relacl) a WHERE n.nspname = current_schema() "
            "AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner "
            "AND c.relname = ANY(:names)"
        ),
        {"names": names},
    )
    return [(str(grantee), str(name)) for grantee, name in rows]


async def grant(conn: AsyncConnection, grants: Grants) -> None:
    """Grant SELECT again as ``select_grants`` found it (on tables of the same names)."""
    for grantee, name in grants:
        role = "PUBLIC" if grantee == "PUBLIC" else quote(grantee)
        await conn.execute(text(f"GRANT SELECT ON {quote(name)} TO {role}"))
