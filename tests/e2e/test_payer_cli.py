"""The payer rules and consent through the command line: ``careledger balance`` shows the
marketing consent and payer class, ``careledger statement`` the refusal's reason code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.e2e.test_cli import careledger, summary
from tests.events import jsonl
from tests.integration.test_payer_golden import consent, cover, credit, enrol, redeem

pytestmark = pytest.mark.e2e


def test_balance_shows_consent_and_payer_class_and_the_statement_why(
    database: Database, tmp_path: Path
) -> None:
    path = tmp_path / "payer.jsonl"
    path.write_bytes(
        jsonl(
            [
                enrol("zed", "2025-01-02", "commercial"),
                credit("zed", "2025-01-03", 5000),
                cover("zed", "2025-02-01", "medicare"),
                consent("zed", "2025-02-02", True),
                redeem("zed", "2025-02-03", "r-1", 1600),  # 16.00: refused
                redeem("zed", "2025-02-04", "r-2", 1500),
            ]
        )
    )
    assert summary(careledger(database, "ingest", str(path))) == {
        "accepted": 6,
        "duplicates": 0,
        "rejected": 0,
    }
    balance = json.loads(careledger(database, "balance", "zed", "--json").stdout)
    assert (balance["available"], balance["payer_class"]) == (3500, "medicare")
    assert (balance["marketing_consent"], balance["marketing_consent_since"]) == (
        True,
        "2025-02-02T10:00:00+00:00",
    )
    lines = json.loads(careledger(database, "statement", "zed", "--json").stdout)
    assert [(line["kind"], line["points"], line["reason"]) for line in lines[1:]] == [
        ("noted", 0, "payer_cap"),
        ("redeemed", -1500, None),
    ]
    text = careledger(database, "balance", "zed").stdout
    assert "marketing_consent    True" in text and "payer_class          medicare" in text
