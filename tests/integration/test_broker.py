"""The embedded broker, and the consumer pattern the ledger worker is built on, against Tansu.

The ledger keeps its Kafka positions in the database, in the same transaction as the ledger rows
(ADR 0004). These tests prove, on the real Kafka protocol, that a consumer whose rebalance
listener seeks every assigned partition to stored position + 1 receives exactly the records after
that position: after a restart (even when Kafka's own committed offset is ahead, as it is when
faust acks a record whose transaction failed) and after a rebalance that moves partitions
between live consumers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from careledger.adapters.broker import BrokerStartError, EmbeddedBroker
from tests.kafka_support import create_topic, produce_json, unique_name

pytestmark = pytest.mark.integration

# Tansu holds every group join for up to 3 s (about 1 s with 2 s sessions), and a member of
# generation 0 (Tansu's first) sends no LeaveGroup when it stops (aiokafka skips it for
# generation 0), so its group waits out that session. Short sessions keep both waits short.
GROUP_TIMEOUTS: Mapping[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
DEADLINE_S = 30.0

Records = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


@dataclass
class LedgerStandIn:
    """The database side: applied records and per-partition positions, changed together.

    ``apply`` is one "transaction": records at or below the stored position are skipped (a
    replay), anything else must be exactly position + 1, or the consumer has lost records.
    """

    positions: dict[int, int] = field(default_factory=dict)
    applied: list[int] = field(default_factory=list)
    skipped: int = 0

    def apply(self, records: Records, limit: int | None = None) -> None:
        for tp, batch in records.items():
            for record in batch:
                stored = self.positions.get(tp.partition, -1)
                if record.offset <= stored:
                    self.skipped += 1
                    continue
                if limit is not None and len(self.applied) >= limit:
                    return  # the transaction "failed": nothing after this point is stored
                assert record.offset == stored + 1, f"gap on {tp}: {stored} -> {record.offset}"
                assert record.value is not None
                self.applied.append(int(orjson.loads(record.value)["n"]))
                self.positions[tp.partition] = record.offset


@dataclass(frozen=True)
class Seek:
    """One seek a listener made on assignment: which partition, to which offset."""

    partition: int
    offset: int


class SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seek each assigned partition to its stored position + 1; finish the batch on revoke."""

    def __init__(self, consumer: AIOKafkaConsumer, ledger: LedgerStandIn) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self.in_flight = asyncio.Lock()
        self.assignments: list[set[Seek]] = []  # the seeks of each assignment, in order

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # aiokafka awaits this before rejoining: the batch being applied completes first.
        async with self.in_flight:
            pass

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        seeks = set()
        for tp in assigned:
            offset = self._ledger.positions.get(tp.partition, -1) + 1
            self._consumer.seek(tp, offset)
            seeks.add(Seek(tp.partition, offset))
        self.assignments.append(seeks)


class LedgerConsumer:
    """The worker loop in miniature: group member, seek on assign, batches, no Kafka commits."""

    def __init__(
        self, name: str, bootstrap: str, group: str, topic: str, ledger: LedgerStandIn
    ) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **GROUP_TIMEOUTS,
        )
        self.listener = SeekToStoredPositions(self.consumer, ledger)
        self.consumer.subscribe([topic], listener=self.listener)
        self._ledger = ledger

    async def apply_until(
        self, applied: int, *, limit: int | None = None, batch: int = 500
    ) -> None:
        """Poll and apply batches until the ledger holds ``applied`` records."""
        async with asyncio.timeout(DEADLINE_S):
            while len(self._ledger.applied) < applied:
                records = await self.consumer.getmany(timeout_ms=100, max_records=batch)
                async with self.listener.in_flight:  # the real worker awaits its database here
                    self._ledger.apply(records, limit)


async def produce_numbered(bootstrap: str, topic: str, first: int, last: int) -> None:
    """Records ``{"n": first..last}`` keyed by one of seven patients."""
    await produce_json(
        bootstrap, topic, [(f"patient-{n % 7}", {"n": n}) for n in range(first, last + 1)]
    )


def test_broker_answers_on_loopback(kafka_broker: EmbeddedBroker) -> None:
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert kafka_broker.is_running()


def test_second_broker_on_a_taken_port_fails_with_its_output(
    kafka_broker: EmbeddedBroker,
) -> None:
    with pytest.raises(BrokerStartError, match="AddrInUse"):
        EmbeddedBroker(kafka_broker.port).start()
    assert kafka_broker.is_running()


