"""A partition revoked while the worker reads its stored position must not crash the worker.

Found by the chaos soak (bench/soak.py), twice, each time after a worker SIGSTOPped past its
session came back:
- seed 11: it was assigned two partitions and lost them again while ``seek_to_stored`` read
  their positions; the positions it then recorded named partitions no longer assigned, and the
  next fetch's fencing check asked aiokafka for their high watermark ("Partition is not
  assigned", an AssertionError);
- seed 3: its stale batch hit a PositionConflict, and the ``seek_to_stored`` that follows
  sought a partition the revocation had just taken (IllegalStateError "No current assignment").
Either way the worker exited with status 1 in the middle of a rebalance.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker
from tests.conftest import Database
from tests.integration.test_worker_support import ledger_at
from tests.kafka_support import create_topic, unique_name

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def holding_one_of_two(
    broker: EmbeddedBroker, db: Database
) -> AsyncIterator[tuple[LedgerWorker, TopicPartition, TopicPartition]]:
    """A worker whose consumer holds partition 0 of a new topic but not partition 1."""
    topic = unique_name("lost")
    await create_topic(broker.bootstrap, topic, 2)
    worker = LedgerWorker(
        ledger_at(db),
        bootstrap=broker.bootstrap,
        group_id=unique_name("group"),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        topic=topic,
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        held, lost = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([held])
        await consumer.getmany(timeout_ms=200)  # (an idle consumer's stop() raises)
        worker._consumer = consumer
        yield worker, held, lost
    finally:
        await consumer.stop()


async def test_fencing_skips_a_partition_that_is_no_longer_assigned(
    kafka_broker: EmbeddedBroker, pg_database: Database
) -> None:
    async with holding_one_of_two(kafka_broker, pg_database) as (worker, held, lost):
        worker.positions = {held: 4, lost: 7}  # ``lost`` was revoked after its position read

        worker._fence_partitions_behind({})

        assert not worker.fenced  # neither fenced nor crashed: the next assignment seeks again


async def test_seeking_skips_a_partition_revoked_meanwhile(
    kafka_broker: EmbeddedBroker, pg_database: Database
) -> None:
    async with holding_one_of_two(kafka_broker, pg_database) as (worker, held, lost):
        worker.positions = {held: 4, lost: 7}

        await worker.seek_to_stored([held, lost])

        assert worker.positions == {held: -1}  # nothing stored yet: from the start
