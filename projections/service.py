"""What the CLI, the demo and tests call: catch up, rebuild, or follow the ledger.

Each call opens the event store (for its mapper) and an async engine on the same database
from the settings it is given, and closes both when done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import open_store
from careledger.application.programs import load_programs
from careledger.settings import Settings
from domain.program import Program
from projections.changes import TierBenefits
from projections.database import ReadModelsOutdated, connect
from projections.metrics import ProjectionMetrics
from projections.rebuilding import Rebuilt, Target
from projections.rebuilding import rebuild as rebuild_read_models
from projections.runner import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    READ_MODELS_PROJECTION,
    ProjectionOptions,
    Projector,
)
from projections.source import EventSource, first_set

log = logging.getLogger(__name__)
DEFAULT_OPTIONS = ProjectionOptions()
Programs = Mapping[str, Program]


def point_values(programs: Programs) -> dict[str, Decimal | None]:
    """Each program's money per point, as its latest version says (None: not set)."""
    return {program_id: p.latest.point_value for program_id, p in sorted(programs.items())}


def tier_benefits(programs: Programs) -> TierBenefits:
    """Each program's tiers' benefit codes, as its latest version says."""
    return {
        program_id: {tier.name: frozenset(tier.benefits) for tier in p.latest.tiers}
        for program_id, p in sorted(programs.items())
    }


def _programs(settings: Settings, programs: Programs | None) -> Programs:
    """The programs given, else those the settings' ledger runs."""
    if programs is not None:
        return programs
    return load_programs([settings.programs_dir] if settings.programs_dir else [])


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, EventSource]]:
    """An engine on the settings' database and the ledger's events as a source."""
    store = await asyncio.to_thread(
        open_store,
        settings.database_url,
        settings.database_schema,
        keyring=KeyRing.of(settings.ledger_secret),  # to open sealed values (ADR 0015)
    )
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
    programs: Programs | None = None,
) -> AsyncIterator[Projector]:
    """A started projector on the settings' database (valuing partners' points by
    ``programs``, default the settings' ones); disposed of on exit."""
    loaded = _programs(settings, programs)
    values = point_values(loaded)
    async with _opened(settings) as (engine, source):
        metrics = ProjectionMetrics(registry)
        projector = Projector(
            engine,
            source,
            metrics,
            options,
            point_values=values,
            tier_benefits=tier_benefits(loaded),
        )
        await projector.start()
        yield projector


async def catch_up(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
    programs: Programs | None = None,
) -> int:
    """Bring every read model up to the ledger's head; returns the events applied."""
    async with open_projector(settings, options, registry, programs) as projector:
        return await projector.catch_up()


async def rebuild(
    settings: Settings,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    pool: Executor | None = None,
    programs: Programs | None = None,
) -> Rebuilt:
    """Rebuild every read model from the ledger's first event (projections.rebuilding);
    ``pool``: worker processes from ``replay_processes``."""
    loaded = _programs(settings, programs)
    values = point_values(loaded)
    async with _opened(settings) as (engine, source):
        target = Target(
            settings.database_url,
            settings.database_schema,
            source.table,
            options.batch_size,
            options.account_cache,
            tier_benefits(loaded),
            settings.ledger_secret,
        )
        return await rebuild_read_models(
            engine, source, target, options.rebuild_workers, READ_MODELS_PROJECTION, pool, values
        )


async def follow(
    settings: Settings,
    stop: asyncio.Event,
    options: ProjectionOptions = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
    programs: Programs | None = None,
) -> None:
    """Follow the ledger until ``stop`` is set.

    A start the database refuses (away, restarting, the connection cut) is retried with the
    follower's back-off, as a failed step is once following: a projector restarted during an
    outage waits for the database instead of exiting (found by the chaos soak). Read models
    of another version are not retried: :class:`ReadModelsOutdated` says to rebuild them.
    """
    async with AsyncExitStack() as stack:
        projector = await _started(stack, settings, options, registry, programs, stop)
        if projector is None:
            return  # stopped before the database came back
        log.info("projections following the ledger from position %d", projector.position)
        await projector.follow(stop)
        log.info("projections stopped at position %d", projector.position)


async def _started(
    stack: AsyncExitStack,
    settings: Settings,
    options: ProjectionOptions,
    registry: CollectorRegistry | None,
    programs: Programs | None,
    stop: asyncio.Event,
) -> Projector | None:
    backoff = FIRST_BACKOFF
    while not stop.is_set():
        try:
            return await stack.enter_async_context(
                open_projector(settings, options, registry, programs)
            )
        except ReadModelsOutdated:
            raise
        except Exception as exc:  # (only the type: a message may quote a value)
            log.warning(
                "projections could not start (%s); retrying in %.1fs", type(exc).__name__, backoff
            )
            await first_set(stop, timeout=backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
    return None
