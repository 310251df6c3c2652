"""The read models' tables: the analysts' contract (docs/analysts.md documents every column).

One ``MetaData`` serves PostgreSQL and SQLite. Two column types paper over SQLite: times are
stored as UTC and always read back timezone-aware, and money keeps two decimals exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.types import TypeEngine

from projections.changes import CENT


class UtcDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; UTC text on SQLite, read back as aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """``numeric(18,2)``; SQLite has no decimal type, so the value is re-quantized on read."""

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(18, 2, asdecimal=False))
        return dialect.type_descriptor(Numeric(18, 2))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    quantum = CENT

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value)).quantize(self.quantum)


class PointValue(Money):
    """``numeric(18,6)``: money per point (a fraction of a cent)."""

    impl = Numeric(18, 6)
    cache_ok = True
    quantum = Decimal("0.000001")

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(18, 6, asdecimal=False))
        return dialect.type_descriptor(Numeric(18, 6))


metadata = MetaData()


def _points(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, default=0)


balances = Table(
    "balances",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("account_id", Uuid, nullable=False, unique=True),
    _points("available"),
    Column("tier", Text, nullable=False),
    _points("qualifying_points"),
    _points("lifetime_earned"),
    _points("lifetime_redeemed"),
    _points("lifetime_expired"),
    _points("lifetime_reversed"),
    Column("discount_percent", Integer, nullable=False),
    Column("spend_total", Money, nullable=False),
    Column("rewards_unlocked", Integer, nullable=False),
    Column("first_activity_at", UtcDateTime, nullable=True),
    Column("last_activity_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    # Rows are rewritten often and no indexed column ever changes: leave room on each page
    # so PostgreSQL can update in place (HOT) without touching the indexes.
    postgresql_with={"fillfactor": 50},
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", Uuid, primary_key=True),
    Column("program_id", Text, nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("program_version", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    # why nothing was paid (kind "noted": a zero-point row per such interaction) or why
    # staff adjusted; and who adjusted. Null for every other entry.
    Column("reason", Text, nullable=True),
    Column("operator", Text, nullable=True),
    Index("ledger_entries_patient", "program_id", "patient_id"),
    Index("ledger_entries_time", "program_id", "occurred_at"),
)

tier_history = Table(
    "tier_history",
    metadata,
    Column("program_id", Text, nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("from_tier", Text, nullable=False),
    Column("to_tier", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Index("tier_history_patient", "program_id", "patient_id", "occurred_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("origin", Text, primary_key=True),
    Column("source", Text, nullable=True),
    Column("source_id", Text, nullable=True),
    Column("code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

# Helper: one row per (program, patient, month) with any accepted interaction; ``active`` when
# one of them counts as activity. Cohorts and 12-month retention are derived from it.
patient_activity_months = Table(
    "patient_activity_months",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("month_index", Integer, primary_key=True),  # year * 12 + month - 1
    Column("month", Date, nullable=False),
    Column("active", Boolean, nullable=False),
    Index("patient_activity_months_month", "program_id", "month_index"),
)

# Helper: the UTC days on which a patient was active (counts ``active_patients`` per day).
patient_activity_days = Table(
    "patient_activity_days",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("patient_id", Text, primary_key=True),
)

retention_cohorts = Table(
    "retention_cohorts",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("cohort_month", Date, primary_key=True),
    Column("month_offset", Integer, primary_key=True),
    Column("cohort_size", Integer, nullable=False),
    Column("active_patients", Integer, nullable=False),
    Column("retention_rate", Float, nullable=False),
)

program_kpis_daily = Table(
    "program_kpis_daily",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("interactions", Integer, nullable=False, default=0),
    Column("active_patients", Integer, nullable=False, default=0),
    Column("new_patients", Integer, nullable=False, default=0),
    _points("points_earned"),
    _points("points_redeemed"),
    _points("points_expired"),
    _points("points_reversed"),
    _points("points_adjusted"),
    _points("liability_points"),
    Column("redemption_rate", Float, nullable=True),
    Column("breakage_rate", Float, nullable=True),
)

# Coalition liability: points in the lots each partner issued, and what they are worth.
partner_liability = Table(
    "partner_liability",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("partner", Text, primary_key=True),  # '' in programs without partners
    _points("issued"),
    _points("redeemed"),
    _points("expired"),
    _points("reversed"),
    _points("outstanding"),
    Column("point_value", PointValue, nullable=True),  # the program's latest version's
    Column("outstanding_value", Money, nullable=True),
)

# What partners owe each other: the issuer owes the redeemer the value of its points.
partner_settlement = Table(
    "partner_settlement",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("issuing_partner", Text, primary_key=True),
    Column("redeeming_partner", Text, primary_key=True),
    Column("month", Date, primary_key=True),
    _points("points"),
    Column("value", Money, nullable=True),
)

engagement_monthly = Table(
    "engagement_monthly",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("month", Date, primary_key=True),
    Column("action", Text, primary_key=True),
    Column("interactions", Integer, nullable=False, default=0),
    Column("awarded", Integer, nullable=False, default=0),
    _points("points"),
)

# Goal days and streaks per patient, beside balances (rows once a patient had a goal day).
activity_days = Table(
    "activity_days",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("goal_days", Integer, nullable=False),
    Column("goal_days_30", Integer, nullable=False),
    Column("current_streak", Integer, nullable=False),
    Column("longest_streak", Integer, nullable=False),
    Column("first_goal_day", Date, nullable=True),
    Column("latest_goal_day", Date, nullable=True),
)

# Helper: the readings that met the goal, by reading (a void removes its reading).
patient_goal_readings = Table(
    "patient_goal_readings",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("source_id", Text, primary_key=True),
    Column("day", Date, nullable=False),
)

# Helper: each redemption's points by issuing partner, and where it was redeemed.
partner_redemptions = Table(
    "partner_redemptions",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("redemption_id", Text, primary_key=True),
    Column("issuing_partner", Text, primary_key=True),
    Column("redeeming_partner", Text, nullable=False),
    _points("points"),
)

# The rewards side (docs/analysts.md): vouchers, benefits held, paid memberships, wallets.
vouchers = Table(
    "vouchers",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("redemption_id", Text, primary_key=True),  # the voucher's id
    Column("reward_id", Text, nullable=False),
    _points("points"),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Column("status", Text, nullable=False),  # issued | used | cancelled | expired
    Index("vouchers_reward", "program_id", "reward_id"),
)

# One row per benefit held over a period: ``until`` is null while it is held.
benefits = Table(
    "benefits",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("benefit", Text, primary_key=True),
    Column("since", UtcDateTime, primary_key=True),
    Column("source", Text, nullable=False),  # tier | membership
    Column("until", UtcDateTime, nullable=True),
    Index("benefits_held", "program_id", "benefit", "until"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("membership_id", Text, primary_key=True),
    Column("plan_id", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("paid_through", UtcDateTime, nullable=False),
    Column("status", Text, nullable=False),  # active | cancelled | lapsed
    Column("cancelled_at", UtcDateTime, nullable=True),
)

membership_kpis_monthly = Table(
    "membership_kpis_monthly",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("month", Date, primary_key=True),
    Column("active", Integer, nullable=False, default=0),
    Column("started", Integer, nullable=False, default=0),
    Column("renewed", Integer, nullable=False, default=0),
    Column("lapsed", Integer, nullable=False, default=0),
    Column("revenue", Money, nullable=False),
)

# The money wallets beside balances (rows once an account's wallets moved or it paid in a
# program with wallets).
wallets = Table(
    "wallets",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("cashback_balance", Money, nullable=False),
    Column("prepaid_balance", Money, nullable=False),
    Column("prepayment_discount_percent", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Compliance (docs/analysts.md): what rewards were worth, per patient, calendar year (program
# time zone) and the payer class in force at each redemption; cancelled ones taken back.
reward_value_by_year = Table(
    "reward_value_by_year",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("payer_class", Text, primary_key=True),
    Column("redemptions", Integer, nullable=False, default=0),
    Column("value", Money, nullable=False),
)

# Statement lines that paid nothing, by reason code and UTC month: refused redemptions,
# capped or excluded earnings, withheld referral bonuses.
refusals_monthly = Table(
    "refusals_monthly",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("month", Date, primary_key=True),
    Column("reason", Text, primary_key=True),
    Column("interactions", Integer, nullable=False, default=0),
)

# Each account's marketing consent: the latest by event time, and since when.
marketing_consent = Table(
    "marketing_consent",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),
    Column("marketing", Boolean, nullable=False),
    Column("since", UtcDateTime, nullable=False),
)

# Accounts closed by erasure (ADR 0015): what was forfeited and what is owed to the patient
# (money is never forfeited), under the opaque id the patient's rows were re-keyed to.
erasure_settlements = Table(
    "erasure_settlements",
    metadata,
    Column("program_id", Text, primary_key=True),
    Column("patient_id", Text, primary_key=True),  # erased-<account id>, nobody's subject
    Column("erased_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("points_forfeited", BigInteger, nullable=False),
    Column("cashback_owed", Money, nullable=False),
    Column("prepaid_owed", Money, nullable=False),
)

# Tracking, not a read model: where each projection is in the ledger's notification log.
projection_positions = Table(
    "projection_positions",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("last_event_at", UtcDateTime, nullable=True),
)

# Every table the read-models projection writes (projection_positions is its bookkeeping).
READ_MODEL_TABLES = (
    balances,
    ledger_entries,
    tier_history,
    dead_letters,
    retention_cohorts,
    program_kpis_daily,
    patient_activity_months,
    patient_activity_days,
    partner_liability,
    partner_settlement,
    engagement_monthly,
    activity_days,
    patient_goal_readings,
    partner_redemptions,
    vouchers,
    benefits,
    memberships,
    membership_kpis_monthly,
    wallets,
    reward_value_by_year,
    refusals_monthly,
    marketing_consent,
    erasure_settlements,
)
