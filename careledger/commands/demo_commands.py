"""``careledger demo``: the whole system on realistic traffic, in one command.

Starts the embedded broker (unless ``CARELEDGER_KAFKA_BOOTSTRAP`` is set), the worker, the
projector and the outbound feed in this process, streams a simulated period of clinic
traffic, waits until every record is committed, every read model is up to date and every
ledger fact is published, prints a summary read from the read models, writes the HTML
report, and stops everything it started. With ``--prometheus`` a local Prometheus server
scrapes it meanwhile, and it keeps serving until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import text

from careledger.adapters import prometheus_server as prom
from careledger.adapters.broker import EmbeddedBroker
from careledger.commands.demo_summary import DemoSummary, Retention12m, render
from careledger.commands.feed_commands import follow as follow_feed
from careledger.commands.feed_commands import open_feed
from careledger.commands.fhir_commands import DemoEmr, demo_emr
from careledger.commands.worker_commands import build_worker, prepare_topics
from careledger.report import Report, collect
from careledger.report import render as render_report
from careledger.settings import Settings
from consumers.worker import LedgerWorker
from producers.habits import POPULATIONS
from producers.profiles import PROFILES, profile_for
from producers.publisher import InteractionPublisher
from producers.simulator import SimulatedEvent, simulate
from projections.database import connect
from projections.service import open_projector
from projections.views import select_view

DEFAULT_REPORT = Path(".careledger") / "report.html"
# 13 months: the 12-month retention compares the last 12 with the ones before, so the first
# simulated month is the base every later month is measured against.
DEFAULT_DAYS = 400
QUIET_LEVEL = logging.WARNING  # the console level unless --verbose or CARELEDGER_LOG_LEVEL
PIPED_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run the whole system on simulated traffic")
    demo.add_argument("--patients", type=int, default=2000)
    demo.add_argument("--days", type=int, default=DEFAULT_DAYS)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument(
        "--churn",
        choices=sorted(POPULATIONS),
        default="default",
        help="heavy: nearly every patient leaves within weeks (retention below 20 %%)",
    )
    demo.add_argument(
        "--program",
        choices=sorted(PROFILES),
        default="clinic-default",
        help="whose patients to simulate (default clinic-default)",
    )
    demo.add_argument(
        "--payers",
        action="store_true",
        help="simulate a US payer mix (payer classes, coverage changes) so the program's payer "
        "rules decide some redemptions and referrals (clinic-default; off: the usual traffic)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--report", type=Path, default=DEFAULT_REPORT, metavar="FILE", help="the HTML report"
    )
    demo.add_argument(
        "--prometheus",
        action="store_true",
        help="run a local Prometheus server scraping the demo (implies --hold)",
    )
    demo.add_argument(
        "--hold",
        action="store_true",
        help="after the summary, keep serving /metrics until Ctrl-C or SIGTERM",
    )
    demo.add_argument(
        "--verbose", action="store_true", help="log at CARELEDGER_LOG_LEVEL (INFO) on the console"
    )
    demo.add_argument(
        "--fhir",
        action="store_true",
        help="send a quarter of the patients' clinical events as FHIR R4 through the gateway",
    )
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    _console_logging(args.verbose, settings)
    try:
        profile_for(args.program, args.payers)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    with contextlib.ExitStack() as stack:
        metrics_at = _serve_metrics(settings, registry, stack)
        prometheus = _start_prometheus(settings, metrics_at, stack) if args.prometheus else None
        with contextlib.ExitStack() as services:
            if not settings.kafka_bootstrap:
                broker = services.enter_context(EmbeddedBroker())
                settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
                _say(f"embedded broker on {broker.bootstrap}")
            _say(f"ledger database: {settings.database_url}")
            summary = asyncio.run(_demo(args, settings, registry))
        summary.machine["metrics"] = metrics_at or "off (CARELEDGER_METRICS_PORT=0 or port busy)"
        report_path = _write_report(args.report, summary.report)
        if args.json:
            print(json.dumps(summary.machine, indent=2, default=str), flush=True)
        else:
            print(render(summary), flush=True)
            print(f"metrics: {summary.machine['metrics']}", flush=True)
        _say(f"HTML report: {report_path}")
        if prometheus:
            _say(f"Prometheus: {prometheus}/graph (alerts: {prometheus}/alerts)")
        if (args.hold or args.prometheus) and metrics_at:
            _hold(metrics_at)
    return 0


def _console_logging(verbose: bool, settings: Settings) -> None:
    """aiokafka's group-coordinator INFO lines drown the progress line: the demo logs only
    warnings unless asked (``--verbose``, or ``CARELEDGER_LOG_LEVEL`` set explicitly)."""
    if verbose or "log_level" in settings.model_fields_set:
        logging.getLogger().setLevel(settings.log_level.upper())
    else:
        logging.getLogger().setLevel(QUIET_LEVEL)


def _serve_metrics(
    settings: Settings, registry: CollectorRegistry, stack: contextlib.ExitStack
) -> str | None:
    if not settings.metrics_port:
        return None
    try:
        server, _ = start_http_server(settings.metrics_port, addr="127.0.0.1", registry=registry)
    except OSError:
        return None
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{settings.metrics_port}/metrics"


def _start_prometheus(
    settings: Settings, metrics_at: str | None, stack: contextlib.ExitStack
) -> str | None:
    """A Prometheus server scraping the demo every second, with the deployment's alert rules;
    its URL, or None (and why, on stderr) when it cannot run."""
    binary = prom.find_binary()
    if binary is None:
        _say(f"Prometheus is not installed; {prom.INSTALL_HINT}")
        return None
    if metrics_at is None:
        _say("Prometheus needs the demo's /metrics: set CARELEDGER_METRICS_PORT to a free port")
        return None
    target = prom.Target("careledger-demo", f"127.0.0.1:{settings.metrics_port}")
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="careledger-prom-")))
    port = 9090 if prom.port_is_free(9090) else prom.free_port()
    server = prom.PrometheusServer(
        binary, prom.config([target], prom.rules_files()), directory, port
    )
    try:
        stack.enter_context(server)
    except prom.PrometheusFailed as exc:
        _say(f"Prometheus did not start: {exc}")
        return None
    _say(f"Prometheus on {server.url}, scraping {metrics_at} every second")
    return server.url


async def _demo(
    args: argparse.Namespace, settings: Settings, registry: CollectorRegistry
) -> DemoSummary:
    await prepare_topics(settings)
    worker = build_worker(settings, registry)
    traffic = _Traffic(args.days)
    stop = asyncio.Event()
    async with (
        open_projector(settings, registry=registry) as projector,
        open_feed(settings, registry) as feed,
        demo_emr(settings, registry, stop, enabled=args.fhir) as emr,
    ):
        worker_task = asyncio.create_task(worker.run(stop))
        projector_task = asyncio.create_task(projector.follow(stop))
        feed_task = asyncio.create_task(follow_feed(settings, feed, stop))
        reporter = asyncio.create_task(_progress(worker, traffic, sys.stderr.isatty()))
        try:
            await _publish(args, settings, traffic, emr)
            await _wait_committed(worker, traffic.published + (await emr.settled() if emr else 0))
            await asyncio.to_thread(worker.ledger.relay_until_idle)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter  # ends the progress line before anything else is said
            stop.set()
            await asyncio.gather(worker_task, projector_task, feed_task)
        _say(f"all {traffic.published:,} records committed")
        # The same projector (and metrics): the retention gauge ends at the final figure.
        await projector.catch_up()
        await feed.catch_up()
        _say(f"feed: {feed.published:,} ledger facts published to {feed.topic}")
    summary = await _summary(args, settings, registry, traffic)
    summary.machine["feed_messages"] = feed.published
    if emr:
        summary.machine["fhir"] = emr.summary()
    return summary


@dataclass
class _Traffic:
    """What has been published so far, and how far into the simulated period it is."""

    days: int
    kinds: Counter[str] = field(default_factory=Counter)
    start: date | None = None
    latest: date | None = None
    done: bool = False

    @property
    def published(self) -> int:
        return sum(self.kinds.values())

    def expected(self) -> int:
        """The records the whole period will publish, judged by the simulated days so far."""
        if self.done or self.start is None or self.latest is None:
            return self.published
        covered = ((self.latest - self.start).days + 1) / self.days
        return max(self.published, round(self.published / min(max(covered, 1e-3), 1.0)))


def _records(args: argparse.Namespace, traffic: _Traffic) -> Iterator[tuple[str | None, bytes]]:
    start = (datetime.now(UTC) - timedelta(days=args.days + 1)).date()
    traffic.start = start
    profile = profile_for(args.program, args.payers)
    population = profile.populations[args.churn]
    event: SimulatedEvent
    for n, event in enumerate(
        simulate(args.patients, args.days, args.seed, start, population=population, profile=profile)
    ):
        traffic.kinds[event.kind] += 1
        if n % 512 == 0:
            traffic.latest = _event_day(event.payload) or traffic.latest
        yield event.key, event.payload
    traffic.done = True


def _event_day(payload: bytes) -> date | None:
    """The day of a record's ``time`` field, without parsing the whole record."""
    at = payload.find(b'"time":"')
    try:
        return date.fromisoformat(payload[at + 8 : at + 18].decode()) if at >= 0 else None
    except ValueError:
        return None


