"""The ledger's notification log, read in global order into the facts the read models need.

The events table is read with SQLAlchemy (asyncpg is several times faster than the
synchronous recorder at fetching rows); decoding is ``projections.stored``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from careledger.adapters.shredding import SealingMapper
from careledger.adapters.store import LedgerStore
from domain.rejection import RejectedInput
from projections.database import asyncpg_connection
from projections.stored import Recorded, StoredReader

log = logging.getLogger(__name__)
# Dead letters' sealed ids stay sealed for the read models (projections.handlers._rejected).
KEEP_SEALED = frozenset({get_topic(RejectedInput.Recorded)})


@dataclass(frozen=True)
class Head:
    """The latest event in the ledger: where a projection that is up to date stands."""

    position: int
    recorded_at: datetime | None


@dataclass(frozen=True)
class Shard:
    """The accounts whose id's last byte is ``index`` modulo ``count`` (a rebuild's share)."""

    index: int = 0
    count: int = 1


class EventSource:
    """Reads ledger events after a position, oldest first."""

    def __init__(
        self,
        mapper: Mapper[UUID],
        table: str,
        dialect: str,
        channel: str | None = None,
        shard: Shard = Shard(),
    ) -> None:
        self.reader = StoredReader(mapper)
        self.table, self.dialect, self.shard = table, dialect, shard
        # The PostgreSQL recorder NOTIFYs this channel whenever it commits events.
        self.channel = channel
        # SQLite's recorder uses the table's rowid as the notification id.
        column = "rowid" if dialect == "sqlite" else "notification_id"
        select = f"SELECT {column} AS id, originator_id, originator_version, topic, state "
        after = f"{select} FROM {table} WHERE {column} > {{}} ORDER BY {column} LIMIT {{}}"
        self._after = text(after.format(":after", ":limit"))
        self._head = text(f"{select} FROM {table} ORDER BY {column} DESC LIMIT 1")
        # A range of ids, not "after ... LIMIT": with a condition on the shard, or an upper
        # bound, PostgreSQL's planner scans and sorts the whole table for every batch (7x the
        # cost measured); a narrow id range always reads the index in order.
        shard_sql = ""
        if shard.count > 1:
            assert dialect == "postgresql", "only PostgreSQL reads shards"
            shard_sql = (
                f" AND get_byte(uuid_send(originator_id), 15) % {int(shard.count)}"
                f" = {int(shard.index)}"
            )
        between = f"{select} FROM {table} WHERE {column} > {{}} AND {column} <= {{}}{shard_sql}"
        self._between = text(between.format(":after", ":until") + f" ORDER BY {column}")
        # On PostgreSQL the rows are fetched by asyncpg itself: half the time of going
        # through SQLAlchemy's result rows, and a rebuild fetches every event.
        self._raw: tuple[str, str] | None = None
        if dialect == "postgresql":
            self._raw = (
                after.format("$1", "$2"),
                between.format("$1", "$2") + f" ORDER BY {column}",
            )

    @classmethod
    def of(cls, store: LedgerStore, dialect: str) -> EventSource:
        """The whole notification log of ``store``."""
        table = str(getattr(store.recorder, "events_table_name"))  # noqa: B009
        return cls(store.mapper, table, dialect, getattr(store.recorder, "channel_name", None))

    def sharded(self, shard: Shard) -> EventSource:
        """The same log, limited to the accounts of ``shard``."""
        return EventSource(self.reader.mapper, self.table, self.dialect, self.channel, shard)

    async def read(self, conn: AsyncConnection, after: int, limit: int) -> list[Recorded]:
        """Up to ``limit`` events after position ``after``; decoded off the event loop."""
        return await self._fetch(conn, 0, {"after": after, "limit": limit})

    async def read_range(self, conn: AsyncConnection, after: int, until: int) -> list[Recorded]:
        """The events (of this source's shard) after position ``after`` up to ``until``."""
        return await self._fetch(conn, 1, {"after": after, "until": until})

    async def _fetch(
        self, conn: AsyncConnection, query: int, params: dict[str, int]
    ) -> list[Recorded]:
        rows: Sequence[Sequence[Any]]
        if self._raw is not None:
            async with asyncpg_connection(conn) as raw:
                rows = await raw.fetch(self._raw[query], *params.values())
        else:
            rows = (await conn.execute((self._after, self._between)[query], params)).all()
        return await asyncio.to_thread(self.decode, rows) if rows else []

    async def head(self, conn: AsyncConnection) -> Head:
        """The ledger's latest position and when it was recorded (0, None when empty)."""
        row = (await conn.execute(self._head)).first()
        if row is None:
            return Head(0, None)
        latest = self.decode([row])[0]
        return Head(latest.position, latest.facts.timestamp.value)

    def decode(self, rows: Sequence[Sequence[Any]]) -> list[Recorded]:
        """Rows of (id, originator_id, originator_version, topic, state) as recorded events."""
        read = self.reader.read
        mapper = self.reader.mapper
        if isinstance(mapper, SealingMapper):  # ADR 0015: open the states first
            topics = [row[3] for row in rows]
            states = mapper.opened([bytes(row[4]) for row in rows], KEEP_SEALED, topics)
            return [
                read(row[0], _uuid(row[1]), row[2], row[3], state)
                for row, state in zip(rows, states, strict=True)
            ]
        return [read(row[0], _uuid(row[1]), row[2], row[3], row[4]) for row in rows]


class CommitWatch:
    """Wakes a follower when the ledger commits: PostgreSQL LISTEN on the recorder's channel.

    The listening connection dies with the database, which wakes the follower; :meth:`listen`
    replaces it once the database answers again (the follower calls it after each successful
    step), else the follower would only poll from then on. Never set on SQLite, where the
    follower just polls.
    """

    def __init__(self, engine: AsyncEngine, channel: str | None) -> None:
        self.committed = asyncio.Event()
        self._engine = engine
        self._channel = channel if engine.dialect.name == "postgresql" else None
        self._conn: AsyncConnection | None = None
        self._raw: Any = None

    async def listen(self) -> None:
        """Subscribe unless already listening; a failure is left to the next call."""
        if self._channel is None or (self._raw is not None and not self._raw.is_closed()):
            return
        await self.close()
        conn = self._engine.connect()
        try:
            await conn.start()
            async with asyncpg_connection(conn) as raw:
                await raw.add_listener(self._channel, self._wake)
                # Losing it wakes the follower too: its next step finds the database away.
                raw.add_termination_listener(self._wake)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            log.warning("cannot listen for ledger commits (%s); polling", type(exc).__name__)
            return
        self._conn, self._raw = conn, raw
        self.committed.set()  # commits made while nobody listened are not announced again

    async def close(self) -> None:
        conn, raw, self._conn, self._raw = self._conn, self._raw, None, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            raw.remove_termination_listener(self._wake)
            if not raw.is_closed():
                await raw.remove_listener(self._channel, self._wake)
            await conn.close()

    def _wake(self, *_: object) -> None:
        self.committed.set()


def _uuid(value: Any) -> UUID:
    # asyncpg returns its own UUID subclass; SQLite stores the hex string.
    return value if isinstance(value, UUID) else UUID(str(value))


async def first_set(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
