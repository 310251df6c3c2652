"""``projections run`` (follow the ledger, or ``--once``) and ``projections rebuild``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from concurrent.futures import Executor
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from careledger.application.programs import load_programs
from careledger.settings import Settings
from domain.program import Program
from projections.rebuilding import replay_processes
from projections.runner import ProjectionOptions
from projections.service import follow, open_projector, rebuild

log = logging.getLogger(__name__)
Programs = dict[str, Program]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("projections", help="the read models analysts query")
    commands = parser.add_subparsers(dest="projections_command", required=True)

    run = commands.add_parser("run", help="follow the ledger until SIGINT or SIGTERM")
    run.add_argument("--once", action="store_true", help="catch up to the head, then exit")
    _batch_size(run)
    run.set_defaults(handler=run_projections)

    rebuild = commands.add_parser("rebuild", help="replay the ledger into fresh read models")
    _batch_size(rebuild)
    workers = ProjectionOptions.rebuild_workers
    rebuild.add_argument(
        "--workers",
        type=_positive,
        default=workers,
        help=f"processes replaying the ledger, PostgreSQL only ({workers})",
    )
    rebuild.set_defaults(handler=rebuild_projections)


def _batch_size(parser: argparse.ArgumentParser) -> None:
    default = ProjectionOptions.batch_size
    parser.add_argument(
        "--batch-size", type=_positive, default=default, help=f"events per transaction ({default})"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _programs(settings: Settings) -> dict[str, Program]:
    """The programs the ledger runs: the partner tables value points by their point value."""
    return load_programs([settings.programs_dir] if settings.programs_dir else [])


def run_projections(args: argparse.Namespace, settings: Settings) -> int:
    options = ProjectionOptions(batch_size=args.batch_size)
    programs = _programs(settings)
    if args.once:
        return asyncio.run(_once(settings, options, programs))
    return asyncio.run(_follow(settings, options, programs))


def rebuild_projections(args: argparse.Namespace, settings: Settings) -> int:
    options = ProjectionOptions(batch_size=args.batch_size, rebuild_workers=args.workers)
    programs = _programs(settings)
    # forked here, before the store and the event loop start threads
    with replay_processes(options.rebuild_workers, settings.database_url) as pool:
        return asyncio.run(_rebuild(settings, options, pool, programs))


async def _once(settings: Settings, options: ProjectionOptions, programs: Programs) -> int:
    async with open_projector(settings, options, programs=programs) as projector:
        started = time.perf_counter()
        applied = await projector.catch_up()
        _summary(applied, projector.position, started)
    return 0


async def _rebuild(
    settings: Settings, options: ProjectionOptions, pool: Executor | None, programs: Programs
) -> int:
    started = time.perf_counter()
    rebuilt = await rebuild(settings, options, pool, programs)
    _summary(rebuilt.applied, rebuilt.position, started)
    return 0


def _summary(applied: int, position: int, started: float) -> None:
    """The last stdout line: events applied, the position reached, seconds it took."""
    seconds = round(time.perf_counter() - started, 3)
    print(json.dumps({"applied": applied, "position": position, "seconds": seconds}))


async def _follow(settings: Settings, options: ProjectionOptions, programs: Programs) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    registry = CollectorRegistry()
    server = None
    if settings.metrics_port:
        server, _ = start_http_server(settings.metrics_port, registry=registry)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    try:
        await follow(settings, stop, options, registry, programs)
    finally:
        if server is not None:
            server.shutdown()
    return 0
