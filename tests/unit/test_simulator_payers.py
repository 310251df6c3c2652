"""``careledger simulate --payers``: clinic-default's traffic with a US payer mix, through the
real ledger (SQLite). Payer classes and coverage changes appear, the payer rules refuse some
redemptions, no federal patient's year exceeds the cap, and the noise is still the only
refusal (the simulator never cancels a redemption the ledger refused)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from careledger.bootstrap import build_ledger
from careledger.cli import main
from careledger.settings import Settings
from producers.profiles import CLINIC_DEFAULT, profile_for
from producers.simulator import simulate

START = date(2025, 1, 1)


def test_only_clinic_default_has_a_payer_mix_and_it_is_opt_in() -> None:
    assert CLINIC_DEFAULT.payers is None
    assert profile_for("clinic-default", payers=True).payers is not None
    with pytest.raises(ValueError, match="coalition-health has no payer rules"):
        profile_for("coalition-health", payers=True)


def test_payer_traffic_is_decided_by_the_payer_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "ledger.db"
    monkeypatch.setenv("CARELEDGER_DATABASE_URL", f"sqlite:///{database}")
    path = tmp_path / "traffic.jsonl"
    argv = ["simulate", "--patients", "150", "--days", "300", "--seed", "5", "--payers"]
    argv += ["--start", START.isoformat(), "--output", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    profile = profile_for("clinic-default", payers=True)
    events = list(simulate(150, 300, 5, START, profile=profile))
    kinds = Counter(e.kind for e in events)
    valid = [json.loads(e.payload) for e in events if e.kind == "valid"]
    classes = Counter(
        e["data"].get("payer_class") for e in valid if e["type"] == "patient.enrolled"
    )
    assert set(classes) == {"commercial", "medicare", "medicaid", "tricare", "self_pay"}
    assert sum(e["type"] == "coverage.changed" for e in valid) > 0

    assert main(["ingest", str(path)]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {
        "accepted": kinds["valid"],
        "duplicates": kinds["duplicate"],
        "rejected": kinds["malformed"],
    }
    ledger = build_ledger(Settings(database_url=f"sqlite:///{database}"))
    federal = {"medicare", "medicaid", "tricare"}
    reasons: Counter[str] = Counter()
    for pid in sorted({e["subject"] for e in valid}):
        account = ledger.load_account("clinic-default", pid)
        assert account is not None
        for event in ledger.store.events.get(account.id):
            reason = getattr(event, "reason", None) or getattr(event, "outcome", None)
            if reason in ("payer_cap", "referral_not_permitted"):
                reasons[reason] += 1
            if type(event).__name__ == "PointsRedeemed" and event.payer_class in federal:
                assert event.value <= Decimal("15.00")
        total_by_year: dict[int, Decimal] = {}
        for record in account.redemptions.values():
            if record.status == "redeemed" and record.value is not None:
                year = record.value_year or 0
                total_by_year[year] = total_by_year.get(year, Decimal(0)) + record.value
        if account.payer_class in federal and not any(
            c[2] not in federal for c in account.payer_changes
        ):  # federal all along: every year within the cap
            assert all(total <= Decimal("75.00") for total in total_by_year.values())
    assert reasons["payer_cap"] > 0, reasons
    assert reasons["referral_not_permitted"] > 0, reasons