async def _progress(worker: LedgerWorker, traffic: _Traffic, terminal: bool) -> None:
    """Published, committed, commit rate and time left: one line rewritten in place on a
    terminal, a plain line every few seconds when piped."""
    started = time.monotonic()
    last_line = -PIPED_EVERY
    try:
        while True:
            await asyncio.sleep(1)
            elapsed = time.monotonic() - started
            done = _committed(worker)
            rate = done / max(elapsed, 1e-9)
            expected = traffic.expected()
            left = f"~{(expected - done) / rate:,.0f} s left" if rate > 0 else "starting"
            line = (
                f"published {traffic.published:>9,}  committed {done:>9,} of ~{expected:,}"
                f"  {rate:>7,.0f}/s  {left}"
            )
            if terminal:
                print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
            elif elapsed - last_line >= PIPED_EVERY:
                last_line = elapsed
                _say(line)
    finally:
        if terminal:
            print(file=sys.stderr, flush=True)


async def _publish(
    args: argparse.Namespace, settings: Settings, traffic: _Traffic, emr: DemoEmr | None = None
) -> None:
    async with InteractionPublisher(settings.kafka_bootstrap) as publisher:
        records = _as_async(_records(args, traffic))
        await publisher.send_raw_many_unvalidated(emr.divert(records) if emr else records)


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


