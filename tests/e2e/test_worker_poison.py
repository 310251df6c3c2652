"""Poison records interleaved with good ones, through a worker process.

Every good record lands (balances equal one clean pass); every poison record is in the DLQ
with headers naming the reason and its origin, and with its original bytes and key; the
ledger's own dead letters (``careledger dead-letters``) name the same origins; and the
worker's counters add up: accepted + duplicates + rejected = produced.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import REJECTED
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.integration.test_worker_support import (
    Record,
    WorkerProcess,
    accepted_in,
    assert_same_balances,
    clean_pass,
    free_port,
    headers_of,
    interactions,
    ledger_at,
    origin,
    poison,
    produce,
    scrape,
    stop_and_collect,
    stored_positions,
    wait_all_committed,
    worker_env,
)
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
PARTITIONS = 3
PATIENTS = [f"poison-{i:03d}" for i in range(40)]


def scenario() -> tuple[list[Record], dict[int, str]]:
    """Good records with every kind of poison spread through them, some redelivered.

    Returns the records and, for each poison record's index, the code it must be refused with.
    """
    goods = interactions(PATIENTS, 12, redeliver_every=23)
    cases = [case for i, p in enumerate(PATIENTS[:4]) for case in poison(p, i)]
    records: list[Record] = []
    codes: dict[int, str] = {}
    step = len(goods) // len(cases)
    for i, record in enumerate(goods):
        records.append(record)
        if i % step == step // 2 and cases:
            bad, code = cases.pop()
            codes[len(records)] = code
            records.append(bad)
            if len(cases) % 10 == 0:  # a poison record redelivered is dead-lettered again
                codes[len(records)] = code
                records.append(bad)
    assert not cases
    return records, codes


def test_poison_goes_to_the_dlq_and_the_counts_add_up(
    pg_database: Database, tmp_path: Path
) -> None:
    records, codes = scenario()
    clean = clean_pass(records, tmp_path / "clean.db")
    assert {
        i: r.code for i, r in enumerate(clean.batch.results) if r.outcome == REJECTED
    } == codes, "the scenario's poison must be exactly what the ledger refuses"
    assert set(codes.values()) == {code for _, code in poison("any", 0)}, "every kind is here"

    ledger = ledger_at(pg_database)
    metrics_port = free_port()
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, PARTITIONS))
        placed = asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, records))
        env = worker_env(
            pg_database, broker.bootstrap, batch_max=25, CARELEDGER_METRICS_PORT=str(metrics_port)
        )
        worker = WorkerProcess("worker", env, tmp_path)
        try:
            wait_all_committed(worker, ledger.store, PARTITIONS, len(records))
            metrics = scrape(metrics_port)
            ends, dead = stop_and_collect(worker, broker.bootstrap, len(codes))
        finally:
            worker.close()

    # Good records landed exactly once; positions end at the topic's ends.
    assert_same_balances(ledger, clean.ledger, PATIENTS)
    assert accepted_in(ledger, PATIENTS) == clean.count("accepted")
    assert stored_positions(ledger.store, INTERACTIONS_TOPIC, PARTITIONS) == {
        p: end - 1 for p, end in ends.items()
    }

    # The worker's counters add up to what was produced, and match the clean pass.
    def counted(outcome: str) -> int:
        return int(
            sum(
                value
                for (name, labels), value in metrics.items()
                if name == "careledger_messages_total" and ("outcome", outcome) in labels
            )
        )

    outcomes = {o: counted(o) for o in ("accepted", "duplicate", "rejected")}
    assert outcomes == {o: clean.count(o) for o in outcomes}
    assert sum(outcomes.values()) == len(records)
    assert outcomes["rejected"] == len(codes) and outcomes["duplicate"] > 0

    # Each poison record is in the DLQ once, with its reason, origin, key and original bytes.
    expected = {
        origin(INTERACTIONS_TOPIC, placed[i]): (placed[i].record, clean.batch.results[i])
        for i in codes
    }
    assert len(dead) == len(codes)
    for record in dead:
        h = headers_of(record)
        assert h["careledger.origin.topic"] == INTERACTIONS_TOPIC
        where = f"kafka:{INTERACTIONS_TOPIC}:{record_origin(h)}"
        original, refused = expected.pop(where)
        assert h["careledger.code"] == refused.code
        assert h["careledger.reason"] == f"{refused.code}: {refused.reason}"
        assert record.value == original.value  # untouched, a tombstone stays a tombstone
        assert record.key == original.key.encode()
    assert not expected, f"missing from the DLQ: {sorted(expected)}"

    # ``careledger dead-letters`` lists the same origins with the same codes.
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "careledger.cli", "dead-letters", "--json", "--limit", "1000"],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
    )
    assert Counter((row["origin"], row["code"]) for row in listed) == Counter(
        (origin(INTERACTIONS_TOPIC, placed[i]), c) for i, c in codes.items()
    )


def record_origin(headers: dict[str, str]) -> str:
    return f"{headers['careledger.origin.partition']}:{headers['careledger.origin.offset']}"
