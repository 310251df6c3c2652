"""Erasure closes the account (ADR 0015): points forfeited by one entry, nothing accepted
after it, the statement saying why; the money side is reported as owed, never forfeited."""

from __future__ import annotations

from typing import Any

import pytest

from domain import errors
from domain import interactions as di
from domain.account import PatientAccount, entries_of
from domain.entries import statement_lines_of
from tests.unit.dsl import Ledger, at, checkup, visit


def erase(when: Any = None, reason: str = "gdpr_art17") -> di.ErasureRequest:
    return di.ErasureRequest(
        source="crm", source_id=f"erase-{id(when)}", occurred_at=when or at(3), reason=reason
    )


def test_erasure_forfeits_the_available_points_by_one_entry_and_closes() -> None:
    ledger = Ledger().given(visit(at(0)), checkup(at(1)))
    earned = ledger.available
    assert earned > 0
    events = ledger.when(erase(at(2)))
    (closing,) = [e for e in events if isinstance(e, PatientAccount.AccountErased)]
    (entry,) = entries_of(closing)
    assert (entry.kind, entry.points, entry.balance_after, entry.reason) == (
        "adjusted",
        -earned,
        0,
        "gdpr_art17",
    )
    assert ledger.available == 0
    assert ledger.account.closed
    assert ledger.replayed().closed and ledger.replayed().available == 0


def test_nothing_is_accepted_after_erasure_and_redeliveries_stay_duplicates() -> None:
    first = visit(at(0))
    ledger = Ledger().given(first)
    ledger.when(erase(at(1)))
    with pytest.raises(errors.SubjectErased):
        ledger.when(visit(at(2)))
    assert ledger.when(first) == []  # the account's own receipt still knows it
    assert ledger.maintain(at(400)) == []  # maintenance leaves a closed account alone


def test_an_empty_account_closes_with_a_statement_line_saying_why() -> None:
    ledger = Ledger()
    (closing,) = ledger.when(erase(at(1), reason="patient_request"))
    assert isinstance(closing, PatientAccount.AccountErased)
    assert entries_of(closing) == []
    (line,) = statement_lines_of(closing, 0)
    assert (line.kind, line.points, line.reason) == ("noted", 0, "patient_request")
