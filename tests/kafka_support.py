"""Kafka test support: a session-wide embedded broker and small admin/produce helpers.

Wire it into a conftest with ``from tests.kafka_support import kafka_broker``. Tansu keeps
everything in memory and one broker serves the whole session, so tests isolate themselves by
unique topic and group names (:func:`unique_name`) rather than by restarting the broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator, Mapping

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata

from careledger.adapters.broker import EmbeddedBroker

__all__ = ["create_topic", "end_offsets", "kafka_broker", "produce_json", "unique_name"]

JsonObject = Mapping[str, object]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the test session, on a free loopback port, stopped at the end."""
    with EmbeddedBroker() as broker:
        yield broker


def unique_name(prefix: str) -> str:
    """A topic or group name no other test in this session uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create ``name`` with ``partitions`` partitions; fail loudly if the broker refuses.

    Create topics explicitly: Tansu auto-creates an unknown topic with its default partition
    count as soon as any client asks for its metadata, which silently hides a wrong count.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="careledger-tests")
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    for topic, error_code, *message in response.topic_errors:  # v0 has no message field
        if error_code:
            raise RuntimeError(f"creating topic {topic!r} failed: {error_code} {message}")


async def produce_json(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[str, JsonObject]],
    *,
    partition: int | None = None,
) -> list[RecordMetadata]:
    """Send ``(key, value)`` pairs as UTF-8 key / JSON value with one producer; wait for all.

    Idempotence stays off because Tansu does not implement ``InitProducerId``. Sends are
    pipelined and awaited together, so per-key order is kept (one producer, one partition).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="careledger-tests",
        enable_idempotence=False,
        acks=1,
        linger_ms=5,
    )
    await producer.start()
    try:
        pending = [
            await producer.send(topic, orjson.dumps(value), key=key.encode(), partition=partition)
            for key, value in messages
        ]
        return list(await asyncio.gather(*pending))
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Per-partition log end offsets, from the high watermark Fetch responses carry.

    Not from ListOffsets: Tansu 0.6 answers ListOffsets(latest) with the last *batch's* base
    offset + 1 (tests/integration/test_publisher.py found it).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(20):
            while any(consumer.highwater(tp) is None for tp in partitions):
                await consumer.getmany(timeout_ms=200)
        return {tp.partition: consumer.highwater(tp) for tp in partitions}
    finally:
        await consumer.stop()
