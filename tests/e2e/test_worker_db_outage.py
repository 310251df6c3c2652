"""PostgreSQL unreachable for a while under a running worker.

The worker reaches the database through a TCP proxy the test takes down (every connection cut,
new ones refused) for about five seconds while records keep arriving, then brings back. Meanwhile
the worker must retry with backoff, stay up and commit nothing partial: what is stored at that
moment is exactly one clean pass over the records up to the stored positions. Afterwards it
catches up and the ledger equals one clean pass over everything, no record counted twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import PG_URL, Database
from tests.integration.test_worker_support import (
    PausableProxy,
    WorkerProcess,
    assert_as_one_clean_pass,
    assert_same_balances,
    clean_pass,
    committed_count,
    interactions,
    ledger_at,
    produce,
    stop_and_collect,
    stored_positions,
    wait_all_committed,
    wait_for,
    worker_env,
)
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
PARTITIONS = 3
PATIENTS = [f"outage-{i:03d}" for i in range(100)]
OUTAGE_S = 5.0


def test_worker_rides_out_a_database_outage(pg_database: Database, tmp_path: Path) -> None:
    records = interactions(PATIENTS, 24, poison_every=89, redeliver_every=53)
    before, during = records[: len(records) * 2 // 3], records[len(records) * 2 // 3 :]
    clean = clean_pass(records, tmp_path / "clean.db")
    ledger = ledger_at(pg_database)  # the test's own view, not through the proxy
    with EmbeddedBroker() as broker, PausableProxy(PG_URL) as proxy:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        placed = asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, before))
        env = worker_env(
            pg_database, broker.bootstrap, batch_max=40, CARELEDGER_DATABASE_URL=proxy.url
        )
        worker = WorkerProcess("worker", env, tmp_path)
        try:
            wait_for(
                lambda: (
                    committed_count(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)
                    >= len(before) // 4
                ),
                40,
                "a quarter of the first records to be committed",
                diagnose=worker.tail,
            )
            proxy.pause()
            down_at = time.monotonic()
            placed += asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, during))
            time.sleep(1.0)  # a commit the server was finishing when the link went is in now
            frozen = stored_positions(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)
            assert sum(p + 1 for p in frozen.values()) < len(before), "the outage came too late"

            # Nothing partial: the stored ledger is exactly the records up to the positions.
            prefix = [p.record for p in placed if p.offset <= frozen[p.partition]]
            assert_same_balances(
                ledger, clean_pass(prefix, tmp_path / "prefix.db").ledger, PATIENTS
            )

            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            assert worker.alive(), worker.tail()
            assert stored_positions(ledger.store, INTERACTIONS_TOPIC, PARTITIONS) == frozen
            # It kept trying, with backoff: neither given up nor hammering a dead server.
            tries = [t - down_at for t in proxy.refused]
            assert len(tries) >= 2 and tries[-1] > OUTAGE_S / 2, (tries, worker.tail())
            assert len(tries) < 10 * OUTAGE_S, tries

            proxy.resume()
            wait_all_committed(
                worker, ledger.store, PARTITIONS, len(records), "the worker to catch up"
            )
            refused = clean.refused(placed)
            ends, dead = stop_and_collect(worker, broker.bootstrap, len(refused))
        finally:
            worker.close()

    assert [p.record for p in placed] == records
    # (a batch retried after its dead letters were sent sends them again: at least once)
    assert_as_one_clean_pass(ledger, clean, PATIENTS, PARTITIONS, ends, refused, dead)
