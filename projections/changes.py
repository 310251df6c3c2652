"""What one batch of ledger events changes in the read models, accumulated in memory.

Handlers (``projections.handlers``) fill a :class:`BatchChanges`; the writer turns it into a
few bulk statements. Keeping the two apart keeps the handlers pure and unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
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
class LiabilityDelta:
    """Additive changes to one ``partner_liability`` row (points only; value is derived)."""

    issued: int = 0
    redeemed: int = 0
    expired: int = 0
    reversed: int = 0

    @property
    def outstanding(self) -> int:
        return self.issued - self.redeemed - self.expired - self.reversed


LIABILITY_COLUMNS = (*(f.name for f in fields(LiabilityDelta)), "outstanding")


@dataclass
class EngagementDelta:
    """Additive changes to one ``engagement_monthly`` row."""

    interactions: int = 0
    awarded: int = 0
    points: int = 0


ENGAGEMENT_COLUMNS = tuple(f.name for f in fields(EngagementDelta))

Partner = str  # '' in programs without partners


@dataclass
class Sums:
    """Additive rows summed over the whole ledger (like the KPIs): a follower writes a
    batch's, a rebuild keeps them in memory and writes them once at the end."""

    liability: dict[tuple[str, Partner], LiabilityDelta] = field(default_factory=dict)
    # (program, issuing partner, redeeming partner, month) -> points
    settlement: dict[tuple[str, Partner, Partner, date], int] = field(default_factory=dict)
    engagement: dict[tuple[str, date, str], EngagementDelta] = field(default_factory=dict)

    def partner(self, program_id: str, partner: str | None) -> LiabilityDelta:
        key = (program_id, partner or "")
        delta = self.liability.get(key)
        if delta is None:
            delta = self.liability[key] = LiabilityDelta()
        return delta

    def settle(self, program_id: str, issuer: str, redeemer: str, month: date, points: int) -> None:
        key = (program_id, issuer, redeemer, month)
        self.settlement[key] = self.settlement.get(key, 0) + points

    def engaged(self, program_id: str, month: date, action: str) -> EngagementDelta:
        key = (program_id, month, action)
        delta = self.engagement.get(key)
        if delta is None:
            delta = self.engagement[key] = EngagementDelta()
        return delta

    def cancel(self, redemption: Redemption, cancellation: Cancellation) -> None:
        """Give back what ``redemption`` took, in the cancellation's month: points returned
        to a lot go back to its issuer, points returned to an expired lot expire, and the
        rest (which repaid the account's debt) count as reversed from their issuer."""
        program_id = redemption.program_id
        for issuer, points in redemption.by_issuer.items():
            back = cancellation.returned.get(issuer, 0)
            dead = cancellation.expired.get(issuer, 0)
            delta = self.partner(program_id, issuer)
            delta.redeemed -= points
            delta.expired += dead
            delta.reversed += points - back - dead
            self.settle(program_id, issuer, redemption.redeemer, cancellation.month, -points)

    def add(self, other: Sums) -> None:
        """Add ``other``'s rows to these (a rebuild's shards)."""
        for key, liability in other.liability.items():
            into = self.liability.setdefault(key, LiabilityDelta())
            for name in ("issued", "redeemed", "expired", "reversed"):
                setattr(into, name, getattr(into, name) + getattr(liability, name))
        for pair, points in other.settlement.items():
            self.settlement[pair] = self.settlement.get(pair, 0) + points
        for row, engagement in other.engagement.items():
            total = self.engagement.setdefault(row, EngagementDelta())
            total.interactions += engagement.interactions
            total.awarded += engagement.awarded
            total.points += engagement.points

    def programs(self) -> set[str]:
        return {key[0] for key in self.liability} | {key[0] for key in self.settlement}


@dataclass(frozen=True)
class Redemption:
    """A redemption's points by issuing partner, and where it was redeemed: what a later
    cancellation gives back (``partner_redemptions`` keeps it between batches)."""

    program_id: str
    patient_id: str
    redemption_id: str
    redeemer: Partner
    by_issuer: dict[Partner, int]


@dataclass(frozen=True)
class Cancellation:
    """A cancellation whose redemption is in an earlier batch (resolved by the writer)."""

    program_id: str
    patient_id: str
    redemption_id: str
    month: date
    returned: dict[Partner, int]  # back into the issuers' lots
    expired: dict[Partner, int]  # back into lots already expired: they expire now


GoalKey = tuple[str, str, str, str]  # program, patient, source, source id of a reading


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
    sums: Sums = field(default_factory=Sums)
    redemptions: dict[tuple[str, str, str], Redemption] = field(default_factory=dict)
    cancellations: list[Cancellation] = field(default_factory=list)
    # Goal readings added and voided, and the accounts whose goal days they change.
    goal_readings: dict[GoalKey, date] = field(default_factory=dict)
    goal_voids: set[GoalKey] = field(default_factory=set)
    goal_accounts: set[tuple[str, str]] = field(default_factory=set)
    position: int = 0
    last_event_at: datetime | None = None

    def kpi(self, program_id: str, day: date) -> KpiDelta:
        key = (program_id, day)
        delta = self.kpis.get(key)
        if delta is None:
            delta = self.kpis[key] = KpiDelta()
        return delta


def month_of(at: datetime) -> date:
    """The first day of the UTC month of ``at``."""
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def month_index(at: datetime) -> int:
    """``year * 12 + month - 1`` of the UTC month: consecutive months differ by one."""
    utc = at.astimezone(UTC)
    return utc.year * 12 + utc.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


GOAL_WINDOW = 30  # days of activity_days.goal_days_30


def goal_summary(days: set[date]) -> tuple[int, int, int, int, date | None, date | None]:
    """``activity_days`` of a patient's goal days: (goal days, goal days in the 30 days
    ending with the latest goal day, the run of consecutive goal days ending with it, the
    longest run, the first and the latest goal day)."""
    if not days:
        return 0, 0, 0, 0, None, None
    ordered = sorted(days)
    latest = ordered[-1]
    window_start = latest - timedelta(days=GOAL_WINDOW - 1)
    in_window = sum(1 for day in ordered if day >= window_start)
    longest = run = 1
    for before, day in pairwise(ordered):
        run = run + 1 if (day - before).days == 1 else 1
        longest = max(longest, run)
    return len(ordered), in_window, run, longest, ordered[0], latest
