"""``worker`` (the Kafka consumer that writes the ledger) and ``broker`` (the embedded one)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, start_http_server

from careledger.adapters.broker import run_foreground
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from consumers.metrics import WorkerMetrics
from consumers.schedule import MaintenanceSchedule
from consumers.worker import LedgerWorker, install_signal_handlers
from producers.admin import ensure_topic
from schemas.topics import INTERACTIONS_DLQ_TOPIC, INTERACTIONS_TOPIC

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser("worker", help="consume Kafka and write the ledger")
    worker.set_defaults(handler=run_worker)
    broker = subparsers.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(handler=lambda args, settings: run_foreground(args.port))


def build_worker(settings: Settings, registry: CollectorRegistry) -> LedgerWorker:
    """Wire a worker from settings (also used by ``careledger demo``)."""
    ledger = build_ledger(settings)
    override = ZoneInfo(settings.timezone) if settings.timezone else None
    zones = {pid: override or program.timezone for pid, program in ledger.programs.items()}
    schedule = MaintenanceSchedule(settings.maintenance_hour, zones)
    return LedgerWorker(
        ledger,
        bootstrap=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        metrics=WorkerMetrics.create(registry),
        schedule=schedule,
        batch_max=settings.batch_max,
        batch_wait_ms=settings.batch_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
    )


async def prepare_topics(settings: Settings) -> None:
    """Create the interactions topic and its dead-letter topic when they are missing."""
    for topic in (INTERACTIONS_TOPIC, INTERACTIONS_DLQ_TOPIC):
        await ensure_topic(settings.kafka_bootstrap, topic, settings.partitions)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.kafka_bootstrap:
        print(
            "set CARELEDGER_KAFKA_BOOTSTRAP (start one with `careledger broker`)", file=sys.stderr
        )
        return 2
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=registry)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    worker = build_worker(settings, registry)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await prepare_topics(settings)
        try:
            await worker.run(stop)
        finally:
            # A database call still waiting (PostgreSQL away) fails at once instead of
            # holding the exit until its retries run out (about 100 s, measured).
            worker.ledger.store.close()

    asyncio.run(main())
    return 0
