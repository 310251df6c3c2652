"""The event store: the ``eventsourcing`` library on PostgreSQL or SQLite.

Two things are added to the library's recorders:

* **Several positions per transaction.** A batch read from Kafka spans partitions; every
  partition's position is recorded as a single-row tracking record *in the same transaction*
  as the ledger events (``trackings=[...]`` passed through ``Application.save``). The library's
  single-row tracking only ever moves a position forward, so a stale writer (a worker that lost
  its partitions in a rebalance) fails with ``IntegrityError`` and commits nothing.
* **Interaction keys unique across the ledger.** Every accepted interaction's CloudEvents key
  (a hash of ``source`` and ``id``, never the ids themselves) is a row of ``interaction_keys``
  with the account it went to and a hash of its content, inserted in the same transaction
  (``interaction_keys=[...]``); its primary key makes a second claim of the key fail with
  ``IntegrityError``, however many workers race (see ADR 0010).
* **A settings-only environment.** The library normally merges ``os.environ`` into its
  configuration; settings are read once at the entry point instead, so that is switched off.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import (
    DatabaseError,
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Tracking,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.utils import Environment, EnvType
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from careledger.adapters import directory_tables as directory
from careledger.adapters.directory_tables import DirectoryWrites
from careledger.adapters.shredding import DataKeys, KeyRing, SealingMapper
from domain.values import Allocation, Award, Credit, LedgerEntry

APPLICATION_NAME = "careledger"
INTERACTION_KEYS_TABLE = "interaction_keys"
NO_DIRECTORY_WRITES = DirectoryWrites()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InteractionKey:
    """One accepted interaction's claim on its (``source``, ``id``): 16-byte hashes only."""

    key: bytes
    account_id: UUID
    digest: bytes


KeyOwners = dict[bytes, tuple[UUID, bytes]]  # key -> (account id, content digest)


def _by_key(claim: InteractionKey) -> bytes:
    return claim.key


