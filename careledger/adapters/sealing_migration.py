"""Sealing a store written before ADR 0015 (``careledger seal-store``), and the guard that
keeps a sealed ledger off an unsealed store.

A store written without a ledger secret has accounts whose ids derive from the subject, events
in plain JSON and interaction keys that are plain hashes. Opened with a secret as it is, the
directory would know none of its patients and open a second account for each, so:

* :func:`ensure_sealed` (every sealed ledger, at start) refuses a store that has events but
  was never sealed; an empty store is marked sealed at once.
* :func:`seal_store` gives every account a directory row (its existing id) and a data key,
  rewrites its stored events with their patient-linked values sealed (the only in-place
  rewrite of events this project does: a migration, same facts, same topics and versions),
  and replaces its interaction keys by keyed ones, a chunk of accounts per transaction.
  Running it again continues where it stopped (accounts with a key are done), then marks the
  store sealed. Dead letters written before keep their ids in plain (they name no patient).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from careledger.adapters import directory_tables as directory
from careledger.adapters.directory_tables import DirectoryWrites, NewAccount
from careledger.adapters.shredding import KeyRing, seal
from careledger.adapters.store import LedgerStore, PostgresLedgerRecorder
from domain.account import PatientAccount

SEALED_MARKER = "store-sealed"  # a position: recorded once the store is sealed
CHUNK = 200
log = logging.getLogger(__name__)


class StoreNotSealed(RuntimeError):
    """Raised when a ledger with a secret opens a store written without one."""


@dataclass
class SealReport:
    accounts: int = 0
    events: int = 0
    interaction_keys: int = 0


def ensure_sealed(store: LedgerStore) -> None:
    """Refuse an unsealed store with events; mark an empty one sealed."""
    if store.position(SEALED_MARKER) is not None:
        return
    if store.recorder.max_notification_id():
        raise StoreNotSealed(
            "this store was written without a ledger secret: run `careledger seal-store` first"
        )
    with contextlib.suppress(IntegrityError):  # another process marked it first
        store.record([], [Tracking(SEALED_MARKER, 1)])


def seal_store(store: LedgerStore, ring: KeyRing) -> SealReport:
    """Seal every account of ``store`` not sealed yet (see the module docstring)."""
    report = SealReport()
    pending: list[tuple[UUID, str, str]] = []
    for account in _accounts(store):
        pending.append(account)
        if len(pending) >= CHUNK:
            _seal_chunk(store, ring, pending, report)
            pending = []
    _seal_chunk(store, ring, pending, report)
    if store.position(SEALED_MARKER) is None:
        store.record([], [Tracking(SEALED_MARKER, 1)])
    log.info("sealed %d accounts (%d events)", report.accounts, report.events)
    return report


def _accounts(store: LedgerStore) -> Iterator[tuple[UUID, str, str]]:
    topic = get_topic(PatientAccount.Opened)
    start = 1
    while True:
        notifications = store.recorder.select_notifications(start, 1000, topics=[topic])
        for notification in notifications:
            state = orjson.loads(notification.state)
            originator = notification.originator_id
            assert isinstance(originator, UUID)
            yield originator, state["program_id"], state["patient_id"]
        if len(notifications) < 1000:
            return
        start = notifications[-1].id + 1


def _seal_chunk(
    store: LedgerStore, ring: KeyRing, accounts: Sequence[tuple[UUID, str, str]], report: SealReport
) -> None:
    recorder = store._recorder()
    done = recorder.select_account_keys([a for a, _, _ in accounts])
    todo = [a for a in accounts if a[0] not in done]
    if not todo:
        return
    opened: list[NewAccount] = []
    states: list[tuple[UUID, int, bytes]] = []
    rekeyed: list[tuple[bytes, bytes]] = []
    for account_id, program_id, patient_id in todo:
        data_key = ring.new_data_key()
        opened.append(
            NewAccount(
                account_id, ring.lookup(program_id, patient_id), ring.wrap(account_id, data_key)
            )
        )
        cipher = AESGCM(data_key)
        for stored in recorder.select_events_of([account_id]):
            states.append(
                (
                    account_id,
                    stored.originator_version,
                    seal(stored.state, account_id, cipher, data_key),
                )
            )
            rekeyed.extend(_interaction_keys(stored.state, ring))
    _write(recorder, DirectoryWrites(opened), states, rekeyed)
    report.accounts += len(todo)
    report.events += len(states)
    report.interaction_keys += len(rekeyed)


def _interaction_keys(state: bytes, ring: KeyRing) -> list[tuple[bytes, bytes]]:
    """(plain key, keyed key) of an accepted interaction's event, else nothing."""
    fields = orjson.loads(state)
    source, source_id = fields.get("source"), fields.get("source_id")
    if "interaction" not in fields or not isinstance(source, str) or not isinstance(source_id, str):
        return []
    plain = blake2b(f"{source}\x1f{source_id}".encode(), digest_size=16).digest()
    return [(plain, ring.interaction_key(source, source_id))]


def _write(
    recorder: Any,
    writes: DirectoryWrites,
    states: list[tuple[UUID, int, bytes]],
    rekeyed: list[tuple[bytes, bytes]],
) -> None:
    table = recorder.events_table_name
    if isinstance(recorder, PostgresLedgerRecorder):
        schema = recorder.datastore.schema
        names = {"schema": Identifier(schema), "table": Identifier(table)}
        with recorder.datastore.transaction(commit=True) as curs:
            directory.write_postgres(curs, schema, writes)
            for account_id, version, state in states:
                curs.execute(
                    SQL(
                        "UPDATE {schema}.{table} SET state = %s "
                        "WHERE originator_id = %s AND originator_version = %s"
                    ).format(**names),
                    [state, account_id, version],
                )
            for plain, keyed in rekeyed:
                curs.execute(
                    SQL("UPDATE {schema}.interaction_keys SET key = %s WHERE key = %s").format(
                        **names
                    ),
                    [keyed, plain],
                )
        return
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute("PRAGMA secure_delete = ON")  # the plain states are overwritten on disk
        directory.write_sqlite(curs, writes)
        curs.executemany(
            f"UPDATE {table} SET state = ? WHERE originator_id = ? AND originator_version = ?",
            [(state, account_id.hex, version) for account_id, version, state in states],
        )
        curs.executemany(
            "UPDATE interaction_keys SET key = ? WHERE key = ?",
            [(keyed, plain) for plain, keyed in rekeyed],
        )
