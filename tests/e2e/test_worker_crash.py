"""Kill -9 the worker mid-ingest, restart it: every balance is what one clean pass gives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_worker_support import Record, committed_count, produce, wait_for
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
PATIENTS = [f"crash-{i:03d}" for i in range(300)]


def events() -> list[Record]:
    out = []
    for n in range(20):
        for i, p in enumerate(PATIENTS):
            day = 1 + (n * 7 + i) % 28
            if (n + i) % 3:
                body = cloudevent(
                    "visit.completed",
                    p,
                    f"2026-0{1 + n % 6}-{day:02d}T10:00:00Z",
                    {"visit_id": f"v{n}", "visit_type": "telehealth"},
                    id=f"{p}-{n}",
                )
            else:
                body = cloudevent(
                    "activity.reading",
                    p,
                    f"2026-0{1 + n % 6}-{day:02d}T22:00:00Z",
                    {
                        "metric": "steps",
                        "day": f"2026-0{1 + n % 6}-{day:02d}",
                        "value": 4000 + 700 * n,
                    },
                    id=f"{p}-{n}",
                )
            out.append(Record(p, json.dumps(body).encode()))
    return out


def committed(settings: Settings) -> int:
    return committed_count(build_ledger(settings).store, INTERACTIONS_TOPIC, 3)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_minus_nine_mid_ingest(pg_database: Database, tmp_path: Path) -> None:
    records = events()
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, 3))
        asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, records))
        settings = Settings(database_url=pg_database.url, database_schema=pg_database.schema)
        env = {
            **os.environ,
            **pg_database.env(),
            "CARELEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CARELEDGER_METRICS_PORT": "0",
            "CARELEDGER_BATCH_MAX": "150",
            "CARELEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000",
        }
        worker = start_worker(env)
        try:
            wait_for(lambda: committed(settings) >= len(records) // 4, 120, "a quarter")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            partial = committed(settings)
            assert partial < len(records), "the kill came too late to test anything"
            worker = start_worker(env)
            wait_for(lambda: committed(settings) == len(records), 180, "all records")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, (
                worker.stderr.read().decode()[-2000:] if worker.stderr else ""
            )
        finally:
            if worker.poll() is None:
                worker.kill()

    # One clean pass over the same records, through the same ledger code, elsewhere.
    clean = build_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'clean.db'}"))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    clean.apply_batch([Inbound(f"clean:{i}", r.value or b"", now) for i, r in enumerate(records)])
    crashed = build_ledger(settings)
    for patient in PATIENTS:
        assert crashed.balance("clinic-default", patient) == clean.balance(
            "clinic-default", patient
        ), patient
