"""The ledger's notification log, read in global order and decoded by the store's own mapper.

The events table is read with SQLAlchemy (asyncpg is several times faster than the
synchronous recorder at fetching rows); decoding goes through ``store.mapper`` so upcasters
and new event fields are honoured exactly as the ledger itself sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from careledger.store import LedgerStore


@dataclass(frozen=True)
class Recorded:
    """A decoded ledger event and its position (notification id) in the global order."""

    position: int
    event: Any


@dataclass(frozen=True)
class Head:
    """The latest event in the ledger: where a projection that is up to date stands."""

    position: int
    recorded_at: datetime | None


class EventSource:
    """Reads ledger events after a position, oldest first."""

    def __init__(self, store: LedgerStore, dialect: str) -> None:
        self.mapper: Mapper[UUID] = store.mapper
        table = str(getattr(store.recorder, "events_table_name"))  # noqa: B009
        # SQLite's recorder uses the table's rowid as the notification id.
        column = "rowid" if dialect == "sqlite" else "notification_id"
        select = f"SELECT {column} AS id, originator_id, originator_version, topic, state "
        self._after = text(
            f"{select} FROM {table} WHERE {column} > :after ORDER BY {column} LIMIT :limit"
        )
        self._head = text(f"{select} FROM {table} ORDER BY {column} DESC LIMIT 1")
        # The PostgreSQL recorder NOTIFYs this channel whenever it commits events.
        self.channel: str | None = getattr(store.recorder, "channel_name", None)

    async def read(self, conn: AsyncConnection, after: int, limit: int) -> list[Recorded]:
        """Up to ``limit`` events after position ``after``; decoded off the event loop."""
        rows = (await conn.execute(self._after, {"after": after, "limit": limit})).all()
        if not rows:
            return []
        return await asyncio.to_thread(self.decode, rows)

    async def head(self, conn: AsyncConnection) -> Head:
        """The ledger's latest position and when it was recorded (0, None when empty)."""
        row = (await conn.execute(self._head)).first()
        if row is None:
            return Head(0, None)
        latest = self.decode([row])[0]
        return Head(latest.position, latest.event.timestamp)

    def decode(self, rows: Sequence[Row[Any]]) -> list[Recorded]:
        to_domain_event = self.mapper.to_domain_event
        return [
            Recorded(
                row.id,
                to_domain_event(
                    Notification(
                        id=row.id,
                        originator_id=_uuid(row.originator_id),
                        originator_version=row.originator_version,
                        topic=row.topic,
                        state=bytes(row.state),
                    )
                ),
            )
            for row in rows
        ]


@asynccontextmanager
async def commits(engine: AsyncEngine, channel: str | None) -> AsyncIterator[asyncio.Event]:
    """An event set whenever the ledger commits (PostgreSQL LISTEN); never set on SQLite,
    where the follower just polls."""
    committed = asyncio.Event()
    if channel is None or engine.dialect.name != "postgresql":
        yield committed
        return

    def wake(*_: object) -> None:
        committed.set()

    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.add_listener(channel, wake)
        try:
            yield committed
        finally:
            await raw.remove_listener(channel, wake)


def _uuid(value: Any) -> UUID:
    # asyncpg returns its own UUID subclass; SQLite stores the hex string.
    return value if isinstance(value, UUID) else UUID(str(value))


async def first_set(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
