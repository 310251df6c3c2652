"""Value objects the account's events carry.

They are plain frozen dataclasses so the application can register one generic transcoding for
them; nothing here depends on how they are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID


class EntryKind(StrEnum):
    """What a ledger entry did to the balance. The sign of ``points`` follows the kind."""

    EARNED = "earned"  # an earning rule paid (positive)
    BONUS = "bonus"  # a bonus such as a referral paid (positive)
    REDEEMED = "redeemed"  # a redemption took points (negative)
    RETURNED = "returned"  # a cancelled redemption gave them back (positive)
    EXPIRED = "expired"  # a lot reached its expiry (negative)
    REVERSED = "reversed"  # a void took back what an interaction earned (negative)
    ADJUSTED = "adjusted"  # staff corrected the balance (either sign)


@dataclass(frozen=True)
class LedgerEntry:
    """One line of a patient's statement, traceable to its cause and rule.

    ``entry_id`` is derived from the cause, so replaying the same cause can never pay twice.
    ``balance_after`` is the available balance right after this entry, in ledger order.
    """

    entry_id: UUID
    kind: str
    points: int
    balance_after: int
    rule_id: str
    program_version: str
    source: str
    source_id: str
    occurred_at: datetime
    reason: str | None = None  # a code: why an adjustment was made, why nothing was paid
    operator: str | None = None  # the pseudonymous staff id behind an adjustment


@dataclass(frozen=True)
class Credit:
    """Points paid into a new lot; part may first repay a negative balance."""

    lot_id: UUID
    expires_at: datetime
    points: int
    debt_repaid: int
    entry: LedgerEntry
    partner: str | None = None  # the coalition partner that issued the points


@dataclass(frozen=True)
class Allocation:
    """Points taken from (or returned to) one lot, remembering the lot's expiry."""

    lot_id: UUID
    expires_at: datetime
    points: int
    partner: str | None = None  # the partner that issued the lot


@dataclass(frozen=True)
class Award:
    """What one rule paid for one interaction: the credit, and what it counts toward.

    ``counters`` are the usage counters the award fills (the rule's own id and any shared
    limit counter); ``group`` is the group a top-up award belongs to (a step day).
    """

    rule_id: str
    base_points: int
    qualifying: int
    counters: tuple[str, ...]
    group: str | None
    credit: Credit
    limit: str | None = None  # the limit that trimmed it, if one did

    def __post_init__(self) -> None:
        object.__setattr__(self, "counters", tuple(self.counters))  # stored as a JSON list


@dataclass
class Lot:
    """Points earned together, expiring together. ``remaining`` never goes below zero."""

    lot_id: UUID
    expires_at: datetime
    remaining: int
    source: str
    source_id: str
    partner: str | None = None  # the partner that issued it (None: no coalition)


@dataclass
class Receipt:
    """What an accepted interaction did, kept so a void can reverse exactly that.

    ``awards`` are what its rules paid (a void frees the limits and groups they used).
    """

    kind: str
    occurred_at: datetime
    lot_ids: tuple[UUID, ...] = ()
    points: int = 0
    qualifying: int = 0
    awards: tuple[Award, ...] = ()
    amount: Decimal | None = None
    voided: bool = False
    goal_day: date | None = None  # a reading that met the daily goal on this day


@dataclass
class RedemptionRecord:
    """A redemption the account has seen, and the lots it drew on."""

    redemption_id: str
    status: str  # "redeemed", "rejected" or "cancelled"
    points: int
    allocations: tuple[Allocation, ...] = ()
    counters: tuple[str, ...] = ()  # a catalogue reward's limit counters it filled
    key: str = ""  # the request's dedupe key (its usage's key)
    at: datetime | None = None
    value: Decimal | None = None  # its money value, the payer class and the year it counts in
    payer_class: str | None = None
    value_year: int | None = None


@dataclass(frozen=True)
class Standing:
    """What the patient told the program about themselves, by event time: marketing consent
    (since when; None: never told, so off) and the payer class in force last."""

    marketing_consent: bool
    marketing_consent_since: datetime | None
    payer_class: str


@dataclass(frozen=True)
class Holdings:
    """What a patient holds besides points: benefits, memberships, vouchers, money wallets
    (shown by ``careledger balance`` in programs that have them)."""

    benefits: tuple[str, ...]
    membership: str | None  # the plan active as of the account's latest time
    membership_discount_percent: int
    vouchers: tuple[tuple[str, str, str], ...]  # (voucher id, reward id, status)
    cashback_balance: Decimal
    prepaid_balance: Decimal
    prepayment_discount_percent: int


@dataclass(frozen=True)
class Balance:
    """A patient's position in a program: what ``careledger balance`` reports."""

    patient_id: str
    program_id: str
    available: int
    tier: str
    qualifying_points: int
    lifetime_earned: int
    lifetime_redeemed: int
    lifetime_expired: int
    lifetime_reversed: int
    discount_percent: int
    spend_total: Decimal
    rewards_unlocked: int
    next_expiry: datetime | None
