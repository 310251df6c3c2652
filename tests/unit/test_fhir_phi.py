"""No PHI of a FHIR resource leaves the edge: not in a key, value or header of any output, not
in a log line, not in a ledger or read-model table built from the outputs.

The test resources hold made-up names, birth dates, addresses, identifiers (MRN, SSN, visit
number), condition codes, narrative text, notes, questionnaire answers and device, location and
patient ids (tests/fhir_support.PHI); every output is searched for each of them.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from careledger.application.ledger import ACCEPTED, Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.fhir.mapping import DeadLetter, Mapped, Outcome
from projections.service import catch_up
from tests.fhir_support import NOW, PHI, all_resources, raw, resource, translator


def _translate_everything() -> list[Outcome]:
    t = translator()
    out: list[Outcome] = []
    for name in all_resources():
        out.extend(t.translate(raw(resource(name)), NOW))
    return out


def _leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [phi for phi in PHI if phi.lower() in lowered]


def test_the_test_resources_do_hold_the_phi_searched_for() -> None:
    everything = "".join(raw(resource(name)).decode() for name in all_resources())
    assert _leaks(everything) == list(PHI)


def test_no_output_key_value_or_header_carries_phi(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outcomes = _translate_everything()
    assert any(isinstance(o, Mapped) for o in outcomes)
    assert any(isinstance(o, DeadLetter) for o in outcomes)
    for outcome in outcomes:
        match outcome:
            case Mapped(key=key, value=value):
                assert _leaks(key + value.decode()) == [], outcome
            case DeadLetter():
                headers = "".join(f"{n}={v.decode()}" for n, v in outcome.headers())
                assert _leaks(headers + outcome.value().decode()) == [], outcome
    assert _leaks(caplog.text) == []


async def test_no_table_holds_phi_after_the_outputs_are_applied(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    settings = Settings(database_url=f"sqlite:///{database}")
    ledger = build_ledger(settings)
    values = [o.value for o in _translate_everything() if isinstance(o, Mapped)]
    batch = ledger.apply_batch([Inbound(f"fhir:{i}", v, NOW) for i, v in enumerate(values)])
    assert sum(r.outcome == ACCEPTED for r in batch.results) >= len(values) // 2
    ledger.store.close()
    await catch_up(settings)
    with sqlite3.connect(database) as conn:
        dump = "\n".join(conn.iterdump())
    assert "ledger_entries" in dump and "balances" in dump
    assert _leaks(dump) == []
