"""What the simulator knows of a patient's rewards side: qualifying points, a membership, the
money wallets and a stamp card, estimated so that what it sends is what the ledger accepts.

Like the points estimate (``producers.patients``) every figure errs on the safe side: the
qualifying points are a lower bound (voids are a debt that never expires, a 30-day bucket
leaves the 365-day window early), a wallet counts only money credited on earlier days and
drops cashback two days before it expires, and draws from it soonest-expiring first, as the
ledger does, so what the ledger holds is never less than the estimate. A membership's dates
are day indexes: it is paid through the same second of the day as it started.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass
from datetime import date

from producers.patients import Points

__all__ = ["Holdings", "Membership", "Stamps", "add_months"]


def add_months(day: date, months: int) -> date:
    """``day`` plus whole months, clamped to the month's end, as the ledger's terms are."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, monthrange(year, month)[1]))


@dataclass(slots=True)
class Membership:
    """The patient's latest membership: started on day ``start``, paid through day
    ``paid_through`` (exclusive, at the second it started); cancelled: it will not renew."""

    membership_id: str
    plan_id: str
    start: int
    paid_through: int
    multiplier: int = 1
    cancelled: bool = False

    def active_on(self, day: int) -> bool:
        """Active at the end of ``day`` (its last day's end is uncertain)."""
        return self.start <= day < self.paid_through

    def multiplies(self, day: int) -> bool:
        """Surely active all ``day`` long, so it multiplies whatever is earned that day."""
        return self.start < day < self.paid_through


@dataclass(slots=True)
class Stamps:
    """The stamp card in the ledger's order: payments net of voids, vouchers issued so far."""

    payments: int = 0
    unlocked: int = 0

    def count(self, delta: int, every: int) -> int | None:
        """Apply a payment (+1) or a void of one (-1); the number of a voucher it unlocks."""
        self.payments += delta
        if delta > 0 and self.payments // every > self.unlocked:
            self.unlocked += 1
            return self.unlocked
        return None


class Holdings:
    """One patient's rewards side, as far as the simulator can be sure of it."""

    __slots__ = ("cashback", "membership", "pending", "prepaid", "qualifying", "stamps", "today")

    def __init__(self) -> None:
        self.qualifying = Points()  # base points in the qualifying window, a lower bound
        self.today = (-1, 0)  # (day, base points earned that day): maybe later than a request
        self.membership: Membership | None = None
        self.cashback: list[list[int]] = []  # [day earned, cents left], soonest-expiring first
        self.prepaid = 0  # cents credited on earlier days, less what was drawn
        self.pending = (-1, 0)  # (day, cents credited that day): usable from the next day
        self.stamps = Stamps()

    def multiplier_on(self, day: int) -> int:
        """The membership multiplier surely applied to what is earned on ``day``."""
        membership = self.membership
        return membership.multiplier if membership and membership.multiplies(day) else 1

    def earned(self, day: int, base: int, credited: int) -> None:
        """Base points count toward the tier; ``credited`` (multiplied) joined the balance."""
        self.qualifying.earn(day, base)
        self.today = (day, credited + self.earned_today(day))

    def qualifying_before(self, day: int) -> int:
        """Qualifying points surely held before anything earned on ``day``."""
        return self.qualifying.available(day) - self.earned_today(day)

    def earned_today(self, day: int) -> int:
        """Points credited on ``day``: some may come after a request of the same day."""
        return self.today[1] if self.today[0] == day else 0

    # -- money wallets (cents) ---------------------------------------------------------------

    def cashback_on(self, day: int, lifetime_days: int) -> int:
        """Cashback surely spendable on ``day``: earned earlier, two days or more from expiry."""
        self.cashback = [lot for lot in self.cashback if day <= lot[0] + lifetime_days - 2]
        return sum(cents for earned, cents in self.cashback if earned < day)

    def draw_cashback(self, cents: int) -> None:
        for lot in self.cashback:  # soonest-expiring first, like the ledger
            taken = min(cents, lot[1])
            lot[1] -= taken
            cents -= taken
        self.cashback = [lot for lot in self.cashback if lot[1]]

    def earn_cashback(self, day: int, cents: int) -> None:
        if cents > 0:
            self.cashback.append([day, cents])

    def prepaid_on(self, day: int) -> int:
        """Prepaid money surely in the wallet on ``day`` (prepayments of earlier days)."""
        credited, cents = self.pending
        if credited < day:
            self.prepaid, self.pending = self.prepaid + cents, (day, 0)
        return self.prepaid

    def prepay(self, day: int, cents: int) -> None:
        self.prepaid_on(day)
        self.pending = (day, self.pending[1] + cents)

    def draw_prepaid(self, cents: int) -> None:
        self.prepaid -= cents
