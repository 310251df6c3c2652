"""The seeded chaos soak: the whole ingest path under load and interleaved faults, checked
against an independent oracle (issue 15; docs/benchmarks.md "Chaos soak").

    python -m bench.soak --seed 7 --minutes 3 --rate 150

It starts a PostgreSQL cluster of its own (initdb/pg_ctl; without one it uses
``--database-url`` and skips the faults that need the server to be ours), the embedded broker,
two ``careledger worker`` processes and the projector (``careledger projections run``), offers
the seeded traffic of ``bench.soak_traffic`` at ``--rate`` records/s for ``--minutes`` while
``bench.soak_faults`` injects the seed's fault schedule, then drains and checks everything
``bench.soak_checks`` knows against ``bench.soak_oracle``. It prints the seed, the schedule,
the figures and the verdict, ends with a JSON summary, and exits 1 when a check fails. The
same seed offers the same bytes and the same schedule again.

Not included: the outbound feed and the FHIR gateway (each has its own crash test; neither
writes the ledger the oracle checks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.soak_checks import (
    Check,
    PositionSampler,
    Records,
    Verdict,
    check_dlq,
    check_ledger,
    check_positions,
    check_read_models,
)
from bench.soak_faults import KINDS, Fault, Nemesis, schedule
from bench.soak_kafka import Published, high_watermarks, publish, read_topic
from bench.soak_oracle import expect
from bench.soak_processes import ROOT, Child, Cluster, Supervisor
from bench.soak_traffic import Traffic
from careledger.adapters.broker import EmbeddedBroker
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.admin import ensure_topic
from schemas.topics import INTERACTIONS_DLQ_TOPIC, INTERACTIONS_TOPIC

PROGRAMS = ROOT / "bench" / "soak_programs"
SCHEMA = "soak"
SESSION_TIMEOUT_MS = 3000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="careledger chaos soak")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=150.0, help="records/s offered")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="used only when no private cluster can be started",
    )
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["verdict"] == "pass" else 1


def run(args: argparse.Namespace) -> dict[str, object]:
    seconds = args.minutes * 60
    cluster = Cluster() if Cluster.find_bin() else None
    kinds = KINDS if cluster else tuple(k for k in KINDS if not k.startswith("pg_"))
    faults = schedule(args.seed, seconds, args.workers, kinds)
    print(f"seed {args.seed}: {args.minutes} min at {args.rate:g} records/s", flush=True)
    if cluster is None:
        print("no PostgreSQL binaries to start a private cluster: pg faults skipped", flush=True)
    print("fault schedule:", flush=True)
    for fault in faults:
        print(f"  {fault.at_s:7.1f}s {fault.kind} {_detail(fault)}", flush=True)
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="careledger-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        if cluster:
            cluster.init()
        url = cluster.url if cluster else args.database_url
        schema = f"{SCHEMA}_{args.seed}_{os.getpid()}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        summary = _soak(args, seconds, faults, cluster, url, schema, log_dir)
        summary["skipped_faults"] = sorted(set(KINDS) - set(kinds))
        return summary
    finally:
        if cluster:
            cluster.destroy()
        if not args.logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def _detail(fault: Fault) -> str:
    if fault.kind.startswith("worker_"):
        return f"worker-{fault.target} hold {fault.hold_s}s"
    if fault.kind == "pg_restart":
        return f"-m {fault.mode} down {fault.hold_s}s"
    return f"hold {fault.hold_s}s" if fault.kind.endswith(("pause", "kill9")) else ""


def _env(url: str, schema: str, bootstrap: str, partitions: int) -> dict[str, str]:
    """The settings of every careledger child (read once by each, at its entry point)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CARELEDGER_DATABASE_URL": url,
        "CARELEDGER_DATABASE_SCHEMA": schema,
        "CARELEDGER_KAFKA_BOOTSTRAP": bootstrap,
        "CARELEDGER_PROGRAMS_DIR": str(PROGRAMS),
        "CARELEDGER_METRICS_PORT": "0",
        "CARELEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "CARELEDGER_BATCH_MAX": "200",
        "CARELEDGER_BATCH_WAIT_MS": "20",
        "CARELEDGER_PARTITIONS": str(partitions),
        "CARELEDGER_LOG_LEVEL": "INFO",
    }


@dataclass
class Observed:
    """What a run leaves behind for the checks."""

    ends: dict[int, int]
    log: Records
    dlq: Records
    statuses: dict[str, int | None]
    ran_s: float
    drain_s: float
    supervisor: Supervisor
    sampler: PositionSampler
    nemesis: Nemesis
    published: Published


