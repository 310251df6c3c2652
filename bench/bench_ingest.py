"""Ingest benchmark: the Kafka worker against PostgreSQL, with two references.

Run from the repository root (PostgreSQL at 127.0.0.1:5432, trust auth, database ``test``)::

    .venv/bin/python bench/bench_ingest.py                 # 20,000 patients, ~200k events
    .venv/bin/python bench/bench_ingest.py --million       # + peak RSS at 1,000,000 patients

What it measures, all on this machine (broker, database and worker share it):

1. **Sustained throughput**: a realistic simulated backlog (``producers.simulator``) is
   published to the embedded broker, then one ``careledger worker`` process drains it. Events/s
   is counted from the worker's first commit to its last (start-up and group join excluded).
2. **Publish-to-commit latency** at a fixed offered load below capacity: p50/p99 of the
   worker's ``careledger_kafka_time_to_commit_seconds`` histogram (linear interpolation inside
   buckets), i.e. from the Kafka record timestamp (set when published) to the batch commit.
3. **Peak RSS** of the worker process (``VmHWM``); with ``--million``, after a pass over one
   million distinct patients (memory is bounded by ``CARELEDGER_AGGREGATE_CACHE_SIZE``).
4. **Raw ceiling**: asyncpg ``executemany`` of rows of the same size as the stored events,
   in transactions of the same batch size: what the database alone can take.
5. **Naive consumer**: one message, one aggregate save, one Kafka offset commit.
It prints every figure and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.admin import ensure_topic
from producers.simulator import simulate
from schemas.topics import INTERACTIONS_TOPIC

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_schema(url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def publish(
    bootstrap: str, topic: str, records: list[tuple[str | None, bytes]], rate: float = 0
) -> float:
    """Publish records (paced at ``rate``/s when given); returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for index, (key, value) in enumerate(records):
            if rate and index % 100 == 0:
                ahead = started + index / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, value, key=key.encode() if key else None))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def committed(settings: Settings, topic: str, partitions: int) -> int:
    store = build_ledger(settings).store
    return sum((store.position(f"kafka:{topic}:{p}") or -1) + 1 for p in range(partitions))


def vm_hwm_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


class WorkerProcess:
    """``careledger worker`` as a child process with its own metrics port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.metrics_port = free_port()
        env = {
            **env,
            "CARELEDGER_METRICS_PORT": str(self.metrics_port),
            "CARELEDGER_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "careledger.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_committed(
    settings: Settings, total: int, partitions: int, timeout: float
) -> tuple[float, float]:
    """Wait until ``total`` records are committed; returns (first commit, done) times."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = committed(settings, INTERACTIONS_TOPIC, partitions)
        now = time.monotonic()
        if done and first is None:
            first = now
        if done >= total:
            return first or now, now
        time.sleep(0.25)
    raise TimeoutError(f"only {done} of {total} records committed")


def simulated(patients: int, days: int, seed: int) -> list[tuple[str | None, bytes]]:
    start = (datetime.now(UTC) - timedelta(days=days + 2)).date()
    return [(e.key, e.payload) for e in simulate(patients, days, seed, start)]


def one_visit_each(patients: int) -> Iterator[tuple[str | None, bytes]]:
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for n in range(patients):
        subject = f"m-{n:07d}"
        yield (
            subject,
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": f"mv-{n}",
                    "source": "urn:bench:emr",
                    "type": "visit.completed",
                    "time": when,
                    "subject": subject,
                    "data": {"visit_id": f"v{n}", "visit_type": "in_person"},
                }
            ).encode(),
        )