class PostgresLedgerRecorder(PostgresProcessRecorder):
    """Records events with any number of tracking positions and interaction keys in one
    transaction."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        names = {
            "schema": Identifier(datastore.schema),
            "table": Identifier(INTERACTION_KEYS_TABLE),
        }
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "key bytea PRIMARY KEY, account_id uuid NOT NULL, digest bytea NOT NULL)"
            ).format(**names)
        )
        self._insert_keys_statement = SQL(
            "INSERT INTO {schema}.{table} (key, account_id, digest) "
            "SELECT * FROM unnest(%b::bytea[], %b::uuid[], %b::bytea[])"
        ).format(**names)
        self.sql_create_statements.extend(directory.postgres_create(datastore.schema))
        self._select_keys_statement = SQL(
            "SELECT key, account_id, digest FROM {schema}.{table} WHERE key = ANY(%b::bytea[])"
        ).format(**names)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        # Four plain arrays dumped in binary instead of the library's array of a composite
        # type, which psycopg escapes row by row in Python: the same rows, several times faster.
        self._lock_table(curs)
        self._notify_channel(curs)
        statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        curs.execute(
            statement,
            [
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ],
        )

    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of several aggregates in one query, ordered by aggregate and version.

        A batch touching thousands of accounts the cache does not hold would otherwise pay one
        round trip per account.
        """
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(originator_ids)])
            return [
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    def select_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Each aggregate's stored version (absent ones left out), in one query."""
        statement = SQL(
            "SELECT originator_id, max(originator_version) AS version FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) GROUP BY originator_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(originator_ids)])
            return {row["originator_id"]: row["version"] for row in curs.fetchall()}

    def select_interaction_keys(self, keys: Sequence[bytes]) -> KeyOwners:
        """Who already holds each of ``keys`` (absent keys are left out), in one query."""
        if not keys:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_keys_statement, [list(keys)])
            return {
                bytes(row["key"]): (row["account_id"], bytes(row["digest"]))
                for row in curs.fetchall()
            }

    def select_account_keys(self, ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped data keys of ``ids`` that still exist (ADR 0015), in one query."""
        with self.datastore.get_connection() as conn:
            rows = directory.select_postgres(
                conn, self.datastore.schema, directory.KEYS_TABLE, "account_id", list(ids)
            )
        return {row["account_id"]: bytes(row["wrapped"]) for row in rows}

    def select_directory(self, lookups: Sequence[bytes]) -> dict[bytes, UUID]:
        """The accounts of ``lookups`` (keyed hashes of program and subject), in one query."""
        with self.datastore.get_connection() as conn:
            rows = directory.select_postgres(
                conn, self.datastore.schema, directory.DIRECTORY_TABLE, "lookup", list(lookups)
            )
        return {bytes(row["lookup"]): row["account_id"] for row in rows}

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        for tracking in kwargs.get("trackings", ()):
            self._insert_tracking(curs, tracking=tracking)
        if writes := kwargs.get("directory"):
            directory.write_postgres(curs, self.datastore.schema, writes)
        # In key order, so two batches claiming some of the same keys wait on each other in one
        # order instead of deadlocking.
        keys = sorted(kwargs.get("interaction_keys", ()), key=_by_key)
        if keys:
            curs.execute(
                self._insert_keys_statement,
                [[k.key for k in keys], [k.account_id for k in keys], [k.digest for k in keys]],
            )
        super()._insert_events(curs, stored_events, **kwargs)


class SQLiteLedgerRecorder(SQLiteProcessRecorder):
    """SQLite twin of :class:`PostgresLedgerRecorder`."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {INTERACTION_KEYS_TABLE} ("
            "key BLOB PRIMARY KEY, account_id TEXT NOT NULL, digest BLOB NOT NULL)",
            *directory.SQLITE_CREATE,
        ]

    def select_account_keys(self, ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped data keys of ``ids`` that still exist (ADR 0015)."""
        with self.datastore.transaction(commit=False) as c:
            rows = directory.select_sqlite(
                c, directory.KEYS_TABLE, "account_id", [i.hex for i in ids]
            )
        return {UUID(row["account_id"]): bytes(row["wrapped"]) for row in rows}

    def select_directory(self, lookups: Sequence[bytes]) -> dict[bytes, UUID]:
        """The accounts of ``lookups`` (keyed hashes of program and subject)."""
        with self.datastore.transaction(commit=False) as c:
            rows = directory.select_sqlite(c, directory.DIRECTORY_TABLE, "lookup", list(lookups))
        return {bytes(row["lookup"]): UUID(row["account_id"]) for row in rows}

    def select_interaction_keys(self, keys: Sequence[bytes]) -> KeyOwners:
        """Who already holds each of ``keys`` (absent keys are left out)."""
        owners: KeyOwners = {}
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                c.execute(
                    f"SELECT key, account_id, digest FROM {INTERACTION_KEYS_TABLE} "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for row in c.fetchall():
                    owners[bytes(row["key"])] = (UUID(row["account_id"]), bytes(row["digest"]))
        return owners

    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of several aggregates, ordered by aggregate and version."""
        return [
            StoredEvent(
                self.convert_originator_id(row["originator_id"]),
                row["originator_version"],
                row["topic"],
                row["state"],
            )
            for row in self._rows_of(
                originator_ids,
                "SELECT originator_id, originator_version, topic, state FROM {table} "
                "WHERE originator_id IN ({ids}) ORDER BY originator_id, originator_version",
            )
        ]

    def select_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Each aggregate's stored version (absent ones left out)."""
        rows = self._rows_of(
            originator_ids,
            "SELECT originator_id, max(originator_version) AS version FROM {table} "
            "WHERE originator_id IN ({ids}) GROUP BY originator_id",
        )
        return {UUID(str(row["originator_id"])): row["version"] for row in rows}

    def _rows_of(self, originator_ids: Sequence[UUID], query: str) -> list[Any]:
        """``query``'s rows for several aggregates, 500 ids per statement (SQLite's limit on
        bound parameters); ``{table}`` is the events table, ``{ids}`` the placeholders."""
        ids = [i.hex for i in originator_ids]
        rows: list[Any] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                c.execute(query.format(table=self.events_table_name, ids=marks), chunk)
                rows.extend(c.fetchall())
        return rows

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        for tracking in kwargs.get("trackings", ()):
            self._insert_tracking(c, tracking)
        keys: Sequence[InteractionKey] = kwargs.get("interaction_keys", ())
        if keys:
            c.executemany(
                f"INSERT INTO {INTERACTION_KEYS_TABLE} (key, account_id, digest) VALUES (?, ?, ?)",
                [(k.key, k.account_id.hex, k.digest) for k in keys],
            )
        if writes := kwargs.get("directory"):
            directory.write_sqlite(c, writes)
        return returning


class DataclassAsDict(Transcoding):
    """Stores a frozen value dataclass as a dict of its fields.

    Optional fields (default ``None``) are left out while they are ``None``: fields added to a
    value later (an entry's ``reason``, a lot's ``partner``) cost nothing where unused, and the
    dataclass's default restores them on the way back.
    """

    def __init__(self, cls: type[Any]) -> None:
        self.type = cls
        self.name = cls.__name__
        fields = dataclasses.fields(cls)
        self.fields = tuple(f.name for f in fields if f.default is not None)
        self.optional = tuple(f.name for f in fields if f.default is None)

    def encode(self, obj: Any) -> dict[str, Any]:
        data = {name: getattr(obj, name) for name in self.fields}
        for name in self.optional:
            if (value := getattr(obj, name)) is not None:
                data[name] = value
        return data

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


_NATIVE = frozenset({str, int, bool, float, type(None)})


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON format, read and written with orjson.

    Custom types are wrapped exactly as :class:`JSONTranscoder` wraps them
    (``{"_type_": name, "_data_": ...}``), so stored events stay readable by the library's own
    decoder and vice versa; only the speed differs (orjson's C reader and writer plus one pass
    in Python over the values).
    """

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(self._plain(obj))

    def decode(self, data: bytes) -> Any:
        return self._typed(orjson.loads(data))

    def _typed(self, value: Any) -> Any:
        # Inner values first, as the library's object hook does, then the wrapper's type;
        # leaves inline, as in _plain.
        kind = type(value)
        if kind is dict:
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                transcoding = self.names[value["_type_"]]
                return transcoding.decode(self._typed(value["_data_"]))
            return {
                key: item if type(item) in _NATIVE else self._typed(item)
                for key, item in value.items()
            }
        if kind is list:
            return [item if type(item) in _NATIVE else self._typed(item) for item in value]
        return value

    def _plain(self, value: Any) -> Any:
        kind = type(value)
        if kind in _NATIVE:
            return value
        if kind is dict:
            # leaves inline: most fields are strings and ints, and a call per leaf costs more
            # than the whole orjson write
            return {
                key: item if type(item) in _NATIVE else self._plain(item)
                for key, item in value.items()
            }
        if kind is list or kind is tuple:
            return [item if type(item) in _NATIVE else self._plain(item) for item in value]
        transcoding = self.types.get(kind)
        if transcoding is None:
            raise TypeError(f"no transcoding for {kind.__name__}")
        return {"_type_": transcoding.name, "_data_": self._plain(transcoding.encode(value))}


def ledger_transcoder() -> FastJSONTranscoder:
    """How the ledger's events are stored: the library's types plus our value objects."""
    transcoder = FastJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO()):
        transcoder.register(transcoding)
    for value_class in (LedgerEntry, Credit, Allocation, Award):
        transcoder.register(DataclassAsDict(value_class))
    return transcoder


def ledger_mapper() -> Mapper[UUID]:
    """The store's mapper, for readers outside the application (no cipher, no compressor:
    ``store_env`` configures neither)."""
    return Mapper(transcoder=ledger_transcoder())


class LedgerStore(Application[UUID]):
    """The careledger event store (an ``eventsourcing`` application with our recorders)."""

    name = APPLICATION_NAME

    def __init__(self, env: EnvType | None = None, keyring: KeyRing | None = None) -> None:
        # Without a keyring nothing is sealed (stores and tests from before ADR 0015).
        self.keys = DataKeys(keyring) if keyring is not None else None
        super().__init__(env=env)
        if self.keys is not None:
            self.keys.fetch = self._recorder().select_account_keys

    def construct_mapper(self) -> Mapper[UUID]:
        if self.keys is None:
            return super().construct_mapper()
        return SealingMapper(self.construct_transcoder(), self.keys)

    def _recorder(self) -> PostgresLedgerRecorder | SQLiteLedgerRecorder:
        recorder = self.recorder
        assert isinstance(recorder, PostgresLedgerRecorder | SQLiteLedgerRecorder)
        return recorder

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        return Environment(name, dict(env or {}))

    def construct_transcoder(self) -> JSONTranscoder:
        return ledger_transcoder()

    def load_many(self, ids: Sequence[UUID]) -> dict[UUID, Any]:
        """Rebuild several aggregates from their events with one query; absent ids are left out."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresLedgerRecorder | SQLiteLedgerRecorder)
        aggregates: dict[UUID, Any] = {}
        if self.keys is not None:
            self.keys.load(ids)  # one query for the keys of the whole batch
        for stored in recorder.select_events_of(ids):
            event: Any = self.mapper.to_domain_event(stored)
            key = UUID(str(stored.originator_id))
            aggregates[key] = event.mutate(aggregates.get(key))
        return aggregates

    def record(
        self,
        aggregates: Sequence[Any],
        positions: Sequence[Tracking] = (),
        interaction_keys: Sequence[InteractionKey] = (),
        directory: DirectoryWrites = NO_DIRECTORY_WRITES,
    ) -> None:
        """Store the pending events of ``aggregates``, ``positions``, the accepted
        interactions' keys and the accounts opened and erased (``directory``) in one
        transaction.

        The library's ``save`` does the same plus snapshot and notification bookkeeping this
        application does not use, and runtime protocol checks that cost more than the insert.
        Raises ``IntegrityError`` (nothing written) if a key is already held.
        """
        to_stored = self.mapper.to_stored_event
        stored = [
            to_stored(event) for aggregate in aggregates for event in aggregate.collect_events()
        ]
        if stored or positions or interaction_keys or directory:
            # The recorder directly: the library's ``EventStore.put`` also builds a
            # notification object per event for callers that want them; this one does not.
            self.recorder.insert_events(
                stored,
                trackings=list(positions),
                interaction_keys=list(interaction_keys),
                directory=directory,
            )

    def stored_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        """The version each of ``ids`` is stored at (never-stored ones left out), one query."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresLedgerRecorder | SQLiteLedgerRecorder)
        return recorder.select_versions(ids)

    def find_interaction_keys(self, keys: Sequence[bytes]) -> KeyOwners:
        """The account and content digest each of ``keys`` was accepted with, in one query."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresLedgerRecorder | SQLiteLedgerRecorder)
        return recorder.select_interaction_keys(keys)

    def position(self, name: str) -> int | None:
        """The last position recorded under ``name`` (a Kafka partition, a follower)."""
        recorder = self.recorder
        assert hasattr(recorder, "max_tracking_id")
        position: int | None = recorder.max_tracking_id(name)
        return position


def store_env(database_url: str, schema: str = "") -> dict[str, str]:
    """The ``eventsourcing`` environment for a ``postgresql://`` or ``sqlite:///`` URL."""
    parts = urlsplit(database_url)
    if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg"):
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": "careledger.adapters.store:PostgresLedgerRecorder",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_LOCK_TIMEOUT": "30",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
            "POSTGRES_PRE_PING": "y",
            "CREATE_TABLE": "y",
        }
        if schema:
            env["POSTGRES_SCHEMA"] = schema
        return env
    if parts.scheme == "sqlite":
        path = sqlite_path(database_url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "APPLICATION_RECORDER_TOPIC": "careledger.adapters.store:SQLiteLedgerRecorder",
            "SQLITE_DBNAME": path if path != ":memory:" else "file::memory:?cache=shared",
            "SQLITE_LOCK_TIMEOUT": "30",
            "CREATE_TABLE": "y",
        }
    raise ValueError("database URL must start with postgresql:// or sqlite:///")


def sqlite_path(database_url: str) -> str:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names."""
    rest = database_url.split("sqlite://", 1)[1]
    return rest[1:] if rest.startswith("/") else rest


def open_store(
    database_url: str, schema: str = "", attempts: int = 8, keyring: KeyRing | None = None
) -> LedgerStore:
    """Open (creating tables if needed) the event store at ``database_url``.

    Several processes starting together on a fresh database race on ``CREATE ... IF NOT
    EXISTS`` (PostgreSQL answers "tuple concurrently updated", a duplicate type or "relation
    already exists"); the loser retries and then finds the tables there.
    """
    for attempt in range(1, attempts + 1):
        try:
            return LedgerStore(env=store_env(database_url, schema), keyring=keyring)
        except DatabaseError as exc:  # InternalError, IntegrityError, ProgrammingError...
            if attempt == attempts:
                raise
            log.warning("creating the event store raced (%s); retrying", type(exc).__name__)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


__all__ = [
    "InteractionKey",
    "KeyOwners",
    "LedgerStore",
    "Tracking",
    "ledger_mapper",
    "ledger_transcoder",
    "open_store",
    "store_env",
]
