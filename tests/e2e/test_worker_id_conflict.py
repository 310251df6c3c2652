"""One (source, id) under two subjects, on two partitions, read by two worker processes.

Each pair of records shares a key but names another patient; the two land on different
partitions, owned by different workers. A pair is published at the end of a round of
unrelated records on both sides, so both workers apply it at about the same time (which one
wins varies from run to run). Whichever commits first owns the key; the other record is a
dead letter with code ``id_conflict`` (in the DLQ and in the ledger) and its patient earns
nothing. The case where both look the key up before either commits is made certain in
tests/integration/test_interaction_keys.py (the registry's primary key decides it).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from schemas.topics import INTERACTIONS_DLQ_TOPIC, INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_worker_support import (
    PROGRAM,
    Placed,
    Record,
    WorkerProcess,
    committed_count,
    dead_letter_origins,
    headers_of,
    ledger_at,
    origin,
    produce,
    read_topic,
    wait_for,
    worker_env,
)
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
PARTITIONS = 2
PAIRS = 20
FILLERS = 60  # unrelated records per side and round: they keep each batch busy for a while
SIDES = ("east", "west")  # partition 0, partition 1


def visit(patient: str, n: int, key: str) -> Record:
    body = cloudevent(
        "visit.completed",
        patient,
        f"2026-03-{1 + n % 28:02d}T10:00:00Z",
        {"visit_id": f"v{n}", "visit_type": "in_person"},
        id=key,
        source="urn:emr:north",
    )
    return Record(patient, json.dumps(body).encode())


def rounds() -> list[list[Record]]:
    """Round n: fillers, then the pair ("east-n", "west-n") with key ``shared-n``."""
    out = []
    for n in range(PAIRS):
        pair = [visit(f"{side}-{n:02d}", n, f"shared-{n}") for side in SIDES]
        fillers = [
            visit(f"{side}-filler-{i:02d}", n, f"{side}-filler-{n}-{i}")
            for i in range(FILLERS)
            for side in SIDES
        ]
        out.append(fillers + pair)
    return out


def partition_of(record: Record) -> int:
    return SIDES.index(record.key.split("-")[0])


async def publish(bootstrap: str, batches: list[list[Record]]) -> list[Placed]:
    """Each round at once, then a pause, so both workers are idle when a round arrives."""
    placed: list[Placed] = []
    for records in batches:
        placed += await produce(bootstrap, INTERACTIONS_TOPIC, records, partition_of=partition_of)
        await asyncio.sleep(0.3)
    return placed


def test_a_key_reused_under_another_subject_is_refused_across_workers(
    pg_database: Database, tmp_path: Path
) -> None:
    batches = rounds()
    records = [record for batch in batches for record in batch]
    ledger = ledger_at(pg_database)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        env = worker_env(
            pg_database,
            broker.bootstrap,
            batch_max=2 * FILLERS + 2,
            CARELEDGER_PARTITIONS=str(PARTITIONS),
        )
        workers = [WorkerProcess(name, env, tmp_path) for name in ("w0", "w1")]

        def diagnose() -> str:
            return "".join(w.tail() for w in workers)

        try:
            wait_for(
                lambda: all(len(w.partitions()) == 1 for w in workers),
                30,
                "each worker to hold one partition",
                diagnose=diagnose,
            )
            placed = asyncio.run(publish(broker.bootstrap, batches))
            wait_for(
                lambda: (
                    committed_count(ledger.store, INTERACTIONS_TOPIC, PARTITIONS) == len(records)
                ),
                40,
                "every record to be committed",
                diagnose=diagnose,
            )
            held = sorted(p for w in workers for p in w.partitions())
            for worker in workers:
                assert worker.stop() == 0, worker.tail()
            dead = asyncio.run(read_topic(broker.bootstrap, INTERACTIONS_DLQ_TOPIC, PAIRS))
        finally:
            for worker in workers:
                worker.close()

    assert held == [0, 1], "both workers must still have held one partition each"
    where = {p.record.key: origin(INTERACTIONS_TOPIC, p) for p in placed}
    in_dlq = {
        f"kafka:{h['careledger.origin.topic']}:{h['careledger.origin.partition']}:"
        f"{h['careledger.origin.offset']}": h["careledger.code"]
        for h in map(headers_of, dead)
    }
    assert set(in_dlq.values()) == {"id_conflict"}
    refused = set(in_dlq)
    assert set(dead_letter_origins(ledger.store)) == refused
    for n in range(PAIRS):
        east, west = f"east-{n:02d}", f"west-{n:02d}"
        # Exactly one of the pair is refused, and only the other one earns.
        assert (where[east] in refused) != (where[west] in refused), n
        earned = [ledger.balance(PROGRAM, patient) for patient in (east, west)]
        assert sorted((b.available if b else 0) for b in earned) == [0, 100], n
