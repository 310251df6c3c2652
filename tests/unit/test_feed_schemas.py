"""The outbound contract ledger.v1 is published as JSON Schema files kept in sync with its
models, and every message the feed builds validates against them."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import generate
from schemas.ledger_v1 import LEDGER_SOURCE, OUTBOUND_TYPES, SCHEMA_BASE_URL

LEDGER_DIR = generate.JSON_DIR / "ledger.v1"


def test_every_outbound_type_has_its_schema_file() -> None:
    for event_type in OUTBOUND_TYPES:
        schema = json.loads((LEDGER_DIR / f"{event_type}.json").read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"{SCHEMA_BASE_URL}{event_type}.json"
        assert schema["title"] == event_type
        assert schema["additionalProperties"] is False
        assert schema["properties"]["source"]["const"] == LEDGER_SOURCE
        # described as sent: the envelope's fixed attributes are always there
        assert {"specversion", "type", "id", "subject", "programid", "data"} <= set(
            schema["required"]
        )
    index = json.loads((LEDGER_DIR / "index.json").read_text())
    assert [entry["type"] for entry in index["events"]] == list(OUTBOUND_TYPES)
    assert index["topic"] == "careledger.ledger.v1"


def test_the_issue_s_types_and_points_returned_are_published() -> None:
    assert set(OUTBOUND_TYPES) == {
        "points.earned",
        "points.redeemed",
        "points.returned",
        "points.expired",
        "points.reversed",
        "points.adjusted",
        "tier.changed",
        "points.expiring",
    }


def test_check_names_a_stale_or_stray_outbound_file(tmp_path: Path) -> None:
    generate.write(tmp_path)
    (tmp_path / "ledger.v1" / "tier.changed.json").write_text("{}\n")
    (tmp_path / "ledger.v1" / "reward.issued.json").write_text("{}\n")
    assert generate.check(tmp_path) == [
        "ledger.v1/reward.issued.json",
        "ledger.v1/tier.changed.json",
    ]
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
