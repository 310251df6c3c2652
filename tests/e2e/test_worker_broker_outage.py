"""The broker goes away under a running worker process.

* Frozen (SIGSTOP for longer than a session, then SIGCONT): the broker keeps its data, so this
  must be invisible in the result. The worker stays up, rejoins on its own and catches up; the
  ledger equals one clean pass.
* Restarted on the same port: Tansu keeps everything in memory, so the topic comes back empty
  and its offsets start again at 0, below the stored positions. Upstream republishes what was
  not committed. Those records cannot be applied (positions only move forward, ADR 0004) and
  must not be skipped silently either: the worker reconnects on its own, keeps consuming
  partitions that have no stored position, and fences the others (error log, negative lag),
  applying nothing of them even when their new log grows past the stored position.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Ledger
from producers.admin import ensure_topic
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.integration.test_worker_support import (
    Record,
    WorkerProcess,
    accepted_in,
    assert_as_one_clean_pass,
    assert_same_balances,
    clean_pass,
    committed_count,
    free_port,
    good,
    interactions,
    ledger_at,
    produce,
    scrape,
    stop_and_collect,
    stored_positions,
    wait_all_committed,
    wait_for,
    worker_env,
)
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e


def test_worker_rides_out_a_frozen_broker(pg_database: Database, tmp_path: Path) -> None:
    partitions = 3
    patients = [f"frozen-{i:03d}" for i in range(100)]
    records = interactions(patients, 24, poison_every=89, redeliver_every=53)
    before, after = records[: len(records) // 2], records[len(records) // 2 :]
    clean = clean_pass(records, tmp_path / "clean.db")
    ledger = ledger_at(pg_database)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, partitions))
        placed = asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, before))
        worker = WorkerProcess(
            "worker", worker_env(pg_database, broker.bootstrap, batch_max=40), tmp_path
        )
        frozen = False
        try:
            wait_for(
                lambda: (
                    committed_count(ledger.store, INTERACTIONS_TOPIC, partitions)
                    >= len(before) // 4
                ),
                40,
                "a quarter of the first records to be committed",
                diagnose=worker.tail,
            )
            os.kill(broker.pid, signal.SIGSTOP)
            frozen = True
            time.sleep(5.0)  # longer than the 3 s session
            assert worker.alive(), worker.tail()
            os.kill(broker.pid, signal.SIGCONT)
            frozen = False
            placed += asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, after))
            wait_all_committed(
                worker, ledger.store, partitions, len(records), "the worker to catch up"
            )
            refused = clean.refused(placed)
            ends, dead = stop_and_collect(worker, broker.bootstrap, len(refused))
        finally:
            if frozen:
                os.kill(broker.pid, signal.SIGCONT)
            worker.close()

    assert [p.record for p in placed] == records
    assert_as_one_clean_pass(ledger, clean, patients, partitions, ends, refused, dead)


PARTITIONS = 4  # what Tansu gives a topic it auto-creates, so a worker racing us cannot differ
OLD = [0, 1, 2]  # partitions with records (and stored positions) before the restart
NEW = 3  # a partition that only gets records after it


def test_broker_restart_that_loses_the_log_fences_instead_of_skipping(
    pg_database: Database, tmp_path: Path
) -> None:
    patients = {p: [f"restart-{p}-{i:02d}" for i in range(30)] for p in range(PARTITIONS)}
    partition_of = {patient: p for p, names in patients.items() for patient in names}

    def place(record: Record) -> int:
        return partition_of[record.key]

    old_patients = [name for p in OLD for name in patients[p]]
    records = interactions(old_patients, 23)
    first, unseen = records[: len(records) * 20 // 23], records[len(records) * 20 // 23 :]
    ledger = ledger_at(pg_database)
    metrics_port = free_port()
    broker = EmbeddedBroker().start()
    worker: WorkerProcess | None = None
    try:
        port = broker.port
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        placed = asyncio.run(
            produce(broker.bootstrap, INTERACTIONS_TOPIC, first, partition_of=place)
        )
        env = worker_env(
            pg_database, broker.bootstrap, batch_max=25, CARELEDGER_METRICS_PORT=str(metrics_port)
        )
        worker = WorkerProcess("worker", env, tmp_path)
        wait_for(
            lambda: (
                committed_count(ledger.store, INTERACTIONS_TOPIC, PARTITIONS) >= len(first) * 3 // 4
            ),
            40,
            "three quarters of the records to be committed",
            diagnose=worker.tail,
        )
        # Some records reach the broker but never the worker, then the broker loses them all.
        worker.signal(signal.SIGSTOP)
        time.sleep(1.0)  # the fetch it had in flight has been answered by now
        placed += asyncio.run(
            produce(broker.bootstrap, INTERACTIONS_TOPIC, unseen, partition_of=place)
        )
        broker.stop()
        worker.signal(signal.SIGCONT)
        stored = _settled_positions(ledger, PARTITIONS)  # it commits what it had fetched
        redeliver = [p.record for p in placed if p.offset > stored[p.partition]]
        for p in OLD:
            pending = sum(1 for r in redeliver if place(r) == p)
            assert 0 < pending <= stored[p], "the new log must end at or below the stored position"

        broker = EmbeddedBroker(port).start()
        asyncio.run(ensure_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        fresh = interactions(patients[NEW], 10)
        asyncio.run(
            produce(broker.bootstrap, INTERACTIONS_TOPIC, redeliver + fresh, partition_of=place)
        )
        wait_for(
            lambda: (
                worker.log().count("below the stored position") >= len(OLD)
                and stored_positions(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)[NEW]
                == len(fresh) - 1
            ),
            40,
            "the worker to fence the old partitions and consume the new one",
            diagnose=worker.tail,
        )
        # Their new logs grow past the stored positions: the worker must not start applying
        # there (skipping everything below it).
        growth = [good(patients[p][0], 100 + n) for p in OLD for n in range(stored[p] + 10)]
        asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, growth, partition_of=place))
        time.sleep(3.0)
        metrics = scrape(metrics_port)
        assert worker.alive(), worker.tail()
        assert worker.stop() == 0, worker.tail()
    finally:
        if worker is not None:
            if worker.alive():
                worker.signal(signal.SIGCONT)
            worker.close()
        broker.stop()

    positions = stored_positions(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)
    assert positions == {**stored, NEW: len(fresh) - 1}
    for p in OLD:
        lag = metrics[
            (
                "careledger_consumer_lag_records",
                (("partition", str(p)), ("topic", INTERACTIONS_TOPIC)),
            )
        ]
        assert lag < 0, (p, lag)

    # Exactly what was committed before the restart, plus the new partition: nothing twice.
    committed_before = [p.record for p in placed if p.offset <= stored[p.partition]]
    expected = clean_pass(committed_before + fresh, tmp_path / "clean.db")
    everyone = [name for names in patients.values() for name in names]
    assert_same_balances(ledger, expected.ledger, everyone)
    assert accepted_in(ledger, everyone) == expected.count("accepted")


def _settled_positions(ledger: Ledger, partitions: int) -> dict[int, int]:
    """The stored positions once the worker has committed what it had already fetched."""
    last = stored_positions(ledger.store, INTERACTIONS_TOPIC, partitions)
    while True:
        time.sleep(1.0)
        now = stored_positions(ledger.store, INTERACTIONS_TOPIC, partitions)
        if now == last:
            return now
        last = now
