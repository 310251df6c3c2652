"""`careledger demo --program ID` as a process, for the programs beyond clinic-default: it
completes, the ledger accepts the program's traffic and refuses only the malformed records,
and the summary shows that program's tiers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TIERS = {
    "coalition-health": {"member"},
    "activity-motion": {"starter", "active", "champion"},
    "membership-plus": {"member", "plus", "premier"},
    "clinic-discounts": {"patient"},
}


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CARELEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "CARELEDGER_METRICS_PORT": "0",
    }
    env.pop("CARELEDGER_KAFKA_BOOTSTRAP", None)
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", "demo", "--patients", "50", "--days", "40", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("program", sorted(TIERS))
def test_demo_of_a_program_accepts_its_traffic(tmp_path: Path, program: str) -> None:
    proc = demo(tmp_path, "--program", program, "--json")

    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    published, outcomes = summary["published"], summary["events_by_outcome"]
    assert outcomes["accepted"] == published["valid"] > 0
    assert outcomes.get("rejected", 0) == published.get("malformed", 0) == summary["dead_letters"]
    assert set(summary["tier_distribution"]) <= TIERS[program]
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        programs = {row[0] for row in conn.execute("SELECT DISTINCT program_id FROM balances")}
    assert programs == {program}


def test_the_summary_names_the_program_and_its_tiers(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--program", "activity-motion")

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "program activity-motion" in proc.stdout
    assert "Program activity-motion" in proc.stdout
    assert "starter" in proc.stdout