async def _summary(
    args: argparse.Namespace, settings: Settings, registry: CollectorRegistry, traffic: _Traffic
) -> DemoSummary:
    machine = await _machine_summary(settings, registry)
    machine["published"] = dict(traffic.kinds)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select_view("program_retention_12m"))).all()
    finally:
        await engine.dispose()
    retention = [
        Retention12m(
            row.program_id,
            row.as_of_month,
            row.previous_patients,
            row.retained_patients,
            row.retention_rate,
        )
        for row in rows
    ]
    heading = (
        f"careledger demo: {args.patients:,} patients, {args.days} simulated days"
        f" (seed {args.seed}, {args.churn} churn, program {args.program})"
    )
    report = await collect(settings)
    return DemoSummary(heading, machine, report, retention)


async def _machine_summary(settings: Settings, registry: CollectorRegistry) -> dict[str, Any]:
    """What ``--json`` prints (unchanged since the first demo; tests read it)."""
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


def _write_report(path: Path, report: Report) -> Path:
    """The HTML report (``careledger report --html``'s page), written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(render_report(report), encoding="utf-8")
    os.replace(partial, path)
    return path.resolve()


def _hold(metrics_at: str) -> None:
    """Keep the metrics (and Prometheus) up until Ctrl-C or SIGTERM."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starting the demo in the background ignores it in the child.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    _say(f"holding: serving {metrics_at} until interrupted (Ctrl-C)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        _say("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
