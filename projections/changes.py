"""What one batch of ledger events changes in the read models, accumulated in memory.

Handlers (``projections.handlers``) fill a :class:`BatchChanges`; the writer turns it into a
few bulk statements. Keeping the two apart keeps the handlers pure and unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

CENT = Decimal("0.01")


@dataclass
class BalanceRow:
    """One ``balances`` row, mirroring ``PatientAccount.balance`` field by field."""

    program_id: str
    patient_id: str
    account_id: UUID
    updated_at: datetime
    available: int = 0
    tier: str = ""  # the program's starting tier (from Opened) until a TierChanged
    qualifying_points: int = 0
    lifetime_earned: int = 0
    lifetime_redeemed: int = 0
    lifetime_expired: int = 0
    lifetime_reversed: int = 0
    discount_percent: int = 0
    spend_total: Decimal = Decimal("0.00")
    rewards_unlocked: int = 0
    first_activity_at: datetime | None = None
    last_activity_at: datetime | None = None


BALANCE_COLUMNS = tuple(f.name for f in fields(BalanceRow))


@dataclass
class KpiDelta:
    """Additive changes to one ``program_kpis_daily`` row."""

    interactions: int = 0
    active_patients: int = 0
    new_patients: int = 0
    points_earned: int = 0
    points_redeemed: int = 0
    points_expired: int = 0
    points_reversed: int = 0
    points_adjusted: int = 0  # net, signed: staff credits minus staff debits


KPI_COLUMNS = tuple(f.name for f in fields(KpiDelta))


@dataclass
class BatchChanges:
    """Row changes of one batch, keyed so repeated touches merge in memory."""

    accounts: dict[UUID, BalanceRow] = field(default_factory=dict)
    # Rows as tuples in their table's column order (projections.tables), ready for COPY.
    entries: dict[UUID, tuple[Any, ...]] = field(default_factory=dict)
    tier_changes: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    months: dict[tuple[str, str, int], bool] = field(default_factory=dict)
    days: set[tuple[str, date, str]] = field(default_factory=set)
    kpis: dict[tuple[str, date], KpiDelta] = field(default_factory=dict)
    position: int = 0
    last_event_at: datetime | None = None

    def kpi(self, program_id: str, day: date) -> KpiDelta:
        key = (program_id, day)
        delta = self.kpis.get(key)
        if delta is None:
            delta = self.kpis[key] = KpiDelta()
        return delta


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def month_index(at: datetime) -> int:
    """``year * 12 + month - 1`` of the UTC month: consecutive months differ by one."""
    utc = at.astimezone(UTC)
    return utc.year * 12 + utc.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)
