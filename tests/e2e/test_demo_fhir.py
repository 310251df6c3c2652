"""`careledger demo --fhir` as a process: a share of the traffic goes through the FHIR gateway,
every resource becomes an interaction, and every record is committed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_with_fhir_maps_every_resource_and_commits_everything(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {
        **os.environ,
        "CARELEDGER_DATABASE_URL": f"sqlite:///{db}",
        "CARELEDGER_METRICS_PORT": "0",
    }
    for name in (
        "CARELEDGER_KAFKA_BOOTSTRAP",
        "CARELEDGER_PSEUDONYM_KEY",
        "CARELEDGER_FHIR_SOURCE",
    ):
        env.pop(name, None)
    argv = ["demo", "--fhir", "--patients", "60", "--days", "30", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "careledger.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    fhir, outcomes = summary["fhir"], summary["events_by_outcome"]
    assert fhir["resources"] > 50
    assert fhir["interactions"] == fhir["resources"]  # the simulated EMR writes only mappable
    published = sum(summary["published"].values())
    assert sum(outcomes.values()) == published  # one interaction per diverted record
    assert outcomes["rejected"] == summary["published"]["malformed"]
    with sqlite3.connect(db) as conn:
        sources = dict(
            conn.execute("SELECT source, count(*) FROM ledger_entries GROUP BY source").fetchall()
        )
    assert sources.get("urn:careledger:demo:emr", 0) > 0, sources
