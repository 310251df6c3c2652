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
RewardValueKey = tuple[str, str, int, str]  # program, patient, year, payer class
RefusalKey = tuple[str, date, str]  # program, month, reason code


@dataclass
class RewardValueDelta:
    """Additive changes to one ``reward_value_by_year`` row."""

    redemptions: int = 0
    value: Decimal = Decimal("0.00")


REWARD_VALUE_COLUMNS = tuple(f.name for f in fields(RewardValueDelta))


@dataclass
class MembershipKpiDelta:
    """Additive changes to one ``membership_kpis_monthly`` row."""

    active: int = 0  # memberships with a paid period in the month (each counted once)
    started: int = 0
    renewed: int = 0
    lapsed: int = 0
    revenue: Decimal = Decimal("0.00")  # amounts of the month's starts and renewals


MEMBERSHIP_KPI_COLUMNS = tuple(f.name for f in fields(MembershipKpiDelta))


@dataclass
class Sums:
    """Additive rows summed over the whole ledger (like the KPIs): a follower writes a
    batch's, a rebuild keeps them in memory and writes them once at the end."""

    liability: dict[tuple[str, Partner], LiabilityDelta] = field(default_factory=dict)
    # (program, issuing partner, redeeming partner, month) -> points
    settlement: dict[tuple[str, Partner, Partner, date], int] = field(default_factory=dict)
    engagement: dict[tuple[str, date, str], EngagementDelta] = field(default_factory=dict)
    memberships: dict[tuple[str, date], MembershipKpiDelta] = field(default_factory=dict)
    reward_values: dict[RewardValueKey, RewardValueDelta] = field(default_factory=dict)
    refusals: dict[RefusalKey, int] = field(default_factory=dict)

    def reward_value(self, key: RewardValueKey, redemptions: int, value: Decimal) -> None:
        """A redemption of ``value`` counted (1) or, cancelled, taken back (-1)."""
        delta = self.reward_values.get(key)
        if delta is None:
            delta = self.reward_values[key] = RewardValueDelta()
        delta.redemptions += redemptions
        delta.value += value

    def refused(self, program_id: str, month: date, reason: str) -> None:
        """One more statement line that paid nothing, for ``reason``."""
        key = (program_id, month, reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def membership_month(self, program_id: str, month: date) -> MembershipKpiDelta:
        key = (program_id, month)
        delta = self.memberships.get(key)
        if delta is None:
            delta = self.memberships[key] = MembershipKpiDelta()
        return delta

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
        for valued, delta in other.reward_values.items():
            self.reward_value(valued, delta.redemptions, delta.value)
        for refusal, count in other.refusals.items():
            self.refusals[refusal] = self.refusals.get(refusal, 0) + count
        for month, kpis in other.memberships.items():
            into_month = self.memberships.setdefault(month, MembershipKpiDelta())
            for name in MEMBERSHIP_KPI_COLUMNS:
                setattr(into_month, name, getattr(into_month, name) + getattr(kpis, name))

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


AccountKey = tuple[str, str]  # program, patient
VoucherKey = tuple[str, str, str]  # program, patient, voucher (redemption) id
MembershipKey = tuple[str, str, str]  # program, patient, membership id
TierBenefits = dict[str, dict[str, frozenset[str]]]  # program -> tier -> benefit codes


@dataclass
class VoucherRow:
    """One ``vouchers`` row."""

    program_id: str
    patient_id: str
    redemption_id: str
    reward_id: str
    points: int
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    status: str = "issued"


@dataclass(frozen=True)
class VoucherChange:
    """A voucher used (at ``at``), cancelled or expired."""

    status: str
    at: datetime

    def apply(self, row: VoucherRow) -> None:
        row.status = self.status
        if self.status == "used":
            row.used_at = self.at


@dataclass
class MembershipRow:
    """One ``memberships`` row, kept as ``domain.rewards.Membership`` keeps it."""

    program_id: str
    patient_id: str
    membership_id: str
    plan_id: str
    started_at: datetime
    paid_through: datetime
    status: str = "active"
    cancelled_at: datetime | None = None


@dataclass(frozen=True)
class MembershipChange:
    """A membership started (or bought again after a lapse), renewed, cancelled or lapsed,
    at ``at`` (the interaction's event time; a lapse's paid-through date)."""

    kind: str  # started | renewed | cancelled | lapsed
    at: datetime
    plan_id: str = ""
    amount: Decimal = Decimal("0.00")
    paid_through: datetime | None = None

    def apply(self, key: MembershipKey, row: MembershipRow | None, sums: Sums) -> MembershipRow:
        """``row`` moved on by this change, and its counts added to ``sums``."""
        program_id = key[0]
        kpis = sums.membership_month(program_id, month_of(self.at))
        if self.kind == "started":
            assert self.paid_through is not None
            counted = None if row is None else last_paid_month(row.paid_through)
            if row is None:
                row = MembershipRow(*key, self.plan_id, self.at, self.paid_through)
            row.plan_id, row.status = self.plan_id, "active"
            self._count_active(sums, program_id, self.at, self.paid_through, counted)
            row.paid_through = self.paid_through
            kpis.started += 1
            kpis.revenue += self.amount
            return row
        assert row is not None, f"membership {key} changed before it started"
        if self.kind == "renewed":
            assert self.paid_through is not None
            counted = last_paid_month(row.paid_through)
            self._count_active(sums, program_id, row.paid_through, self.paid_through, counted)
            row.paid_through = self.paid_through
            kpis.renewed += 1
            kpis.revenue += self.amount
        elif self.kind == "cancelled":
            row.status, row.cancelled_at = "cancelled", self.at
        else:
            row.status = "lapsed"
            kpis.lapsed += 1
        return row

    @staticmethod
    def _count_active(
        sums: Sums, program_id: str, start: datetime, end: datetime, counted: date | None
    ) -> None:
        """One more active membership in each month of [start, end) after ``counted``."""
        for month in months_between(start, end):
            if counted is None or month > counted:
                sums.membership_month(program_id, month).active += 1


@dataclass(frozen=True)
class BenefitChange:
    """The benefit codes an account holds from ``at`` on, and its tier's codes then."""

    program_id: str
    patient_id: str
    at: datetime
    benefits: tuple[str, ...]
    tier_benefits: frozenset[str]


@dataclass
class WalletDelta:
    """What a batch does to an account's ``wallets`` row."""

    updated_at: datetime
    cashback: Decimal = Decimal("0.00")
    prepaid: Decimal = Decimal("0.00")
    discount_percent: int | None = None  # as of the batch's latest payment, if it had one


@dataclass(frozen=True)
class Erasure:
    """An account closed by erasure in this batch: its rows are re-keyed or deleted after
    the batch's writes (projections.erasure), and its settlement row written."""

    account_id: UUID
    program_id: str
    erased_at: datetime
    reason: str
    points_forfeited: int
    cashback_owed: Decimal
    prepaid_owed: Decimal


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
    # Rewards: vouchers issued in this batch and changes to those of earlier batches (the
    # writer loads those); membership and benefit changes in ledger order (the writer
    # applies them to the stored rows); wallet movements by account.
    vouchers: dict[VoucherKey, VoucherRow] = field(default_factory=dict)
    voucher_changes: dict[VoucherKey, list[VoucherChange]] = field(default_factory=dict)
    membership_changes: dict[MembershipKey, list[MembershipChange]] = field(default_factory=dict)
    benefit_changes: list[BenefitChange] = field(default_factory=list)
    wallets: dict[AccountKey, WalletDelta] = field(default_factory=dict)
    # The latest marketing consent by event time of each account the batch changed it for.
    consents: dict[AccountKey, tuple[bool, datetime]] = field(default_factory=dict)
    erasures: list[Erasure] = field(default_factory=list)
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


MICROSECOND = timedelta(microseconds=1)


def last_paid_month(paid_through: datetime) -> date:
    """The month of the last instant a period ending (exclusive) at ``paid_through`` covers."""
    return month_of(paid_through - MICROSECOND)


def months_between(start: datetime, end: datetime) -> list[date]:
    """The UTC months that [start, end) touches (none when it is empty)."""
    if end <= start:
        return []
    months, index, last = [], month_index(start), month_index(end - MICROSECOND)
    while index <= last:
        months.append(month_start(index))
        index += 1
    return months
