"""A partition that comes back to a worker must be decided on the stored accounts.

Found by the chaos soak (bench/soak.py, seed 1): worker A applies a patient's records, loses the
partition in a rebalance, worker B applies more of them, and the partition comes back to A. A's
ledger still caches the account as it left it, so a void of a visit B applied is decided
against an account without that visit: ``unknown_interaction``. When the batch writes nothing
else to that account the refusal commits (the void is lost, the balance is wrong); when it
does, the write conflicts and the batch is retried on reloaded accounts, but the dead letters
of the stale attempt are already on the DLQ topic (``before_commit``), naming a record the
ledger accepted. A rebalance therefore drops the cached accounts, and any refusal decided on a
cached account is checked against its stored version before the batch commits (other writers,
such as the referral relay of another process, move accounts on without a rebalance).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from careledger.application.ledger import ACCEPTED, Inbound, Ledger
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker, _SeekToStoredPositions
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_ledger_store import ledger_for
from tests.integration.test_worker_support import CLEAN_NOW, PROGRAM, ledger_at

pytestmark = pytest.mark.integration
PATIENT = "stale-cache-1"


def visit(n: int) -> Inbound:
    body = cloudevent(
        "visit.completed",
        PATIENT,
        f"2026-03-0{n}T10:00:00Z",
        {"visit_id": f"v{n}", "visit_type": "in_person"},
        id=f"{PATIENT}-visit-{n}",
    )
    return Inbound(f"test:visit:{n}", json.dumps(body).encode(), CLEAN_NOW)


def void_of_visit(n: int) -> Inbound:
    body = cloudevent(
        "interaction.voided",
        PATIENT,
        "2026-03-09T10:00:00Z",
        {
            "voided_id": f"{PATIENT}-visit-{n}",
            "voided_source": "urn:careledger:test",
            "reason": "entered_in_error",
        },
        id=f"{PATIENT}-void-{n}",
    )
    return Inbound(f"test:void:{n}", json.dumps(body).encode(), CLEAN_NOW)


def another_writer_moves_on(pg_database: Database) -> Ledger:
    """Ledger A caches the account with visit 1; ledger B then adds visit 2. Returns A."""
    a, b = ledger_at(pg_database), ledger_at(pg_database)
    assert [r.outcome for r in a.apply_batch([visit(1)]).results] == [ACCEPTED]
    assert [r.outcome for r in b.apply_batch([visit(2)]).results] == [ACCEPTED]
    return a


def test_a_rebalance_makes_the_worker_decide_on_the_stored_accounts(
    pg_database: Database,
) -> None:
    a = another_writer_moves_on(pg_database)
    worker = LedgerWorker(
        a,
        bootstrap="127.0.0.1:1",  # never connected: only the rebalance listener runs
        group_id="stale",
        metrics=WorkerMetrics.create(CollectorRegistry()),
    )
    asyncio.run(_SeekToStoredPositions(worker).on_partitions_revoked([]))

    results = a.apply_batch([void_of_visit(2)]).results
    assert [(r.outcome, r.code) for r in results] == [(ACCEPTED, None)]
    balance = a.balance(PROGRAM, PATIENT)
    assert balance is not None and balance.available == 100  # visit 1 only


def test_a_ledger_decides_on_the_stored_account_without_being_told(
    pg_database: Database,
) -> None:
    """Without a rebalance too (the referral relay of another process writes accounts a
    worker caches): a refusal decided on a cached account is checked against the stored
    version before anything is committed or dead-lettered."""
    a = another_writer_moves_on(pg_database)
    letters: list[list[str]] = []
    batch = a.apply_batch(
        [void_of_visit(2)],
        before_commit=lambda results: letters.append([r.outcome for r in results]),
    )
    assert [(r.outcome, r.code) for r in batch.results] == [(ACCEPTED, None)]
    assert letters == [[ACCEPTED]]  # the stale refusal never reached the dead-letter step
    balance = a.balance(PROGRAM, PATIENT)
    assert balance is not None and balance.available == 100  # visit 1 only


def test_two_ledgers_on_one_store_refuse_only_on_the_stored_account(database: Database) -> None:
    """The same check on both stores (``LedgerStore.stored_versions``): SQLite and PostgreSQL."""
    a, b = ledger_for(database), ledger_for(database)
    assert [r.outcome for r in a.apply_batch([visit(1)]).results] == [ACCEPTED]
    assert [r.outcome for r in b.apply_batch([visit(2)]).results] == [ACCEPTED]
    results = a.apply_batch([void_of_visit(2)]).results
    assert [(r.outcome, r.code) for r in results] == [(ACCEPTED, None)]
    # and a refusal on an account nobody moved stays a refusal (no retry loop)
    again = a.apply_batch([void_of_visit(2)]).results  # a duplicate of the void
    assert [r.outcome for r in again] == ["duplicate"]
    unknown = a.apply_batch([void_of_visit(3)]).results
    assert [(r.outcome, r.code) for r in unknown] == [("rejected", "unknown_interaction")]
