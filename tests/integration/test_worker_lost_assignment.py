"""A partition revoked while the worker reads its stored position must not crash the worker.

Found by the chaos soak (bench/soak.py, seed 11): a worker SIGSTOPped past its session came
back, was assigned two partitions and, while ``seek_to_stored`` was still reading their
positions, lost them again (its session had expired: LeaveGroup). The positions it then
recorded named partitions no longer assigned, and the next fetch's fencing check asked the
consumer for their high watermark: aiokafka asserts "Partition is not assigned", and the
worker exited with status 1 in the middle of a rebalance.
"""

from __future__ import annotations

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


async def test_fencing_skips_a_partition_that_is_no_longer_assigned(
    kafka_broker: EmbeddedBroker, pg_database: Database
) -> None:
    topic = unique_name("lost")
    await create_topic(kafka_broker.bootstrap, topic, 2)
    worker = LedgerWorker(
        ledger_at(pg_database),
        bootstrap=kafka_broker.bootstrap,
        group_id=unique_name("group"),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        topic=topic,
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    await consumer.start()
    try:
        held, lost = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([held])
        await consumer.getmany(timeout_ms=200)  # (an idle consumer's stop() raises)
        worker._consumer = consumer
        worker.positions = {held: 4, lost: 7}  # ``lost`` was revoked after its position read

        worker._fence_partitions_behind({})

        assert not worker.fenced  # neither fenced nor crashed: the next assignment seeks again
    finally:
        await consumer.stop()
