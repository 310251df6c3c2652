"""FHIR R4 test resources (tests/fhir/*.json) and a translator configured as in the docs.

The resources are written by the R4 specification and checked against the ``fhir.resources``
models in tests/unit/test_fhir_resources.py. They carry made-up PHI (names, birth dates,
addresses, identifiers, condition codes, narrative text, notes): :data:`PHI` lists every such
string, and the PHI tests grep everything that leaves the edge for them.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from producers.fhir.mapping import MappingConfig, Translator
from producers.fhir.pseudonyms import Pseudonyms

RESOURCES = Path(__file__).resolve().parent / "fhir"
SOURCE = "urn:careledger:emr:north-clinic"
KEY = b"test-only pseudonym key, 32+ bytes long"
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Berlin")

# Every personal or clinical string the resources hold; none may leave the edge.
PHI = (
    "Josephine",
    "Quixley",
    "Amaryllis",
    "1961-07-23",
    "Larkspur",
    "Wexmoor",
    "WX9 4QZ",
    "MRN-77120934",
    "999-41-2087",
    "7946 0321",
    "44054006",
    "Diabetes",
    "dizziness",
    "anxious",
    "VN-2025-000731",
    "Vonnegut",
    "bleeding gums",
    "AAJN11K",
    "feels low",
    "pat-5521",
    "Theodora",
    "Brindlecombe",
    "1958-02-11",
    "MRN-55001234",
    "Quarry Lane",
    "Ashbury",
    "38341003",
    "Hypertensive",
    "declines medication",
    "pat-7730",
    "dev-fitband-9",
    "loc-3",
)


@cache
def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RESOURCES / f"{name}.json").read_text("utf-8"))
    return loaded


def resource(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of ``tests/fhir/<name>.json``, with top-level fields replaced by ``changes``."""
    document = copy.deepcopy(_load(name))
    document.update(changes)
    return document


def all_resources() -> list[str]:
    return sorted(path.stem for path in RESOURCES.glob("*.json"))


def raw(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def config(**overrides: Any) -> MappingConfig:
    program_id = overrides.pop("program_id", "clinic-default")
    return MappingConfig(SOURCE, program_id, overrides.pop("zone", ZONE), **overrides)


def translator(**overrides: Any) -> Translator:
    return Translator(config(**overrides), Pseudonyms(KEY, SOURCE))


def pseudonyms() -> Pseudonyms:
    return Pseudonyms(KEY, SOURCE)
