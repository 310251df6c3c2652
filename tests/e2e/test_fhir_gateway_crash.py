"""Kill -9 the FHIR gateway mid-stream, restart it: every mapped resource arrives downstream.

Outputs are acknowledged before the input offsets commit (ADR 0012), so a crash can repeat
interactions (the same CloudEvent id: a duplicate for the ledger) but never lose one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest

from careledger.adapters.broker import EmbeddedBroker
from producers.fhir.mapping import Mapped
from schemas.topics import FHIR_DLQ_TOPIC, FHIR_TOPIC, INTERACTIONS_TOPIC
from tests.fhir_support import KEY, SOURCE, raw, resource, translator
from tests.integration.test_worker_support import Record, produce, read_topic, wait_for
from tests.kafka_support import create_topic, end_offsets

pytestmark = pytest.mark.e2e
PATIENTS = 60
ROUNDS = 20


def _resources() -> list[Record]:
    """Encounters, Immunizations and step Observations, some in Bundles, for many patients."""
    out = []
    for n in range(ROUNDS):
        for p in range(PATIENTS):
            subject = {"reference": f"Patient/crash-{p}"}
            day = f"2025-0{1 + n % 6}-{1 + (n + p) % 28:02d}"
            visit = resource("encounter-emer", id=f"enc-{n}-{p}", subject=subject)
            visit["period"] = {"end": f"{day}T10:00:00Z"}
            steps = resource(
                "observation-steps",
                id=f"obs-{n}-{p}",
                subject=subject,
                effectiveDateTime=f"{day}T20:00:00Z",
            )
            if p % 3 == 0:
                bundle = {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": visit}, {"resource": steps}],
                }
                out.append(Record(f"p{p}", raw(bundle)))
            else:
                out.append(Record(f"p{p}", raw(visit)))
                out.append(Record(f"p{p}", raw(steps)))
    return out


def _expected_ids(records: list[Record]) -> set[str]:
    t = translator()
    now = datetime.now(UTC)
    ids = set()
    for r in records:
        for outcome in t.translate(r.value, now):
            assert isinstance(outcome, Mapped)
            ids.add(orjson.loads(outcome.value)["id"])
    return ids


def _published(bootstrap: str) -> int:
    return sum(asyncio.run(end_offsets(bootstrap, INTERACTIONS_TOPIC)).values())


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "fhir-gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_minus_nine_mid_stream_loses_nothing() -> None:
    records = _resources()
    expected = _expected_ids(records)
    with EmbeddedBroker() as broker:
        for topic in (FHIR_TOPIC, INTERACTIONS_TOPIC, FHIR_DLQ_TOPIC):
            asyncio.run(create_topic(broker.bootstrap, topic, 3))
        asyncio.run(produce(broker.bootstrap, FHIR_TOPIC, records))
        env = {
            **os.environ,
            "CARELEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CARELEDGER_PARTITIONS": "3",
            "CARELEDGER_METRICS_PORT": "0",
            "CARELEDGER_BATCH_MAX": "20",
            "CARELEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "CARELEDGER_PSEUDONYM_KEY": KEY.decode(),
            "CARELEDGER_FHIR_SOURCE": SOURCE,
        }
        gateway = _start(env)
        try:
            wait_for(lambda: _published(broker.bootstrap) >= len(expected) // 4, 120, "a quarter")
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(10)
            logs = gateway.stderr.read() if gateway.stderr else b""
            assert _published(broker.bootstrap) < len(expected), "the kill came too late"
            gateway = _start(env)
            wait_for(lambda: _published(broker.bootstrap) >= len(expected), 180, "every output")
            gateway.send_signal(signal.SIGTERM)
            code = gateway.wait(30)
            logs += gateway.stderr.read() if gateway.stderr else b""
            assert code == 0, logs.decode()[-2000:]
        finally:
            if gateway.poll() is None:
                gateway.kill()
        out = asyncio.run(read_topic(broker.bootstrap, INTERACTIONS_TOPIC, len(expected)))
    assert KEY not in logs and b"crash-" not in logs  # no key, no patient reference
    arrived = {orjson.loads(r.value)["id"] for r in out}
    assert arrived == expected  # every mapped resource, maybe some twice, nothing else
