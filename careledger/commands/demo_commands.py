"""``careledger demo``: the whole system on realistic traffic, in one command.

Starts the embedded broker (unless ``CARELEDGER_KAFKA_BOOTSTRAP`` is set), the worker and the
projector in this process, streams a simulated period of clinic traffic, waits until every
record is committed and every read model is up to date, prints a summary read from the read
models, and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import text

from careledger.broker import EmbeddedBroker
from careledger.commands.worker_commands import build_worker, prepare_topics
from careledger.settings import Settings
from consumers.worker import LedgerWorker
from producers.publisher import InteractionPublisher
from producers.simulator import SimulatedEvent, simulate
from projections.database import connect
from projections.service import catch_up, follow


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run the whole system on simulated traffic")
    demo.add_argument("--patients", type=int, default=2000)
    demo.add_argument("--days", type=int, default=365)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    with contextlib.ExitStack() as stack:
        if not settings.kafka_bootstrap:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
            _say(f"embedded broker on {broker.bootstrap}")
        _say(f"ledger database: {settings.database_url}")
        summary = asyncio.run(_demo(args, settings))
    print(json.dumps(summary, indent=2, default=str))
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    registry = CollectorRegistry()
    metrics_at = None
    if settings.metrics_port:
        with contextlib.suppress(OSError):
            start_http_server(settings.metrics_port, registry=registry)
            metrics_at = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    await prepare_topics(settings)
    worker = build_worker(settings, registry)
    stop = asyncio.Event()
    worker_task = asyncio.create_task(worker.run(stop))
    projector_task = asyncio.create_task(follow(settings, stop))
    kinds: Counter[str] = Counter()
    reporter = asyncio.create_task(_progress(worker, kinds))
    try:
        await _publish(args, settings, kinds)
        await _wait_committed(worker, sum(kinds.values()))
        await asyncio.to_thread(worker.ledger.relay_until_idle)
    finally:
        reporter.cancel()
        stop.set()
        await asyncio.gather(worker_task, projector_task)
    await catch_up(settings)
    summary = await _summary(settings, registry)
    summary["published"] = dict(kinds)
    summary["metrics"] = metrics_at or "off (CARELEDGER_METRICS_PORT=0 or port busy)"
    return summary


def _records(args: argparse.Namespace, kinds: Counter[str]) -> Iterator[tuple[str | None, bytes]]:
    start = (datetime.now(UTC) - timedelta(days=args.days + 1)).date()
    event: SimulatedEvent
    for event in simulate(args.patients, args.days, args.seed, start):
        kinds[event.kind] += 1
        yield event.key, event.payload


async def _progress(worker: LedgerWorker, kinds: Counter[str]) -> None:
    """A live line on stderr every second: published, committed, commit rate."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(1)
        done = _committed(worker)
        rate = done / max(time.monotonic() - started, 1e-9)
        _say(f"published {sum(kinds.values()):>8}  committed {done:>8}  ({rate:,.0f}/s)")


async def _publish(args: argparse.Namespace, settings: Settings, kinds: Counter[str]) -> None:
    async with InteractionPublisher(settings.kafka_bootstrap) as publisher:
        await publisher.send_raw_many_unvalidated(_as_async(_records(args, kinds)))


async def _as_async(
    records: Iterator[tuple[str | None, bytes]],
) -> AsyncIterator[tuple[str | None, bytes]]:
    for record in records:
        yield record
        await asyncio.sleep(0)


def _committed(worker: LedgerWorker) -> int:
    return sum(position + 1 for position in worker.positions.values())


async def _wait_committed(worker: LedgerWorker, total: int) -> None:
    while _committed(worker) < total:
        await asyncio.sleep(0.2)
    _say(f"all {total} records committed")


async def _summary(settings: Settings, registry: CollectorRegistry) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    for metric in registry.collect():
        if metric.name == "careledger_messages":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] += int(sample.value)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.connect() as conn:
            tiers: dict[str, int] = dict(
                (
                    await conn.execute(
                        text("SELECT tier, count(*) FROM balances GROUP BY tier ORDER BY tier")
                    )
                ).all()
            )
            cohorts = [
                dict(row._mapping)
                for row in await conn.execute(
                    text(
                        "SELECT program_id, cohort_month, month_offset, cohort_size,"
                        " active_patients, retention_rate FROM retention_cohorts"
                        " ORDER BY program_id, cohort_month, month_offset LIMIT 12"
                    )
                )
            ]
            kpis = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT sum(interactions) AS interactions,"
                            " sum(points_earned) AS points_earned,"
                            " sum(points_redeemed) AS points_redeemed,"
                            " sum(points_expired) AS points_expired FROM program_kpis_daily"
                        )
                    )
                )
                .one()
                ._mapping
            )
            dead = (await conn.execute(text("SELECT count(*) FROM dead_letters"))).scalar_one()
    finally:
        await engine.dispose()
    return {
        "events_by_outcome": dict(outcomes),
        "tier_distribution": tiers,
        "retention_cohorts_top": cohorts,
        "kpis": kpis,
        "dead_letters": dead,
    }


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
