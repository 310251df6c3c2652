"""A partition whose log ends below its stored position is fenced, not silently skipped.

That is what a topic recreated under a running ledger looks like (Tansu keeps everything in
memory, so a broker restart recreates it empty; on Kafka, deleting and recreating the topic or
an unclean leader election): offsets start again at 0 while the stored position says 50.
Applying those records would need the position to move back, which ADR 0004 forbids; seeking
to the stored position would skip every new record up to it. So the worker pauses that
partition, says so in an error log and a negative lag, and carries on with the others.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import TopicPartition
from eventsourcing.persistence import Tracking
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker
from tests.conftest import Database
from tests.integration.test_worker_support import (
    good,
    ledger_at,
    on_partition,
    produce,
    stored_positions,
)
from tests.kafka_support import create_topic, unique_name

pytestmark = pytest.mark.integration
STORED = 50


async def test_partition_behind_its_stored_position_is_fenced(
    kafka_broker: EmbeddedBroker, pg_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = unique_name("fenced"), unique_name("group")
    await create_topic(kafka_broker.bootstrap, topic, 2)
    await create_topic(kafka_broker.bootstrap, f"{topic}.dlq", 1)
    ledger = ledger_at(pg_database)
    ledger.apply_batch([], [Tracking(f"kafka:{topic}:0", STORED)])  # from the lost log
    on = {0: ["fenced-a", "fenced-b"], 1: ["healthy-a", "healthy-b"]}
    for p, patients in on.items():
        records = [good(patients[n % 2], n) for n in range(10)]
        await produce(kafka_broker.bootstrap, topic, records, partition_of=on_partition(p))

    registry = CollectorRegistry()
    worker = LedgerWorker(
        ledger_at(pg_database),
        bootstrap=kafka_broker.bootstrap,
        group_id=group,
        metrics=WorkerMetrics.create(registry),
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        batch_max=4,
        session_timeout_ms=3000,
        log_behind_grace_s=0.5,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    caplog.set_level(logging.ERROR, logger="consumers.worker")
    try:
        async with asyncio.timeout(30):
            while not (worker.fenced and stored_positions(ledger.store, topic, 2)[1] == 9):
                await asyncio.sleep(0.05)
        # The new log grows past the stored position: still nothing of it is applied.
        more = [good("fenced-a", n) for n in range(10, 10 + STORED + 20)]
        await produce(kafka_broker.bootstrap, topic, more, partition_of=on_partition(0))
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await run

    assert set(worker.fenced) == {TopicPartition(topic, 0)}
    assert stored_positions(ledger.store, topic, 2) == {0: STORED, 1: 9}
    assert all(ledger.balance("clinic-default", p) is None for p in on[0])
    assert all(ledger.balance("clinic-default", p) is not None for p in on[1])
    lag = registry.get_sample_value(
        "careledger_consumer_lag_records", {"topic": topic, "partition": "0"}
    )
    assert lag == 10 - STORED - 1  # the log ends at 10; the stored position is 50
    assert any(
        r.levelno == logging.ERROR and "below the stored position 50" in r.getMessage()
        for r in caplog.records
    )
