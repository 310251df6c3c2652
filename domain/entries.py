"""The ledger entries account events carry, and the statement lines they make.

``entries_of`` gives the entries that move points (their sum is the balance);
``statement_lines_of`` adds a zero-point line, with its reason code, for every interaction
the account accepted without paying anything or refused as a business outcome, so a
statement explains every interaction.
"""

from __future__ import annotations

from typing import Any

from domain.ids import derived_id
from domain.values import LedgerEntry

NOTED = "noted"  # the kind of a zero-point line


def entries_of(event: Any) -> list[LedgerEntry]:
    """The ledger entries an account event carries (none for most non-point events)."""
    if (awards := getattr(event, "awards", None)) is not None:
        return [award.credit.entry for award in awards]
    if (credit := getattr(event, "credit", None)) is not None:
        return [credit.entry]
    if (entry := getattr(event, "entry", None)) is not None:
        return [entry]
    return list(getattr(event, "entries", ()))


def statement_lines_of(event: Any, balance_before: int) -> list[LedgerEntry]:
    """The statement lines of an event: its entries, or one zero line saying why not."""
    entries = entries_of(event)
    reason = getattr(event, "outcome", None) or getattr(event, "reason", None)
    if entries or not getattr(event, "explains_nothing_paid", False) or reason is None:
        return entries
    return [
        LedgerEntry(
            entry_id=derived_id(str(event.originator_id), event.source, event.source_id, NOTED),
            kind=NOTED,
            points=0,
            balance_after=balance_before,
            rule_id=getattr(event, "rule_id", None) or "",
            program_version=getattr(event, "program_version", None) or "",
            source=event.source,
            source_id=event.source_id,
            occurred_at=event.occurred_at,
            reason=reason,
        )
    ]
