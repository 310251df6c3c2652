"""The simulator's traffic through the real ledger (SQLite): the noise is the only refusal.

This is the claim that makes the simulator useful: every valid record is accepted (voids name
real earlier events, cancellations name accepted redemptions), every re-send is recognised as
a duplicate, and exactly the malformed records become dead letters.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from careledger.cli import main
from producers.simulator import simulate


def test_ledger_accepts_valid_dedupes_resends_and_refuses_only_malformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARELEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    path = tmp_path / "traffic.jsonl"
    argv = ["simulate", "--patients", "80", "--days", "90", "--seed", "3", "--start", "2026-01-01"]
    argv += ["--malformed-share", "0.02", "--duplicate-share", "0.03", "--output", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    kinds = Counter(e.kind for e in simulate(80, 90, 3, date(2026, 1, 1), 0.02, 0.03))

    assert main(["ingest", str(path)]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {
        "accepted": kinds["valid"],
        "duplicates": kinds["duplicate"],
        "rejected": kinds["malformed"],
    }
