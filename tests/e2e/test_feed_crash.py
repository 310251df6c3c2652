"""Kill -9 ``careledger feed`` mid-stream, restart it: every expected message id is on the
topic (a re-sent batch may repeat some; none is missing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.feed import FEED_POSITION
from producers.feed_messages import FACT_EVENTS, Holder, messages_of
from schemas.topics import LEDGER_TOPIC
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_feed_support import messages_on
from tests.integration.test_worker_support import wait_for
from tests.kafka_support import end_offsets

pytestmark = pytest.mark.e2e
PATIENTS = [f"feedcrash-{i:03d}" for i in range(200)]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _load(settings: Settings) -> None:
    """Visits enough to climb tiers, a redemption each: some 4,000 ledger facts."""
    ledger = build_ledger(settings)
    inputs = []
    for n in range(18):
        for i, patient in enumerate(PATIENTS):
            at = f"2026-0{1 + n % 9}-{1 + (n + i) % 27:02d}T10:00:00Z"
            body = cloudevent(
                "visit.completed",
                patient,
                at,
                {"visit_id": f"v{n}", "visit_type": "in_person"},
                id=f"{patient}-{n}",
            )
            inputs.append(Inbound(f"file:crash:{patient}:{n}", json.dumps(body).encode(), NOW))
    for patient in PATIENTS:
        data = {"redemption_id": "r1", "reward_id": "gift", "points": 150}
        body = cloudevent("redemption.requested", patient, "2026-10-01T10:00:00Z", data)
        inputs.append(Inbound(f"file:crash:{patient}:r", json.dumps(body).encode(), NOW))
    for start in range(0, len(inputs), 500):
        ledger.apply_batch(inputs[start : start + 500])


def _expected_ids(settings: Settings) -> set[str]:
    """Every message the ledger's facts make, through the feed's own mapping, in-process."""
    ledger = build_ledger(settings)
    store, holders, ids = ledger.store, {}, set()
    for notification in store.recorder.select_notifications(1, 1_000_000):
        event = store.mapper.to_domain_event(notification)
        if hasattr(event, "patient_id") and notification.originator_version == 1:
            holders[event.originator_id] = Holder(event.program_id, event.patient_id)
        elif isinstance(event, FACT_EVENTS):
            holder = holders[event.originator_id]
            ids |= {
                str(m.message.id)
                for m in messages_of(event, holder, ledger.programs, lambda e: None)
            }
    return ids


def _on_topic(bootstrap: str) -> int:
    return sum(asyncio.run(end_offsets(bootstrap, LEDGER_TOPIC)).values())


def _start_feed(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "feed"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_minus_nine_mid_stream_loses_nothing(pg_database: Database) -> None:
    settings = Settings(database_url=pg_database.url, database_schema=pg_database.schema)
    _load(settings)
    expected = _expected_ids(settings)
    assert len(expected) > 3000
    store = build_ledger(settings).store
    head = store.recorder.max_notification_id()
    with EmbeddedBroker() as broker:
        env = {
            **os.environ,
            **pg_database.env(),
            "CARELEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CARELEDGER_METRICS_PORT": "0",
            "CARELEDGER_FEED_BATCH_MAX": "40",
            "CARELEDGER_PARTITIONS": "3",
        }
        feed = _start_feed(env)
        try:
            wait_for(lambda: _on_topic(broker.bootstrap) >= len(expected) // 4, 120, "a quarter")
            feed.send_signal(signal.SIGKILL)
            feed.wait(10)
            position = store.position(FEED_POSITION) or 0
            assert position < (head or 0), "the kill came too late to test anything"
            feed = _start_feed(env)
            wait_for(lambda: store.position(FEED_POSITION) == head, 180, "the ledger's head")
            feed.send_signal(signal.SIGTERM)
            assert feed.wait(30) == 0, feed.stderr.read().decode()[-2000:] if feed.stderr else ""
        finally:
            if feed.poll() is None:
                feed.kill()
        on_topic = asyncio.run(messages_on(broker.bootstrap, LEDGER_TOPIC))
    sent = {str(message.id) for _, message in on_topic}
    assert expected <= sent, f"{len(expected - sent)} messages missing"
    assert sent <= expected, "a message the ledger's facts do not make"
