"""Rewards-side values and arithmetic: vouchers, paid memberships, money wallets.

Pure values and functions the account's mechanics use: month arithmetic that clamps to the
month's end, the prepayment discount ladder, cashback rounded down to the cent. Money is
``Decimal`` and never mixed with points.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

CENT = Decimal("0.01")
VOUCHER_VALIDITY = timedelta(days=90)


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus whole months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))


def cents_down(amount: Decimal) -> Decimal:
    """Money rounded down to the cent."""
    return amount.quantize(CENT, rounding=ROUND_FLOOR)


@dataclass
class Voucher:
    """A reward issued to a patient, used at most once before it expires."""

    voucher_id: str
    reward_id: str
    points: int
    issued_at: datetime
    expires_at: datetime
    status: str = "issued"  # issued | used | cancelled | expired
    used_at: datetime | None = None


@dataclass
class Membership:
    """A paid membership: active on [started_at, paid_through) of each of its periods."""

    membership_id: str
    plan_id: str
    started_at: datetime
    paid_through: datetime
    status: str = "active"  # active | cancelled (runs to paid_through) | lapsed
    cancelled_at: datetime | None = None
    periods: list[tuple[datetime, datetime]] = field(default_factory=list)

    def active_at(self, at: datetime) -> bool:
        return any(start <= at < end for start, end in self.periods)


@dataclass
class MoneyLot:
    """Cashback earned together and expiring together."""

    lot_id: str
    remaining: Decimal
    expires_at: datetime
