"""The read models' database: the same database (and PostgreSQL schema) as the event store.

asyncpg serves ``postgresql://`` URLs and aiosqlite ``sqlite:///`` ones. On PostgreSQL the
connection's ``search_path`` is the configured schema, and tables are also schema-qualified
through ``schema_translate_map``, so plain SQL (views, the events table) and SQLAlchemy
tables land in the same place.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from projections.tables import READ_MODELS, metadata, projection_positions
from projections.views import VIEWS, create_views, drop_views

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")


def async_url(database_url: str) -> str:
    """The SQLAlchemy async URL for a careledger ``postgresql://`` or ``sqlite:///`` URL."""
    scheme, sep, rest = database_url.partition("://")
    if scheme in _PG_SCHEMES:
        return f"postgresql+asyncpg{sep}{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite{sep}{rest}"
    raise ValueError("database URL must start with postgresql:// or sqlite:///")


def connect(database_url: str, schema: str = "") -> AsyncEngine:
    """An async engine on the ledger's database, pointed at its schema."""
    url = make_url(async_url(database_url))
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        if schema:
            connect_args["server_settings"] = {"search_path": _quote(schema)}
            options["schema_translate_map"] = {None: schema}
    else:
        # Waits for the ledger's writers instead of failing with "database is locked".
        connect_args["timeout"] = 30
    engine = create_async_engine(
        url, connect_args=connect_args, execution_options=options, pool_size=4
    )
    return engine


async def create_read_models(conn: AsyncConnection, indexes: bool = True) -> None:
    """Create whatever is missing: tables, views and (unless ``indexes`` is false) the
    secondary indexes, which a rebuild leaves until the end."""
    await conn.run_sync(metadata.create_all)
    await create_views(conn)
    if indexes:
        await conn.run_sync(_create_indexes)


def _create_indexes(sync: Connection) -> None:
    for table in READ_MODELS:
        for index in table.indexes:
            index.create(sync, checkfirst=True)


async def drop_read_models(conn: AsyncConnection, projection: str) -> None:
    """Drop every read model and forget ``projection``'s position (the first step of rebuild).

    The tables come back empty and without secondary indexes: loading first and indexing
    once at the end is much faster than maintaining the indexes row by row. On PostgreSQL
    the SELECT grants the tables and views had (e.g. to ``careledger_analyst``) are
    re-applied, so a rebuild never locks analysts out.
    """
    grants = await _select_grants(conn)
    await drop_views(conn)
    await conn.run_sync(
        lambda sync: metadata.drop_all(sync, tables=list(READ_MODELS), checkfirst=True)
    )
    await conn.run_sync(lambda sync: projection_positions.create(sync, checkfirst=True))
    await conn.execute(
        projection_positions.delete().where(projection_positions.c.name == projection)
    )
    await create_read_models(conn, indexes=False)
    await conn.run_sync(_drop_indexes)
    for grantee, name in grants:
        role = "PUBLIC" if grantee == "PUBLIC" else _quote(grantee)
        await conn.execute(text(f"GRANT SELECT ON {_quote(name)} TO {role}"))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _drop_indexes(sync: Connection) -> None:
    for table in READ_MODELS:
        for index in table.indexes:
            index.drop(sync, checkfirst=True)


async def _select_grants(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(grantee, table) for every SELECT granted on a read model, whoever granted it."""
    if conn.dialect.name != "postgresql":
        return []
    names = [table.name for table in READ_MODELS] + list(VIEWS)
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
