"""A batch that fails, then outlives a rebalance, must not be retried for records lost.

Worker A fetches a batch while its database is down and retries it with backoff. Meanwhile B
joins, ends up with A's partition, commits a prefix of it (a poison record included) and
leaves again, so the partition comes back to A with a newer stored position. When the database
returns, A's retry must apply only what is above that position: retrying the stale batch whole
re-applies B's records, and the dead letter B already recorded (its id derives from the record's
origin) fails the batch on every attempt, wedging A on it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from careledger.adapters.store import LedgerStore, store_env
from careledger.application.ledger import Ledger
from careledger.application.programs import load_programs
from consumers.metrics import WorkerMetrics
from consumers.worker import LedgerWorker
from tests.conftest import PG_URL, Database
from tests.integration.test_worker_support import (
    PausableProxy,
    Record,
    accepted_in,
    assert_same_balances,
    clean_pass,
    dead_letter_origins,
    good,
    ledger_at,
    produce,
    stored_positions,
)
from tests.kafka_support import create_topic, unique_name

pytestmark = pytest.mark.integration
RECORDS = 40  # small enough to arrive in one producer batch, so A's first batch holds them all
PATIENTS = [f"revoked-{i}" for i in range(4)]


def quick_to_fail(db: Database, url: str) -> Ledger:
    """A ledger whose connection pool gives up after 1 s instead of 10 when the server is gone."""
    env = {**store_env(url, db.schema), "POSTGRES_CONNECT_TIMEOUT": "1"}
    return Ledger(LedgerStore(env=env), load_programs([]), cache_size=10_000)


def scenario() -> list[Record]:
    out = [good(PATIENTS[n % len(PATIENTS)], n) for n in range(RECORDS)]
    out[1] = Record(PATIENTS[1], json.dumps({"specversion": "1.0", "type": "nope"}).encode())
    return out


def worker(ledger: Ledger, bootstrap: str, topic: str, group: str, batch_max: int) -> LedgerWorker:
    return LedgerWorker(
        ledger,
        bootstrap=bootstrap,
        group_id=group,
        metrics=WorkerMetrics.create(CollectorRegistry()),
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        batch_max=batch_max,
        session_timeout_ms=3000,
    )


def retries(w: LedgerWorker) -> float:
    samples = (s for m in w.metrics.retries.collect() for s in m.samples)
    return sum(s.value for s in samples if s.name.endswith("_total"))


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.contextmanager
def cut_on_first_assignment(proxy: PausableProxy) -> Iterator[None]:
    """Take the database down the moment the first worker has read its positions and sought."""

    class Cut(logging.Handler):
        done = False

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("assigned ") and not self.done:
                self.done = True
                proxy.pause()

    handler = Cut()
    logger = logging.getLogger("consumers.worker")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


async def test_retry_after_rebalance_applies_only_what_is_still_ours(
    kafka_broker: EmbeddedBroker, pg_database: Database, tmp_path: Path
) -> None:
    topic, group = unique_name("revoked"), unique_name("group")
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await create_topic(kafka_broker.bootstrap, f"{topic}.dlq", 1)
    records = scenario()
    observer = ledger_at(pg_database)

    def committed() -> int:
        return stored_positions(observer.store, topic, 1)[0]

    with PausableProxy(PG_URL) as proxy, cut_on_first_assignment(proxy):
        a = worker(quick_to_fail(pg_database, proxy.url), kafka_broker.bootstrap, topic, group, 500)
        b = worker(ledger_at(pg_database), kafka_broker.bootstrap, topic, group, 5)
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        run_a = asyncio.create_task(a.run(stop_a))
        run_b = None
        try:
            await until(lambda: proxy.paused, 30, "A's assignment, and the database cut")
            await produce(kafka_broker.bootstrap, topic, records)
            await until(lambda: retries(a) > 0, 30, "A to fail its batch and retry it")

            run_b = asyncio.create_task(b.run(stop_b))
            await until(lambda: committed() >= 1, 30, "B to commit past the poison record")
            stop_b.set()
            await run_b
            assert 1 <= committed() < RECORDS - 1, "B committed a prefix of A's batch"

            proxy.resume()
            await until(lambda: committed() == RECORDS - 1, 30, "A to commit the rest")
        finally:
            proxy.resume()  # a worker stuck reading positions can only stop once they answer
            stop_a.set()
            stop_b.set()
            await asyncio.gather(run_a, *([run_b] if run_b else []), return_exceptions=True)

    clean = clean_pass(records, tmp_path / "clean.db")
    assert_same_balances(observer, clean.ledger, PATIENTS)
    assert accepted_in(observer, PATIENTS) == clean.count("accepted")
    assert dead_letter_origins(observer.store) == {f"kafka:{topic}:0:1": 1}
