"""What the CLI, the demo and tests call: catch up, rebuild, or follow the ledger.

Each call opens the event store (for its mapper) and an async engine on the same database
from the settings it is given, and closes both when done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from careledger.settings import Settings
from careledger.store import open_store
from projections.database import connect
from projections.metrics import ProjectionMetrics
from projections.runner import ProjectionOptions, Projector
from projections.source import EventSource

DEFAULT_OPTIONS = ProjectionOptions()


@asynccontextmanager
async def open_projector(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Projector]:
    """A started projector on the settings' database; disposed of on exit."""
    store = await asyncio.to_thread(open_store, settings.database_url, settings.database_schema)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        source = EventSource(store, engine.dialect.name)
        projector = Projector(engine, source, ProjectionMetrics(registry), options)
        await projector.start()
        yield projector
    finally:
        await engine.dispose()
        store.close()


async def catch_up(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> int:
    """Bring every read model up to the ledger's head; returns the events applied."""
    async with open_projector(settings, options, registry) as projector:
        return await projector.catch_up()


async def rebuild(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> int:
    """Drop the read models and replay the ledger from its first event; returns events."""
    async with open_projector(settings, options, registry) as projector:
        return await projector.rebuild()


async def follow(
    settings: Settings,
    stop: asyncio.Event,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> None:
    """Follow the ledger until ``stop`` is set."""
    async with open_projector(settings, options, registry) as projector:
        await projector.follow(stop)
