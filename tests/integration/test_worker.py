"""The Kafka worker against the embedded broker and real PostgreSQL: exactly-once effects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker
from tests.conftest import PG_URL, Database
from tests.events import cloudevent
from tests.integration.test_worker_support import PausableProxy, Record, produce, read_topic
from tests.kafka_support import create_topic, unique_name

pytestmark = pytest.mark.integration


def settings_for(db: Database) -> Settings:
    return Settings(database_url=db.url, database_schema=db.schema)


async def run_until(worker: LedgerWorker, done: Callable[[], bool], timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task


def visit(patient: str, n: int) -> bytes:
    return json.dumps(
        cloudevent(
            "visit.completed",
            patient,
            f"2026-03-{1 + n % 28:02d}T10:00:00Z",
            {"visit_id": f"v{n}", "visit_type": "in_person"},
            id=f"{patient}-{n}",
        )
    ).encode()


async def test_good_and_poison_messages(
    kafka_broker: EmbeddedBroker,
    pg_database: Database,
) -> None:
    topic, dlq, group = unique_name("interactions"), unique_name("dlq"), unique_name("group")
    await create_topic(kafka_broker.bootstrap, topic, 3)
    await create_topic(kafka_broker.bootstrap, dlq, 1)
    patients = [f"pt-{i}" for i in range(20)]
    records: list[Record] = []
    for n in range(10):
        for p in patients:
            records.append(Record(p, visit(p, n)))
        records.append(Record("pt-0", b"{not json"))
        records.append(
            Record(
                "pt-1",
                json.dumps(
                    cloudevent(
                        "review.submitted",
                        "pt-1",
                        "2026-03-01T00:00:00Z",
                        {"rating": 9},
                        id=f"bad-review-{n}",
                    )
                ).encode(),
            )
        )
    records.extend(records[:50])  # redelivered: 46 duplicate visits, 4 poison records again
    await produce(kafka_broker.bootstrap, topic, records)

    ledger = build_ledger(settings_for(pg_database))
    registry = CollectorRegistry()
    worker = LedgerWorker(
        ledger,
        bootstrap=kafka_broker.bootstrap,
        group_id=group,
        metrics=WorkerMetrics.create(registry),
        topic=topic,
        dlq_topic=dlq,
        batch_max=64,
        session_timeout_ms=6000,
    )

    def all_committed() -> bool:
        return sum(max(p, -1) + 1 for p in worker.positions.values()) == len(records)

    await run_until(worker, all_committed)
    for p in patients:
        balance = ledger.balance("clinic-default", p)
        assert balance is not None and balance.available == 1000, p

    dead = await read_topic(kafka_broker.bootstrap, dlq, 24)
    assert len(dead) == 24
    codes = sorted(dict(r.headers)["careledger.code"].decode() for r in dead)
    assert codes == ["invalid_field"] * 12 + ["not_json"] * 12
    sample = dead[0]
    headers = dict(sample.headers)
    assert headers["careledger.origin.topic"].decode() == topic
    original = next(r.value for r in records if r.value == sample.value)
    assert sample.value == original  # the original bytes, untouched

    def count(outcome: str) -> float:
        return sum(
            s.value
            for metric in registry.collect()
            if metric.name == "careledger_messages"
            for s in metric.samples
            if s.name.endswith("_total") and s.labels["outcome"] == outcome
        )

    assert (count("accepted"), count("duplicate"), count("rejected")) == (200, 46, 24)
    # no patient id ever appears in a metric label
    labels = {v for m in registry.collect() for s in m.samples for v in s.labels.values()}
    assert not any(p in labels for p in patients)


async def test_a_worker_stops_while_the_database_is_away_during_an_assignment(
    kafka_broker: EmbeddedBroker,
    pg_database: Database,
) -> None:
    """The partition assignment retries reading the stored positions until PostgreSQL
    answers; a stop meanwhile must end it (leaving the partitions unread), not wait for the
    database to come back."""
    topic, dlq, group = unique_name("interactions"), unique_name("dlq"), unique_name("group")
    await create_topic(kafka_broker.bootstrap, topic, 2)
    await produce(kafka_broker.bootstrap, topic, [Record("pt-0", visit("pt-0", 0))])
    with PausableProxy(PG_URL) as proxy:
        settings = settings_for(pg_database).model_copy(update={"database_url": proxy.url})
        ledger = build_ledger(settings)
        proxy.pause()
        worker = LedgerWorker(
            ledger,
            bootstrap=kafka_broker.bootstrap,
            group_id=group,
            metrics=WorkerMetrics.create(CollectorRegistry()),
            topic=topic,
            dlq_topic=dlq,
            session_timeout_ms=6000,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        async with asyncio.timeout(30):
            while len(proxy.refused) < 2:  # the assignment is retrying
                await asyncio.sleep(0.05)
        stop.set()
        async with asyncio.timeout(30):  # (the database stays away)
            await running
        assert worker.positions == {}  # nothing was sought, so nothing will be applied
        # What `careledger worker` does next: closing the store ends the read still waiting
        # in its thread, which would otherwise hold up the process's exit.
        ledger.store.close()
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.shutdown_default_executor(), 45)  # (~100 s unclosed)
