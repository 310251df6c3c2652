"""`careledger demo` as a process: it completes, and its summary is what the read models hold."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_to_completion_and_agrees_with_the_read_models(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {
        **os.environ,
        "CARELEDGER_DATABASE_URL": f"sqlite:///{db}",
        "CARELEDGER_METRICS_PORT": "0",
    }
    env.pop("CARELEDGER_KAFKA_BOOTSTRAP", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "careledger.cli",
            "demo",
            "--patients",
            "60",
            "--days",
            "30",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    published, outcomes = summary["published"], summary["events_by_outcome"]
    assert sum(published.values()) == sum(outcomes.values()) > 500
    # exactly the malformed records are refused, and every refusal is a dead letter
    assert outcomes["rejected"] == published["malformed"] == summary["dead_letters"]
    assert outcomes["accepted"] == published["valid"]
    assert outcomes["duplicate"] == published["duplicate"]

    with sqlite3.connect(db) as conn:
        tiers = dict(conn.execute("SELECT tier, count(*) FROM balances GROUP BY tier").fetchall())
        kpis = conn.execute(
            "SELECT sum(interactions), sum(points_earned) FROM program_kpis_daily"
        ).fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert tiers == summary["tier_distribution"]
    assert sum(tiers.values()) >= 55  # simulated patients, plus referees they brought in
    assert list(kpis) == [summary["kpis"]["interactions"], summary["kpis"]["points_earned"]]
    assert kpis[0] == outcomes["accepted"]
    assert dead == summary["dead_letters"]
