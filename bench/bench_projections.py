"""Projection benchmark on PostgreSQL: rebuild speed, and freshness under a steady load.

    .venv/bin/python -m bench.bench_projections            # ~200k ledger events
    .venv/bin/python -m bench.bench_projections --patients 2000 --load-seconds 10   # quick

1. Builds a ledger in a fresh schema from the seeded workload of the projection tests
   (every interaction type, duplicates, refusals, referrals, quarterly maintenance).
2. Rebuilds the read models ``--rebuilds`` times (``careledger projections rebuild
   --workers``, as a process) and reports ledger entries (and events) per second of the
   rebuild's own wall time (from its summary line: interpreter start-up excluded, opening the
   store and the swap included).
3. Starts ``careledger projections run`` as a process, offers ``--rate`` events/s through
   ``Ledger.apply_batch`` (batches every 50 ms, each with one new "probe" patient), and
   measures publish-to-visible: from the ``apply_batch`` call to the probe's row appearing in
   ``balances`` (and, separately, from the ledger commit), after ``--warmup-seconds``.

Needs PostgreSQL at ``--database-url``; the schema is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from careledger.application.ledger import Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.runtime import tune_garbage_collector
from careledger.settings import Settings
from projections.runner import REBUILD_WORKERS
from tests.integration.test_projections_scale import (
    RECEIVED_AT,
    apply_workload,
    workload,
)

PROBE = "probe-"
TICK = 0.05  # seconds between offered batches


def main() -> None:
    args = parse_args()
    tune_garbage_collector()  # as the careledger CLI does for the ledger's own writes
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    settings = Settings(database_url=args.database_url, database_schema=schema, metrics_port=0)
    try:
        ledger = build_ledger(settings)
        report: dict[str, Any] = {"schema": schema, **build(ledger, args)}
        report["rebuild"] = [measure_rebuild(settings, args) for _ in range(args.rebuilds)]
        report["freshness"] = measure_freshness(ledger, settings, args)
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL"
    )
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--per-patient", type=int, default=8, help="mean interactions each")
    parser.add_argument("--rebuilds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20_000, help="projection batch size")
    parser.add_argument(
        "--workers", type=int, default=REBUILD_WORKERS, help="rebuild worker processes"
    )
    parser.add_argument("--rate", type=int, default=2000, help="offered events per second")
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="load offered but not measured"
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    return parser.parse_args()


def build(ledger: Ledger, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load = workload(seed=2026, patients=args.patients, per_patient=args.per_patient)
    inputs = apply_workload(ledger, load)
    seconds = time.perf_counter() - started
    events = ledger.store.recorder.max_notification_id() or 0
    print(f"ledger: {inputs} inputs -> {events} events in {seconds:.1f}s", file=sys.stderr)
    return {"inputs": inputs, "ledger_events": events, "build_seconds": round(seconds, 1)}


def measure_rebuild(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """``careledger projections rebuild`` in a process of its own, as an operator runs it."""
    started = time.perf_counter()
    command = ["rebuild", "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    done = subprocess.run(
        [sys.executable, "-m", "careledger.cli", "projections", *command],
        env=careledger_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    events, seconds = summary["applied"], summary["seconds"]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        entries = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]  # type: ignore[index]
    result = {
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "process_seconds": round(wall, 2),  # with interpreter start-up and store opening
        "events": events,
        "ledger_entries": entries,
        "entries_per_second": round(entries / seconds),
        "events_per_second": round(events / seconds),
    }
    print(f"rebuild: {result}", file=sys.stderr)
    return result


def measure_freshness(
    ledger: Ledger, settings: Settings, args: argparse.Namespace
) -> dict[str, Any]:
    projector = subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "projections", "run"],
        env=careledger_env(settings),
    )
    try:
        wait_caught_up(settings, ledger.store.recorder.max_notification_id() or 0)
        return offer_load(ledger, settings, args)
    finally:
        projector.terminate()
        projector.wait(timeout=60)


def careledger_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CARELEDGER_DATABASE_URL": settings.database_url,
        "CARELEDGER_DATABASE_SCHEMA": settings.database_schema,
        "CARELEDGER_METRICS_PORT": "0",
    }


def wait_caught_up(settings: Settings, head: int) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        for _ in range(6000):
            try:
                row = conn.execute("SELECT position FROM projection_positions").fetchone()
            except psycopg.errors.UndefinedTable:  # the projector has not created it yet
                row = None
            if row and row[0] >= head:
                return
            time.sleep(0.05)
    raise TimeoutError("the projector did not catch up")


def offer_load(ledger: Ledger, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    per_tick = max(1, round(args.rate * TICK) - 1)  # plus one probe per tick
    ticks = int(args.load_seconds / TICK)
    load = workload(
        seed=7,
        patients=per_tick * ticks // 3 + 100,
        per_patient=4,
        start=datetime(2025, 11, 1, tzinfo=UTC),
        end=datetime(2026, 10, 31, tzinfo=UTC),
        prefix="load",
    )
    raws = [e if isinstance(e, bytes) else json.dumps(e).encode() for _, e in load.events]
    assert len(raws) >= per_tick * ticks, "the load workload is too small"
    published: list[float] = []
    committed: list[float] = []
    visible: dict[int, float] = {}
    watcher = threading.Thread(target=watch, args=(settings, ticks, visible), daemon=True)
    watcher.start()
    started = time.perf_counter()
    for tick in range(ticks):
        time.sleep(max(0.0, started + tick * TICK - time.perf_counter()))
        batch = [
            Inbound(f"file:load:{tick}:{n}", raw, RECEIVED_AT)
            for n, raw in enumerate(raws[tick * per_tick : (tick + 1) * per_tick])
        ]
        batch.append(Inbound(f"file:load:{tick}:probe", probe(tick), RECEIVED_AT))
        published.append(time.perf_counter())
        ledger.apply_batch(batch)
        committed.append(time.perf_counter())
    offered = time.perf_counter() - started
    watcher.join(timeout=120)
    measured = range(int(args.warmup_seconds / TICK), ticks)
    from_publish = [visible[k] - published[k] for k in measured if k in visible]
    from_commit = [visible[k] - committed[k] for k in measured if k in visible]
    return {
        "offered_events_per_second": round(ticks * (per_tick + 1) / offered),
        "probes_measured": len(measured),
        "visible": len(from_publish),
        "publish_to_visible_ms": percentiles(from_publish),
        "commit_to_visible_ms": percentiles(from_commit),
    }


def probe(tick: int) -> bytes:
    event = {
        "specversion": "1.0",
        "id": f"probe-{tick}",
        "source": "urn:careledger:bench",
        "type": "visit.completed",
        "time": "2026-10-31T12:00:00Z",
        "subject": f"{PROBE}{tick:06d}",
        "data": {"visit_id": f"p{tick}", "visit_type": "in_person"},
    }
    return json.dumps(event).encode()


def watch(settings: Settings, probes: int, visible: dict[int, float]) -> None:
    """Poll ``balances`` every 2 ms; probe k's row appears after probe k-1's."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        deadline = time.perf_counter() + 600
        while len(visible) < probes and time.perf_counter() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM balances WHERE program_id = 'clinic-default' "
                "AND patient_id >= %s AND patient_id < %s",
                (PROBE, PROBE[:-1] + "."),
            ).fetchone()
            now = time.perf_counter()
            for k in range(len(visible), row[0] if row else 0):
                visible[k] = now
            time.sleep(0.002)


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    ms = {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(samples)}
    return {name: round(value * 1000, 1) for name, value in ms.items()}


if __name__ == "__main__":
    main()
