"""Two workers in one group; one is stopped mid-stream (SIGTERM, or SIGKILL).

Its partitions move to the survivor, which resumes each from the position stored in the
database. Nothing is lost or counted twice: every balance equals one clean pass over the same
records, the stored positions end at the topic's ends, and every poison record is a dead
letter exactly once in the ledger and at least once (exactly once after a SIGTERM) in the DLQ.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import REJECTED
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.integration.test_worker_support import (
    Placed,
    Record,
    WorkerProcess,
    assert_as_one_clean_pass,
    clean_pass,
    committed_count,
    dlq_origins,
    headers_of,
    interactions,
    ledger_at,
    origin,
    produce,
    stop_and_collect,
    wait_all_committed,
    wait_for,
    worker_env,
)
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
PARTITIONS = 6
PATIENTS = [f"rebalance-{i:03d}" for i in range(120)]


class PacedPublisher(threading.Thread):
    """Publishes the records in small chunks over a few seconds, as live traffic would."""

    def __init__(self, bootstrap: str, records: list[Record], chunk: int, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.chunk, self.pause_s = bootstrap, records, chunk, pause_s
        self.placed: list[Placed] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:
            self.error = exc

    async def _publish(self) -> None:
        for start in range(0, len(self.records), self.chunk):
            chunk = self.records[start : start + self.chunk]
            self.placed.extend(await produce(self.bootstrap, INTERACTIONS_TOPIC, chunk))
            await asyncio.sleep(self.pause_s)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_survivor_takes_over_the_stopped_workers_partitions(
    stop_with: signal.Signals, pg_database: Database, tmp_path: Path
) -> None:
    records = interactions(PATIENTS, 30, poison_every=97, redeliver_every=61)
    clean = clean_pass(records, tmp_path / "clean.db")
    refused_at = [i for i, r in enumerate(clean.batch.results) if r.outcome == REJECTED]
    ledger = ledger_at(pg_database)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        env = worker_env(pg_database, broker.bootstrap, batch_max=40)
        survivor = WorkerProcess("survivor", env, tmp_path)
        victim = WorkerProcess("victim", env, tmp_path)
        workers = (survivor, victim)

        def diagnose() -> str:
            return "".join(w.tail() for w in workers)

        try:
            # Both members hold partitions before any traffic arrives.
            wait_for(
                lambda: (
                    bool(survivor.partitions())
                    and bool(victim.partitions())
                    and survivor.partitions() | victim.partitions() == set(range(PARTITIONS))
                ),
                30,
                "both workers to hold partitions",
                diagnose=diagnose,
            )
            publisher = PacedPublisher(broker.bootstrap, records, chunk=150, pause_s=0.15)
            publisher.start()
            wait_for(
                lambda: (
                    committed_count(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)
                    >= len(records) // 4
                ),
                40,
                "a quarter of the records to be committed",
            )
            victim.signal(stop_with)
            exit_status = victim.process.wait(20)
            taken_over = committed_count(ledger.store, INTERACTIONS_TOPIC, PARTITIONS)
            assert taken_over < len(records) * 3 // 4, "the stop came too late to test anything"
            if stop_with == signal.SIGTERM:
                assert exit_status == 0, victim.tail()

            publisher.join(30)
            assert publisher.error is None and len(publisher.placed) == len(records)
            wait_for(
                lambda: survivor.partitions() == set(range(PARTITIONS)),
                30,
                "the survivor to be assigned every partition",
                diagnose=survivor.tail,
            )
            wait_all_committed(survivor, ledger.store, PARTITIONS, len(records))
            ends, dead = stop_and_collect(survivor, broker.bootstrap, len(refused_at))
        finally:
            for worker in workers:
                worker.close()

    # One clean pass over the same records (published in order), each poison record one
    # dead letter; in the DLQ a SIGKILL between the DLQ send and the commit may repeat one.
    placed = publisher.placed
    assert [p.record for p in placed] == records
    refused = {
        origin(INTERACTIONS_TOPIC, placed[i]): clean.batch.results[i].code for i in refused_at
    }
    assert clean.count("accepted") + clean.count("duplicate") + len(refused) == len(records)
    assert_as_one_clean_pass(ledger, clean, PATIENTS, PARTITIONS, ends, refused, dead)
    in_dlq = dlq_origins(dead)
    if stop_with == signal.SIGTERM:
        assert set(in_dlq.values()) == {1}
    for record in dead:
        h = headers_of(record)
        key = (
            f"kafka:{h['careledger.origin.topic']}:{h['careledger.origin.partition']}:"
            f"{h['careledger.origin.offset']}"
        )
        assert h["careledger.code"] == refused[key]