def _soak(
    args: argparse.Namespace,
    seconds: float,
    faults: list[Fault],
    cluster: Cluster | None,
    url: str,
    schema: str,
    log_dir: Path,
) -> dict[str, object]:
    traffic = Traffic(args.seed, args.patients, args.rate)
    offers = traffic.offers(int(args.rate * seconds))
    with EmbeddedBroker() as broker:
        for topic in (INTERACTIONS_TOPIC, INTERACTIONS_DLQ_TOPIC):
            asyncio.run(ensure_topic(broker.bootstrap, topic, args.partitions))
        env = _env(url, schema, broker.bootstrap, args.partitions)
        workers = [Child(f"worker-{i}", ["worker"], env, log_dir) for i in range(args.workers)]
        projector = Child("projector", ["projections", "run"], env, log_dir)
        children = [*workers, projector]
        try:
            for child in children:
                child.start()
            started = time.monotonic()
            nemesis = Nemesis(faults, workers, projector, broker.pid, cluster, url, started)
            published = Published()
            with (
                Supervisor(children, started) as supervisor,
                PositionSampler(url, schema) as sampler,
            ):
                with nemesis:
                    asyncio.run(
                        publish(broker.bootstrap, INTERACTIONS_TOPIC, offers, args.rate, published)
                    )
                    nemesis.join(started + faults[-1].at_s + 120 - time.monotonic())
                ran_s = time.monotonic() - started
                drain_s = _drain(broker.bootstrap, sampler, args.partitions)
                statuses = {c.name: c.stop() for c in children}
            observed = Observed(
                asyncio.run(high_watermarks(broker.bootstrap, INTERACTIONS_TOPIC)),
                asyncio.run(read_topic(broker.bootstrap, INTERACTIONS_TOPIC)),
                asyncio.run(read_topic(broker.bootstrap, INTERACTIONS_DLQ_TOPIC)),
                statuses,
                ran_s,
                drain_s,
                supervisor,
                sampler,
                nemesis,
                published,
            )
        finally:
            for child in children:
                child.close()
    settings = Settings(database_url=url, database_schema=schema, programs_dir=PROGRAMS)
    return _judge(args, traffic, observed, settings, lambda: _rebuild(env))


def _judge(
    args: argparse.Namespace,
    traffic: Traffic,
    seen: Observed,
    settings: Settings,
    rebuild: Callable[[], None],
) -> dict[str, object]:
    """Run the oracle over the log the broker kept, check everything, print the verdict."""
    intents = {offer.value: offer.intent for offer in traffic.sent}
    logged = {p: [(r.offset, r.value) for r in records] for p, records in seen.log.items()}
    expected = expect(INTERACTIONS_TOPIC, logged, intents)
    verdict = Verdict()
    verdict.checks += check_positions(seen.sampler, INTERACTIONS_TOPIC, seen.ends)
    verdict.checks += check_ledger(build_ledger(settings), expected)
    verdict.checks += check_dlq(seen.dlq, expected)
    verdict.checks += check_read_models(settings, expected, rebuild)
    verdict.checks += _process_checks(seen, len(traffic.sent))
    for check in verdict.checks:
        print(f"{'PASS' if check.ok else 'FAIL'} {check.name}: {check.detail}", flush=True)
    for gone in seen.supervisor.exits:
        print(f"unplanned exit of {gone.name} at {gone.at_s}s ({gone.status}):\n{gone.tail}")
    redelivered = Counter(o.redelivery for o in traffic.sent if o.redelivery)
    poison = sum(1 for o in traffic.sent if o.intent.kind == "poison")
    return {
        "seed": args.seed,
        "minutes": args.minutes,
        "rate": args.rate,
        "patients": args.patients,
        "partitions": args.partitions,
        "workers": args.workers,
        "offered": seen.published.offered,
        "resent_by_publisher": seen.published.resent,
        "records_in_log": sum(len(v) for v in seen.log.values()),
        "ran_s": round(seen.ran_s, 1),
        "drain_s": round(seen.drain_s, 1),
        "applied": expected.applied,
        "duplicates_in_log": expected.duplicates,
        "refused": len(expected.refused),
        "refused_by_code": dict(Counter(expected.refused.values()).most_common()),
        "traffic_faults": {**redelivered, "poison": poison},
        "faults_injected": dict(Counter(i.fault.kind for i in seen.nemesis.done if i.ok)),
        "schedule": [i.summary() for i in seen.nemesis.done],
        "unplanned_exits": [f"{e.name}@{e.at_s}s:{e.status}" for e in seen.supervisor.exits],
        "exit_statuses": seen.statuses,
        "checks": {c.name: c.ok for c in verdict.checks},
        "verdict": "pass" if verdict.ok else "fail",
    }


def _drain(
    bootstrap: str, sampler: PositionSampler, partitions: int, timeout_s: float = 300
) -> float:
    """Wait until every partition's position is at its log's end and the projection at the
    ledger's head; the seconds it took (a drain that never ends is a failed check later)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            ends = asyncio.run(high_watermarks(bootstrap, INTERACTIONS_TOPIC))
            now = sampler.sample()
            head = _head(sampler)
        except (psycopg.Error, TimeoutError):
            time.sleep(1.0)
            continue
        kafka_done = all(
            now.get(f"kafka:{INTERACTIONS_TOPIC}:{p}", -1) == ends.get(p, 0) - 1
            for p in range(partitions)
        )
        projected = [v for k, v in now.items() if k.startswith("projection:")]
        if kafka_done and projected and all(v == head for v in projected):
            return time.monotonic() - began
        time.sleep(1.0)
    return time.monotonic() - began


def _head(sampler: PositionSampler) -> int:
    with psycopg.connect(sampler.url, connect_timeout=3) as conn:
        row = conn.execute(
            f'SELECT coalesce(max(notification_id), 0) FROM "{sampler.schema}".careledger_events'
        ).fetchone()
    return int(row[0]) if row else 0


def _rebuild(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "careledger.cli", "projections", "rebuild"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )


def _process_checks(seen: Observed, offers: int) -> list[Check]:
    errors = seen.nemesis.errors
    return [
        Check(
            "faults_injected",
            not errors,
            f"{len(seen.nemesis.done)} faults" + (f"; failed: {errors}" if errors else ""),
        ),
        Check(
            "no_unplanned_exits",
            not seen.supervisor.exits,
            ", ".join(f"{e.name}@{e.at_s}s" for e in seen.supervisor.exits),
        ),
        Check("clean_shutdown", all(s == 0 for s in seen.statuses.values()), str(seen.statuses)),
        Check(
            "every_offer_published",
            seen.published.offered == offers,
            f"{seen.published.offered} of {offers} offered, {seen.published.resent} resent",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
