"""The write path without the broker: ``Ledger.apply_batch`` in this process.

Run from the repository root (PostgreSQL at 127.0.0.1:5432, trust auth, database ``test``)::

    .venv/bin/python -m bench.bench_apply                  # 20,000 patients, ~200k events
    .venv/bin/python -m bench.bench_apply --profile out.prof

The bench_ingest backlog (the same simulated records) is applied in batches of 2,000 into a
fresh schema, positions included, as the worker would. Besides events/s it prints the CPU time
this process spent per event (what code changes move; wall time also moves with whatever
else the machine runs) and the share of it the garbage collector took, then the raw
``executemany`` ceiling of rows the size of the stored events, measured in the same run, and
the ratio to it. Compare two commits by running each from its own worktree, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking

from bench.bench_ingest import (
    PG,
    average_state_bytes,
    drop_schema,
    fresh_schema,
    raw_ceiling,
    simulated,
)
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.runtime import tune_garbage_collector
from careledger.settings import Settings


class GcClock:
    """CPU time spent inside the garbage collector, from its callbacks."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, 0.0
        self.collections = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.collections[info["generation"]] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description="careledger in-process write-path benchmark")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=34)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-max", type=int, default=2000)
    parser.add_argument("--database-url", default=PG)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the apply loop here")
    args = parser.parse_args()
    tune_garbage_collector()  # as every careledger process does
    received = datetime.now(UTC)
    records = simulated(args.patients, args.days, args.seed)
    inputs = [Inbound(f"kafka:bench:0:{n}", raw, received) for n, (_, raw) in enumerate(records)]
    schema = fresh_schema(args.database_url)
    settings = Settings(database_url=args.database_url, database_schema=schema)
    ledger = build_ledger(settings)

    def apply_all() -> None:
        for start in range(0, len(inputs), args.batch_max):
            batch = inputs[start : start + args.batch_max]
            ledger.apply_batch(batch, [Tracking("kafka:bench:0", start + len(batch) - 1)])

    clock = GcClock()
    gc.callbacks.append(clock)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(apply_all)
            profiler.dump_stats(args.profile)
        else:
            apply_all()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row_bytes = average_state_bytes(settings)
    finally:
        gc.callbacks.remove(clock)
        drop_schema(args.database_url, schema)
    ceiling = asyncio.run(raw_ceiling(args.database_url, 200_000, row_bytes, args.batch_max))
    rate = len(inputs) / wall
    results = {
        "events": len(inputs),
        "events_per_s": round(rate),
        "cpu_us_per_event": round(1e6 * cpu / len(inputs), 1),
        "gc_us_per_event": round(1e6 * clock.seconds / len(inputs), 1),
        "gc_collections": clock.collections,
        "stored_event_bytes": row_bytes,
        "raw_ceiling_rows_per_s": round(ceiling),
        "ratio_to_raw_ceiling": round(rate / ceiling, 3),
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