def test_stop_leaves_no_process_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), EmbeddedBroker() as broker:
        pid = broker.pid
        raise RuntimeError("boom")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_keyed_json_messages_keep_one_partition_and_order_per_key(
    kafka_broker: EmbeddedBroker,
) -> None:
    topic = unique_name("careledger.test.keyed")
    await create_topic(kafka_broker.bootstrap, topic, partitions=6)
    await produce_numbered(kafka_broker.bootstrap, topic, 1, 210)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=unique_name("keyed"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(topic) == set(range(6))
        seen: dict[str, list[tuple[int, int]]] = {}
        async with asyncio.timeout(DEADLINE_S):
            while sum(map(len, seen.values())) < 210:
                for tp, batch in (await consumer.getmany(timeout_ms=200)).items():
                    for record in batch:
                        assert record.key is not None and record.value is not None
                        n = int(orjson.loads(record.value)["n"])
                        seen.setdefault(record.key.decode(), []).append((tp.partition, n))
    finally:
        await consumer.stop()

    assert len(seen) == 7
    for key, entries in seen.items():
        assert len({partition for partition, _ in entries}) == 1, key
        numbers = [n for _, n in entries]
        assert numbers == sorted(numbers), key


async def test_restart_resumes_after_stored_position_even_when_kafka_is_ahead(
    kafka_broker: EmbeddedBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = unique_name("careledger.test.restart"), unique_name("restart")
    await create_topic(bootstrap, topic, partitions=1)
    await produce_numbered(bootstrap, topic, 1, 100)
    ledger = LedgerStandIn()

    first = LedgerConsumer("first", bootstrap, group, topic, ledger)
    await first.consumer.start()
    try:
        await first.apply_until(40, limit=40)
        # What faust does after a failed transaction: ack and commit past the stored position.
        await first.consumer.commit()
        kafka_committed = await first.consumer.committed(TopicPartition(topic, 0))
    finally:
        await first.consumer.stop()
    assert ledger.applied == list(range(1, 41))
    assert kafka_committed is not None and kafka_committed > 40

    second = LedgerConsumer("second", bootstrap, group, topic, ledger)
    await second.consumer.start()
    try:
        await second.apply_until(100)
    finally:
        await second.consumer.stop()

    assert second.listener.assignments == [{Seek(partition=0, offset=40)}]
    assert ledger.applied == list(range(1, 101))
    assert ledger.skipped == 0


async def test_rebalance_seeks_every_reassigned_partition_to_its_stored_position(
    kafka_broker: EmbeddedBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = unique_name("careledger.test.rebalance"), unique_name("rebalance")
    await create_topic(bootstrap, topic, partitions=4)
    await produce_numbered(bootstrap, topic, 1, 400)
    ledger = LedgerStandIn()

    a = LedgerConsumer("a", bootstrap, group, topic, ledger)
    b = LedgerConsumer("b", bootstrap, group, topic, ledger)
    await a.consumer.start()
    try:
        await a.apply_until(50, batch=10)
        await b.consumer.start()  # joins mid-stream: the group rebalances
        try:
            async with asyncio.timeout(DEADLINE_S):
                while len(a.listener.assignments) < 2 or not b.listener.assignments:
                    await asyncio.sleep(0.05)
            await asyncio.gather(a.apply_until(400, batch=10), b.apply_until(400, batch=10))
        finally:
            await b.consumer.stop()
    finally:
        await a.consumer.stop()

    # Every partition was applied contiguously (LedgerStandIn asserts no gaps) and nothing was
    # delivered twice: each consumer started each partition exactly at stored position + 1.
    assert sorted(ledger.applied) == list(range(1, 401))
    assert ledger.skipped == 0
    a_assigned, b_assigned = a.listener.assignments, b.listener.assignments
    assert {seek.offset for seek in a_assigned[0]} == {0}  # a alone, from the start
    a_after, b_after = a_assigned[1], b_assigned[0]  # the rebalance when b joined
    assert {s.partition for s in a_after}.isdisjoint({s.partition for s in b_after})
    after_rebalance = a_after | b_after
    assert {seek.partition for seek in after_rebalance} == set(range(4))
    assert any(seek.offset > 0 for seek in after_rebalance)  # mid-stream, not from the start
