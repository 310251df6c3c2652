"""Erasure through the Kafka worker under load, with a kill -9 during it (ADR 0015): every
erasure is applied exactly once, redeliveries of the erased patients' old events are refused
``subject_erased``, later events start new accounts, and every balance is what one clean
pass through the same ledger code gives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from domain.account import PatientAccount
from domain.rejection import RejectedInput
from schemas.topics import INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_worker_support import Record, committed_count, produce, wait_for
from tests.kafka_support import create_topic

pytestmark = pytest.mark.e2e
SECRET = "worker-erasure-secret-0123456789abcdef-01"
PATIENTS = [f"wer-{i:03d}" for i in range(240)]
ERASED = PATIENTS[::8]  # 30 patients


def _visit(patient: str, n: int, day: int) -> Record:
    body = cloudevent(
        "visit.completed",
        patient,
        f"2026-03-{day:02d}T10:00:00Z",
        {"visit_id": f"v{n}", "visit_type": "telehealth"},
        id=f"{patient}-{n}",
    )
    return Record(patient, json.dumps(body).encode())


def _erase(patient: str) -> Record:
    body = cloudevent(
        "account.erasure_requested",
        patient,
        "2026-03-20T10:00:00Z",
        {"reason": "gdpr_art17"},
        id=f"{patient}-erase",
    )
    return Record(patient, json.dumps(body).encode())


def records() -> list[Record]:
    """Eight visits each; the erased patients' erasure in the middle of the load (after
    their fourth visit), then their eight visits again (a redelivery) and one new visit."""
    out = [_visit(p, n, 1 + n) for n in range(8) for p in PATIENTS]
    out[len(out) // 2 : len(out) // 2] = [_erase(p) for p in ERASED]
    out += [_visit(p, n, 1 + n) for n in range(8) for p in ERASED]
    out += [_visit(p, 100, 25) for p in ERASED]
    return out


def settings_of(db: Database) -> Settings:
    return Settings(database_url=db.url, database_schema=db.schema, ledger_secret=SECRET)


def committed(settings: Settings) -> int:
    return committed_count(build_ledger(settings).store, INTERACTIONS_TOPIC, 3)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def test_erasure_under_load_with_a_kill_minus_nine_is_applied_once(
    pg_database: Database, tmp_path: Path
) -> None:
    load = records()
    settings = settings_of(pg_database)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap, INTERACTIONS_TOPIC, 3))
        asyncio.run(produce(broker.bootstrap, INTERACTIONS_TOPIC, load))
        env = {
            **os.environ,
            **pg_database.env(),
            "CARELEDGER_LEDGER_SECRET": SECRET,
            "CARELEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CARELEDGER_METRICS_PORT": "0",
            "CARELEDGER_BATCH_MAX": "100",
            "CARELEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000",
        }
        build_ledger(settings)  # an empty store, marked sealed before the worker starts
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            # killed about when the erasures are being applied (they sit mid-load)
            wait_for(lambda: committed(settings) >= len(load) * 2 // 5, 180, "two fifths")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            assert committed(settings) < len(load), "the kill came too late to test anything"
            worker = start_worker(env, log)
            wait_for(
                lambda: committed(settings) == len(load),
                240,
                "all records",
                diagnose=lambda: log.read_text()[-3000:],
            )
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, log.read_text()[-3000:]
        finally:
            if worker.poll() is None:
                worker.kill()

    crashed = build_ledger(settings)
    store = crashed.store
    erasures = store.recorder.select_notifications(
        1, 10_000, topics=[get_topic(PatientAccount.AccountErased)]
    )
    assert len(erasures) == len(ERASED)  # once each, kill or no kill
    assert len({e.originator_id for e in erasures}) == len(ERASED)
    letters = store.recorder.select_notifications(
        1, 10_000, topics=[get_topic(RejectedInput.Recorded)]
    )
    codes = Counter(store.mapper.to_domain_event(n).code for n in letters)
    # visits 0-3 went to the erased account: their redeliveries are refused; visits 4-7 came
    # after the erasure and opened the new account, so theirs are duplicates there
    assert codes == {"subject_erased": 4 * len(ERASED)}

    # One clean pass over the same records, through the same (sealed) ledger code, elsewhere.
    clean = build_ledger(
        Settings(database_url=f"sqlite:///{tmp_path / 'clean.db'}", ledger_secret=SECRET)
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    clean.apply_batch([Inbound(f"clean:{i}", r.value or b"", now) for i, r in enumerate(load)])
    for patient in PATIENTS:
        balance = crashed.balance("clinic-default", patient)
        assert balance == clean.balance("clinic-default", patient), patient
        if patient in ERASED:  # a new account: the five visits after the erasure
            survivor = crashed.balance("clinic-default", PATIENTS[1])
            assert balance is not None and survivor is not None
            assert balance.lifetime_earned == balance.available > 0
            assert balance.lifetime_earned < survivor.lifetime_earned  # four visits forgotten
