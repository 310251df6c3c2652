"""The FHIR gateway against the embedded broker: resources in, interactions and dead letters out,
offsets committed only after the outputs, no PHI in any record or log line, and the ledger
worker applies what it publishes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from consumers.fhir_gateway import FhirGateway
from consumers.fhir_metrics import GatewayMetrics
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker
from schemas.validation import parse_interaction
from tests.fhir_support import NOW, PHI, all_resources, pseudonyms, raw, resource, translator
from tests.integration.test_worker_support import Record, headers_of, produce, read_topic
from tests.kafka_support import create_topic, unique_name

pytestmark = pytest.mark.integration


class Topics:
    def __init__(self) -> None:
        self.fhir = unique_name("fhir")
        self.out = unique_name("interactions")
        self.dlq = unique_name("fhir-dlq")
        self.group = unique_name("gateway")


async def _topics(bootstrap: str) -> Topics:
    topics = Topics()
    for name in (topics.fhir, topics.out, topics.dlq):
        await create_topic(bootstrap, name, 2)
    return topics


def _gateway(bootstrap: str, topics: Topics, registry: CollectorRegistry) -> FhirGateway:
    return FhirGateway(
        translator(),
        bootstrap=bootstrap,
        group_id=topics.group,
        metrics=GatewayMetrics.create(registry),
        batch_max=7,
        session_timeout_ms=2000,
        topic=topics.fhir,
        output_topic=topics.out,
        dlq_topic=topics.dlq,
        clock=lambda: NOW,
    )


async def _run_until(gateway: FhirGateway, consumed: int, timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while gateway.consumed < consumed:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def _committed(bootstrap: str, topics: Topics) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topics.fhir, p)) for p in (0, 1)}
    finally:
        await consumer.stop()


def _messages() -> list[Record]:
    # Every test resource once, the Bundles among them, in file order, keyed as an EMR might.
    return [Record(f"emr-{i}", raw(resource(name))) for i, name in enumerate(all_resources())]


def _expected() -> tuple[Counter[str], int]:
    mapped: Counter[str] = Counter()
    dead = 0
    t = translator()
    for record in _messages():
        for outcome in t.translate(record.value, NOW):
            kind = type(outcome).__name__
            if kind == "Mapped":
                mapped[outcome.event_type] += 1  # type: ignore[union-attr]
            dead += kind == "DeadLetter"
    return mapped, dead


async def test_resources_in_interactions_and_dead_letters_out(
    kafka_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bootstrap = kafka_broker.bootstrap
    topics = await _topics(bootstrap)
    messages = _messages()
    placed = await produce(bootstrap, topics.fhir, messages)
    caplog.clear()  # aiokafka logs what the test's (EMR's) producer sends at DEBUG
    registry = CollectorRegistry()
    gateway = _gateway(bootstrap, topics, registry)
    await _run_until(gateway, len(messages))

    mapped, dead = _expected()
    out = await read_topic(bootstrap, topics.out, sum(mapped.values()))
    letters = await read_topic(bootstrap, topics.dlq, dead)
    assert Counter(orjson.loads(r.value)["type"] for r in out) == mapped
    assert len(letters) == dead
    for record in out:
        event = parse_interaction(record.value, now=NOW)
        assert record.key == event.subject.encode()
    subjects = {r.key for r in out}
    assert subjects == {
        pseudonyms().subject("Patient/pat-5521").encode(),
        pseudonyms().subject("Patient/pat-7730").encode(),
    }
    for letter in letters:
        headers = headers_of(letter)
        assert letter.key is None
        assert headers["careledger.code"]
        assert headers["careledger.origin.topic"] == topics.fhir
        assert orjson.loads(letter.value)["reason"] == headers["careledger.code"]

    # Committed past every input, and only after the outputs above were acknowledged.
    ends = Counter(p.partition for p in placed)
    assert await _committed(bootstrap, topics) == {p: ends.get(p) for p in (0, 1)}

    everything = b"".join(
        (r.key or b"") + r.value + b"".join(k.encode() + v for k, v in r.headers)
        for r in [*out, *letters]
    ).decode()
    for phi in PHI:
        assert phi.lower() not in everything.lower(), phi
        assert phi.lower() not in caplog.text.lower(), phi

    assert registry.get_sample_value("careledger_fhir_messages_total") == len(messages)
    assert (
        registry.get_sample_value(
            "careledger_fhir_skipped_total", {"resource_type": "Patient", "reason": "unmapped_type"}
        )
        == 2
    )  # patient.json and the collection Bundle's Patient entry
    assert (
        registry.get_sample_value(
            "careledger_fhir_dead_letters_total",
            {"resource_type": "Encounter", "reason": "no_subject"},
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "careledger_fhir_mapped_total",
            {"resource_type": "Immunization", "type": "checkup.completed"},
        )
        == 3
    )  # immunization, immunization-date-only and the transaction Bundle's


async def test_a_restart_resumes_after_the_committed_offsets(kafka_broker: EmbeddedBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = await _topics(bootstrap)
    first = [Record("a", raw(resource("immunization")))]
    await produce(bootstrap, topics.fhir, first)
    await _run_until(_gateway(bootstrap, topics, CollectorRegistry()), 1)
    await produce(bootstrap, topics.fhir, [Record("b", raw(resource("observation-steps")))])
    again = _gateway(bootstrap, topics, CollectorRegistry())
    await _run_until(again, 1)
    out = await read_topic(bootstrap, topics.out, 2)
    assert sorted(orjson.loads(r.value)["type"] for r in out) == [
        "activity.reading",
        "checkup.completed",
    ]
    assert again.consumed == 1


async def test_the_ledger_worker_applies_what_the_gateway_publishes(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = await _topics(bootstrap)
    await create_topic(bootstrap, topics.out + ".dlq", 2)
    names = ["encounter-amb", "immunization", "observation-steps", "encounter-amb"]
    await produce(bootstrap, topics.fhir, [Record(n, raw(resource(n))) for n in names])
    await _run_until(_gateway(bootstrap, topics, CollectorRegistry()), len(names))

    ledger = build_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))
    worker = LedgerWorker(
        ledger,
        bootstrap=bootstrap,
        group_id=unique_name("worker"),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        topic=topics.out,
        dlq_topic=topics.out + ".dlq",
        session_timeout_ms=2000,
        clock=lambda: NOW,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while sum(p + 1 for p in worker.positions.values()) < len(names):
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    subject = pseudonyms().subject("Patient/pat-5521")
    assert ledger.statement("clinic-default", subject), "no statement line for the patient"
    balance = ledger.balance("clinic-default", subject)
    assert balance is not None and balance.lifetime_earned > 0
    # The repeated Encounter was one interaction: its twin is a duplicate, not a second visit.
    duplicates = [
        r
        for r in worker.metrics.messages.collect()[0].samples
        if r.labels.get("outcome") == "duplicate" and r.name.endswith("_total")
    ]
    assert sum(s.value for s in duplicates) == 1
