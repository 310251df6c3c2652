"""Every read model and view, row for row, in a total order: what "a rebuild gives the same
read models" is checked against (the projection tests, and the chaos soak's verdict)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from careledger.settings import Settings
from projections.database import connect
from projections.tables import READ_MODEL_TABLES
from projections.views import VIEWS, select_view


async def dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every read model and view, row for row, in a total order (typed on both stores)."""
    engine = connect(settings.database_url, settings.database_schema)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    try:
        async with engine.connect() as conn:
            for table in READ_MODEL_TABLES:
                rows = await conn.execute(select(table).order_by(*table.columns))
                tables[table.name] = [tuple(row) for row in rows]
            for name in VIEWS:
                rows = await conn.execute(select_view(name))
                tables[name] = [tuple(row) for row in rows]
    finally:
        await engine.dispose()
    return tables
