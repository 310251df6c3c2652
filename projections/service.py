"""What the CLI, the demo and tests call: catch up, rebuild, or follow the ledger.

Each call opens the event store (for its mapper) and an async engine on the same database
from the settings it is given, and closes both when done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from careledger.settings import Settings
from careledger.store import open_store
from projections.database import connect
from projections.metrics import ProjectionMetrics
from projections.rebuilding import Rebuilt, Target
from projections.rebuilding import rebuild as rebuild_read_models
from projections.runner import READ_MODELS, ProjectionOptions, Projector
from projections.source import EventSource

DEFAULT_OPTIONS = ProjectionOptions()


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, EventSource]]:
    """An engine on the settings' database and the ledger's events as a source."""
    store = await asyncio.to_thread(open_store, settings.database_url, settings.database_schema)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        yield engine, EventSource.of(store, engine.dialect.name)
    finally:
        await engine.dispose()
        store.close()


@asynccontextmanager
async def open_projector(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Projector]:
    """A started projector on the settings' database; disposed of on exit."""
    async with _opened(settings) as (engine, source):
        projector = Projector(engine, source, ProjectionMetrics(registry), options)
        await projector.start()
        yield projector


async def catch_up(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> int:
    """Bring every read model up to the ledger's head; returns the events applied."""
    async with open_projector(settings, options, registry) as projector:
        return await projector.catch_up()


async def rebuild(
    settings: Settings, options: ProjectionOptions = DEFAULT_OPTIONS, pool: Executor | None = None
) -> Rebuilt:
    """Rebuild every read model from the ledger's first event (projections.rebuilding);
    ``pool``: worker processes from ``replay_processes``."""
    async with _opened(settings) as (engine, source):
        target = Target(
            settings.database_url,
            settings.database_schema,
            source.table,
            options.batch_size,
            options.account_cache,
        )
        return await rebuild_read_models(
            engine, source, target, options.rebuild_workers, READ_MODELS, pool
        )


async def follow(
    settings: Settings,
    stop: asyncio.Event,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> None:
    """Follow the ledger until ``stop`` is set."""
    async with open_projector(settings, options, registry) as projector:
        await projector.follow(stop)
