"""InteractionPublisher and ``careledger simulate`` against the embedded Kafka-protocol broker.

The session-wide ``kafka_broker`` fixture comes from tests/conftest.py (tests.kafka_support).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from careledger.adapters.broker import EmbeddedBroker
from careledger.cli import main
from producers.admin import ensure_topic
from producers.publisher import InteractionPublisher, PublishFailed, PublishRejected, RetryPolicy
from schemas.topics import INTERACTIONS_TOPIC
from tests.events import cloudevent
from tests.kafka_support import create_topic, end_offsets, unique_name

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def visits(patients: list[str], per_patient: int, tag: str) -> list[dict[str, object]]:
    """Interleaved visits of several patients, so order per key is tested across keys."""
    return [
        cloudevent(
            "visit.completed",
            patient,
            f"2026-02-{day + 1:02d}T10:00:00Z",
            {"visit_id": f"v-{tag}-{day}", "visit_type": "in_person"},
            id=f"{tag}-{patient}-{day}",
            source="urn:clinic:emr",
        )
        for day in range(per_patient)
        for patient in patients
    ]


@pytest.fixture
async def topic(kafka_broker: EmbeddedBroker) -> str:
    name = unique_name("interactions")
    await create_topic(kafka_broker.bootstrap, name, 4)
    return name


def publisher(broker: EmbeddedBroker, topic: str) -> InteractionPublisher:
    return InteractionPublisher(broker.bootstrap, topic=topic, clock=lambda: NOW)


async def read_all(bootstrap: str, topic: str, expected: int) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                records.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


async def test_published_events_are_keyed_by_patient_and_read_back_in_order(
    kafka_broker: EmbeddedBroker, topic: str
) -> None:
    patients = [f"p-{n:06d}" for n in range(1, 9)]
    events = visits(patients, 5, "order")
    async with publisher(kafka_broker, topic) as pub:
        assert await pub.publish_many(events) == len(events)

    records = await read_all(kafka_broker.bootstrap, topic, len(events))
    assert len(records) == len(events)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    order: dict[str, list[str]] = defaultdict(list)
    for record in records:
        body = json.loads(record.value)
        assert record.key == body["subject"].encode()
        assert record.value == orjson.dumps(body)  # the exact bytes the publisher sent
        assert dict(record.headers)["content-type"].startswith(b"application/cloudevents+json")
        partition_of[record.key].add(record.partition)
        order[body["subject"]].append(body["id"])
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({p for parts in partition_of.values() for p in parts}) > 1  # keys do spread
    for patient in patients:
        assert order[patient] == [f"order-{patient}-{day}" for day in range(5)]


async def test_publish_sends_bytes_as_given(kafka_broker: EmbeddedBroker, topic: str) -> None:
    raw = json.dumps(visits(["p-000001"], 1, "bytes")[0], indent=1).encode()
    async with publisher(kafka_broker, topic) as pub:
        await pub.publish(raw)
    (record,) = await read_all(kafka_broker.bootstrap, topic, 1)
    assert (record.key, record.value) == (b"p-000001", raw)


async def test_an_invalid_event_is_rejected_and_nothing_is_sent(
    kafka_broker: EmbeddedBroker, topic: str
) -> None:
    good = visits(["p-000001", "p-000002"], 2, "reject")
    bad = cloudevent("review.submitted", "p-000003", NOW, {"rating": 9, "comment": "text"})
    async with publisher(kafka_broker, topic) as pub:
        with pytest.raises(PublishRejected) as single:
            await pub.publish(bad)
        with pytest.raises(PublishRejected) as batch:
            await pub.publish_many([*good[:2], bad, *good[2:]])
        with pytest.raises(PublishRejected) as not_json:
            await pub.publish(b'{"specversion": "1.0",')
    assert single.value.code == "unknown_field"  # free text is the worst offence
    assert (batch.value.code, batch.value.index) == ("unknown_field", 2)
    assert not_json.value.code == "not_json"
    assert "text" not in str(single.value)  # reasons never quote values
    assert sum((await end_offsets(kafka_broker.bootstrap, topic)).values()) == 0


async def test_raw_unvalidated_sends_go_out_as_they_are(
    kafka_broker: EmbeddedBroker, topic: str
) -> None:
    async with publisher(kafka_broker, topic) as pub:
        await pub.send_raw_unvalidated(None, b"not json at all")
        assert await pub.send_raw_many_unvalidated([("p-000009", b"{}")] * 3) == 3
    records = await read_all(kafka_broker.bootstrap, topic, 4)
    assert sorted((r.key or b"", r.value) for r in records) == [
        (b"", b"not json at all"),
        *[(b"p-000009", b"{}")] * 3,
    ]


async def test_sends_to_a_stopped_broker_fail_clearly_after_bounded_retries() -> None:
    with EmbeddedBroker() as broker:
        name = unique_name("gone")
        await create_topic(broker.bootstrap, name, 1)
        pub = InteractionPublisher(
            broker.bootstrap,
            topic=name,
            clock=lambda: NOW,
            retry=RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.1),
            request_timeout_ms=1000,
        )
        async with pub:
            os.kill(broker.pid, signal.SIGKILL)  # a crash (Tansu may linger on SIGTERM)
            broker.stop()
            started = asyncio.get_running_loop().time()
            with pytest.raises(PublishFailed) as failed:
                await pub.publish(visits(["p-000001"], 1, "gone")[0])
    assert failed.value.attempts == 3
    assert asyncio.get_running_loop().time() - started < 15


async def test_ensure_topic_creates_once_with_the_asked_partitions(
    kafka_broker: EmbeddedBroker,
) -> None:
    name = unique_name("ensure")
    assert await ensure_topic(kafka_broker.bootstrap, name, 3) is True
    assert await ensure_topic(kafka_broker.bootstrap, name, 5) is False
    assert len(await end_offsets(kafka_broker.bootstrap, name)) == 3


@pytest.fixture
def broker_env(kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CARELEDGER_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    yield kafka_broker.bootstrap


def test_simulate_publishes_the_number_of_records_it_reports(
    broker_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Synchronous on purpose: the command runs its own event loop, as it does from a shell.
    before = asyncio.run(end_offsets(broker_env, INTERACTIONS_TOPIC))
    assert main(["simulate", "--patients", "50", "--days", "10"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = asyncio.run(end_offsets(broker_env, INTERACTIONS_TOPIC))

    assert summary["records"] > 100
    assert summary["sink"] == f"kafka:{INTERACTIONS_TOPIC}"
    assert sum(after.values()) - sum(before.values()) == summary["records"]
    if not before:  # we created it: with the configured partition count (default 6)
        assert len(after) == 6


async def test_admin_client_sees_no_topic_created_by_a_metadata_probe(
    kafka_broker: EmbeddedBroker,
) -> None:
    """end_offsets() above must not auto-create what it looks for (Tansu would)."""
    name = unique_name("absent")
    assert await end_offsets(kafka_broker.bootstrap, name) == {}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        assert name not in await admin.list_topics()
    finally:
        await admin.close()
