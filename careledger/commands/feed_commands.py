"""``careledger feed``: publish the ledger's facts to ``careledger.ledger.v1`` (producers.feed)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import open_store
from careledger.application.programs import load_programs
from careledger.settings import Settings
from consumers.worker import install_signal_handlers
from producers.admin import ensure_topic
from producers.feed import FeedMetrics, FeedOptions, LedgerFeed
from projections.database import connect
from projections.source import CommitWatch
from schemas.topics import LEDGER_TOPIC

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    feed = subparsers.add_parser(
        "feed", help=f"publish the ledger's facts to {LEDGER_TOPIC} (at least once)"
    )
    feed.add_argument("--once", action="store_true", help="publish up to the head, then exit")
    feed.set_defaults(handler=run_feed)


@contextlib.asynccontextmanager
async def open_feed(
    settings: Settings, registry: CollectorRegistry | None = None, topic: str = LEDGER_TOPIC
) -> AsyncIterator[LedgerFeed]:
    """A started feed on the settings' ledger and broker (the topic created if missing)."""
    await ensure_topic(settings.kafka_bootstrap, topic, settings.partitions)
    # with the ledger's secret, so that sealed values read as the patients' ids (ADR 0015)
    store = await asyncio.to_thread(
        open_store,
        settings.database_url,
        settings.database_schema,
        keyring=KeyRing.of(settings.ledger_secret),
    )
    programs = load_programs([settings.programs_dir] if settings.programs_dir else [])
    feed = LedgerFeed(
        store,
        programs,
        bootstrap=settings.kafka_bootstrap,
        metrics=FeedMetrics.create(registry),
        options=FeedOptions(batch_max=settings.feed_batch_max),
        topic=topic,
    )
    try:
        async with feed:
            yield feed
    finally:
        store.close()


async def follow(settings: Settings, feed: LedgerFeed, stop: asyncio.Event) -> None:
    """Follow the ledger until ``stop``, woken by its commits on PostgreSQL."""
    engine = connect(settings.database_url, settings.database_schema)
    watch = CommitWatch(engine, getattr(feed.store.recorder, "channel_name", None))
    try:
        await feed.follow(stop, watch)
    finally:
        await watch.close()
        await engine.dispose()


def run_feed(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.kafka_bootstrap:
        print(
            "set CARELEDGER_KAFKA_BOOTSTRAP (start one with `careledger broker`)", file=sys.stderr
        )
        return 2
    registry = CollectorRegistry()
    if settings.metrics_port and not args.once:
        start_http_server(settings.metrics_port, registry=registry)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    return asyncio.run(_run(args.once, settings, registry))


async def _run(once: bool, settings: Settings, registry: CollectorRegistry) -> int:
    async with open_feed(settings, registry) as feed:
        if once:
            await feed.catch_up()
        else:
            stop = asyncio.Event()
            install_signal_handlers(stop)
            log.info("feed following the ledger from position %d", feed.position)
            await follow(settings, feed, stop)
            log.info("feed stopped at position %d", feed.position)
        print(json.dumps({"published": feed.published, "position": feed.position}))
    return 0
