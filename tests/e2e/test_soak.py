"""The chaos soak, three minutes of it, as part of the suite (issue 15).

One seed, run as a process exactly as ``python -m bench.soak`` runs locally: the verdict must
be a pass (every check of bench/soak_checks.py against the oracle), and the schedule must
really have injected every kind of fault, the traffic's own (duplicates, late redeliveries,
poison) included. A failure prints the soak's whole output: its seed and fault schedule
replay the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak_faults import KINDS
from bench.soak_processes import Cluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SEED = 11


def test_three_minute_soak_passes_with_every_fault(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bench.soak", "--seed", str(SEED), "--minutes", "3"),
            *("--logs", str(tmp_path / "logs")),  # kept by pytest: every process's log
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    summary = json.loads(run.stdout[run.stdout.rindex("\n{") + 1 :])
    assert summary["seed"] == SEED
    assert summary["verdict"] == "pass" and run.returncode == 0, output
    assert all(summary["checks"].values()), output

    kinds = set(KINDS) if Cluster.find_bin() else {k for k in KINDS if not k.startswith("pg_")}
    assert set(summary["faults_injected"]) == kinds, output
    assert summary["skipped_faults"] == sorted(set(KINDS) - kinds)
    traffic = summary["traffic_faults"]
    assert traffic["duplicate"] > 0 and traffic["late"] > 0 and traffic["poison"] > 0
    assert summary["duplicates_in_log"] > 0 and summary["refused"] > 0
    assert summary["records_in_log"] >= summary["offered"] == 150 * 180
