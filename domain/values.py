"""Value objects the account's events carry.

They are plain frozen dataclasses so the application can register one generic transcoding for
them; nothing here depends on how they are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class Credit:
    """Points paid into a new lot; part may first repay a negative balance."""

    lot_id: UUID
    expires_at: datetime
    points: int
    debt_repaid: int
    entry: LedgerEntry


@dataclass(frozen=True)
class Allocation:
    """Points taken from (or returned to) one lot, remembering the lot's expiry."""

    lot_id: UUID
    expires_at: datetime
    points: int


@dataclass
class Lot:
    """Points earned together, expiring together. ``remaining`` never goes below zero."""

    lot_id: UUID
    expires_at: datetime
    remaining: int
    source: str
    source_id: str


@dataclass
class Receipt:
    """What an accepted interaction did, kept so a void can reverse exactly that.

    ``slot`` names the frequency cap the interaction used (a calendar year, a quarter, a
    review, a step day) so a void can free it again.
    """

    kind: str
    occurred_at: datetime
    lot_ids: tuple[UUID, ...] = ()
    points: int = 0
    base_points: int = 0
    slot: str | None = None
    amount: Decimal | None = None
    voided: bool = False


@dataclass
class RedemptionRecord:
    """A redemption the account has seen, and the lots it drew on."""

    redemption_id: str
    status: str  # "redeemed", "rejected" or "cancelled"
    points: int
    allocations: tuple[Allocation, ...] = ()


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