async def raw_ceiling(url: str, rows: int, row_bytes: int, batch: int) -> float:
    """asyncpg executemany of equally sized rows in batched transactions: rows/s."""
    conn = await asyncpg.connect(url)
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(
            f"CREATE TABLE {table} (originator_id uuid, originator_version bigint, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        payload = os.urandom(row_bytes)
        data = [
            (uuid.uuid4(), 1, "domain.account:PatientAccount.PointsEarned", payload)
            for _ in range(rows)
        ]
        started = time.perf_counter()
        for start in range(0, rows, batch):
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                    "VALUES ($1, $2, $3, $4)",
                    data[start : start + batch],
                )
        return rows / (time.perf_counter() - started)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def naive_consumer(bootstrap: str, url: str, events: int) -> float:
    """One message, one aggregate save, one offset commit: events/s."""
    topic = f"naive-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, topic, 1)
    records = simulated(max(events // 8, 10), 30, 99)[:events]
    await publish(bootstrap, topic, records)
    schema = fresh_schema(url)
    ledger = build_ledger(Settings(database_url=url, database_schema=schema))
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    done, started = 0, time.perf_counter()
    try:
        while done < len(records):
            record = await consumer.getone()
            inbound = Inbound(f"naive:{record.offset}", record.value or b"", datetime.now(UTC))
            await asyncio.to_thread(ledger.apply_batch, [inbound])
            await consumer.commit({TopicPartition(topic, record.partition): record.offset + 1})
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        drop_schema(url, schema)


def main() -> int:
    parser = argparse.ArgumentParser(description="careledger ingest benchmark")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=34)  # ~205k events at 20k patients
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=PG)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-max", type=int, default=2000)
    parser.add_argument("--latency-rate", type=float, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--naive-events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 patients for RSS")
    args = parser.parse_args()
    url = args.database_url
    today = datetime.now(UTC).date().isoformat()
    results: dict[str, object] = {"date": today, "cpus": os.cpu_count()}

    records = simulated(args.patients, args.days, args.seed)
    results["events"] = len(records)
    results["patients"] = args.patients
    print(f"simulated {len(records):,} events for {args.patients:,} patients", flush=True)

    schema = fresh_schema(url)
    settings = Settings(database_url=url, database_schema=schema)
    try:
        with EmbeddedBroker() as broker:
            env = worker_env(url, schema, broker.bootstrap, args.batch_max)
            asyncio.run(ensure_topic(broker.bootstrap, INTERACTIONS_TOPIC, args.partitions))
            seconds = asyncio.run(publish(broker.bootstrap, INTERACTIONS_TOPIC, records))
            print(f"published in {seconds:.1f}s ({len(records) / seconds:,.0f}/s)", flush=True)
            workers = [WorkerProcess(env) for _ in range(args.workers)]
            try:
                first, done = wait_committed(settings, len(records), args.partitions, 1800)
                # the first commit already holds up to one batch: count from it
                rate = (len(records) - args.batch_max) / max(done - first, 1e-9)
                results["sustained_events_per_s"] = round(rate)
                print(f"worker drained the backlog: {rate:,.0f} events/s sustained", flush=True)

                name = "careledger_kafka_time_to_commit_seconds"
                urls = [w.metrics_url for w in workers]
                before = histogram_count(urls, name)
                paced = simulated(args.patients // 4, 3, args.seed + 1)
                paced = paced[: int(args.latency_rate * args.latency_seconds)]
                asyncio.run(publish(broker.bootstrap, INTERACTIONS_TOPIC, paced, args.latency_rate))
                wait_committed(settings, len(records) + len(paced), args.partitions, 600)
                p50, p99 = quantiles_since(urls, name, before, (0.5, 0.99))
                results["offered_events_per_s"] = args.latency_rate
                results["latency_p50_s"] = round(p50, 3)
                results["latency_p99_s"] = round(p99, 3)
                print(
                    f"publish->commit at {args.latency_rate:,.0f}/s offered: "
                    f"p50 {p50:.3f}s p99 {p99:.3f}s",
                    flush=True,
                )
                results["workers"] = args.workers
                results["rss_mib"] = max(round(vm_hwm_mib(w.process.pid), 1) for w in workers)
                print(f"worker peak RSS {results['rss_mib']} MiB", flush=True)
            finally:
                for w in workers:
                    w.stop()
            row_bytes = average_state_bytes(settings)
            naive = asyncio.run(naive_consumer(broker.bootstrap, url, args.naive_events))
            results["naive_events_per_s"] = round(naive)
            print(f"naive consumer: {naive:,.0f} events/s", flush=True)
    finally:
        drop_schema(url, schema)

    if args.million:
        results["rss_mib_1m_patients"] = million_patients_rss(url, args)

    ceiling = asyncio.run(raw_ceiling(url, 200_000, row_bytes, args.batch_max))
    results["raw_ceiling_rows_per_s"] = round(ceiling)
    results["stored_event_bytes"] = row_bytes
    sustained = float(rate)
    results["ratio_to_naive"] = round(sustained / naive, 1)
    results["ratio_to_raw_ceiling"] = round(sustained / ceiling, 3)
    print(f"raw ceiling: {ceiling:,.0f} rows/s of {row_bytes} bytes", flush=True)
    print(json.dumps(results, indent=2))
    return 0


def worker_env(url: str, schema: str, bootstrap: str, batch_max: int) -> dict[str, str]:
    return {
        **os.environ,
        "CARELEDGER_DATABASE_URL": url,
        "CARELEDGER_DATABASE_SCHEMA": schema,
        "CARELEDGER_KAFKA_BOOTSTRAP": bootstrap,
        "CARELEDGER_BATCH_MAX": str(batch_max),
    }


def million_patients_rss(url: str, args: argparse.Namespace) -> float:
    """Peak RSS of a worker after one visit each from 1,000,000 distinct patients."""
    schema = fresh_schema(url)
    settings = Settings(database_url=url, database_schema=schema)
    try:
        with EmbeddedBroker() as broker:
            asyncio.run(ensure_topic(broker.bootstrap, INTERACTIONS_TOPIC, args.partitions))
            million = list(one_visit_each(1_000_000))
            asyncio.run(publish(broker.bootstrap, INTERACTIONS_TOPIC, million))
            del million
            worker = WorkerProcess(worker_env(url, schema, broker.bootstrap, args.batch_max))
            try:
                wait_committed(settings, 1_000_000, args.partitions, 3600)
                rss = round(vm_hwm_mib(worker.process.pid), 1)
            finally:
                worker.stop()
    finally:
        drop_schema(url, schema)
    print(f"worker peak RSS after 1,000,000 patients: {rss} MiB", flush=True)
    return rss


def average_state_bytes(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            f'SELECT avg(length(state))::int FROM "{settings.database_schema}".careledger_events'
        ).fetchone()
    return int(row[0]) if row and row[0] else 500


def histogram_count(metrics_urls: list[str], name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts, summed over every worker."""
    counts: dict[float, float] = {}
    for url in metrics_urls:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for le, count in re.findall(rf'{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)', text):
            bound = float("inf") if le == "+Inf" else float(le)
            counts[bound] = counts.get(bound, 0.0) + float(count)
    return counts


def quantiles_since(
    metrics_url: list[str], name: str, before: dict[float, float], quantiles: tuple[float, ...]
) -> list[float]:
    now = histogram_count(metrics_url, name)
    buckets = sorted((le, now[le] - before.get(le, 0.0)) for le in now)
    total = buckets[-1][1]
    out = []
    for q in quantiles:
        target, previous_le, previous_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= target:
                share = (target - previous_count) / max(count - previous_count, 1e-9)
                out.append(
                    previous_le if le == float("inf") else previous_le + share * (le - previous_le)
                )
                break
            previous_le, previous_count = le, count
    return out


if __name__ == "__main__":
    sys.exit(main())
