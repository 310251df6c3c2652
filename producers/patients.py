"""What the simulator remembers about one patient: habit, schedule and a rough points balance.

The balance is an estimate in the program's *base* points, kept only so the simulator asks for
redemptions the patient can plausibly afford. It errs low on purpose: tier multipliers and
referral bonuses (which only add) are ignored, points are bucketed by 30-day period and a bucket
is dropped at least five days before its lots would really expire, and a void is assumed to
take back the most a tier multiplier could have added.

In a coalition, points a partner restricts to redemption at itself are kept in a pool of their
own (``pools``), and capped rules are estimated with the patient's ``uses`` of each counter.
A program with a rewards side also keeps the patient's ``holdings`` (``producers.holdings``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final

from producers.habits import Habit

if TYPE_CHECKING:
    from producers.holdings import Holdings

NEVER: Final = sys.maxsize
_BUCKET_DAYS: Final = 30
_BUCKETS_KEPT: Final = 12  # 12 x 30 = 360 days, inside the 365-day lot lifetime


class Points:
    """An estimated balance: base points by 30-day bucket, and a debt left by voids."""

    __slots__ = ("debt", "lots")

    def __init__(self) -> None:
        self.lots: dict[int, int] = {}  # 30-day bucket -> base points still available
        self.debt = 0

    def earn(self, day: int, points: int) -> None:
        """Add points earned on ``day``; a debt left by a void is repaid first, as in the ledger."""
        repaid = min(self.debt, points)
        self.debt -= repaid
        if points > repaid:
            bucket = day // _BUCKET_DAYS
            self.lots[bucket] = self.lots.get(bucket, 0) + points - repaid

    def available(self, day: int) -> int:
        """The estimated balance on ``day``, after dropping buckets that may have expired."""
        for bucket in [b for b in self.lots if b <= day // _BUCKET_DAYS - _BUCKETS_KEPT]:
            del self.lots[bucket]
        return sum(self.lots.values()) - self.debt

    def spend(self, day: int, points: int) -> None:
        """Take points, soonest-expiring first; what is missing becomes a debt."""
        self.available(day)
        for bucket in list(self.lots):  # insertion order is oldest first
            taken = min(points, self.lots[bucket])
            self.lots[bucket] -= taken
            points -= taken
            if not self.lots[bucket]:
                del self.lots[bucket]
            if not points:
                return
        self.debt += points


class Patient(Points):
    """One simulated patient; slots keep 20,000 of them small. Its own points are those
    spendable anywhere in the program."""

    __slots__ = (
        "capped",
        "churn_day",
        "device",
        "enrolled",
        "habit",
        "holdings",
        "index",
        "join_day",
        "late",
        "payer_class",
        "pid",
        "pools",
        "referred",
        "referrer",
        "review_day",
        "step_mean",
        "uses",
    )

    def __init__(self, number: int, habit: Habit, join_day: int, late: bool) -> None:
        super().__init__()
        self.index = number - 1  # position in the clinic's patient list
        self.pid = f"p-{number:06d}"
        self.device = f"band-{number:06d}"
        self.habit = habit
        self.join_day = join_day
        self.late = late  # joins after the launch weeks, so can be claimed as a referee
        self.enrolled = False
        self.referred = False
        self.referrer: str | None = None  # named as referred_by on enrolment
        self.churn_day = NEVER
        self.review_day = -NEVER
        self.step_mean = 0.0
        # partner -> the points it issued that are spendable only there (a coalition's sub-ledger)
        self.pools: dict[str, Points] = {}
        self.uses: dict[str, tuple[str, int]] = {}  # counter -> (its current period, awards)
        self.holdings: Holdings | None = None  # memberships, wallets, stamps (some programs)
        self.payer_class: str | None = None  # told on enrolment (programs with payer rules)
        self.capped: dict[str, int] = {}  # year -> points of its redemptions that year

    def earn(self, day: int, points: int) -> None:
        """Add base ``points``; an active membership's multiplier applies in the balance."""
        holdings = self.holdings
        if holdings is not None:
            credited = points * holdings.multiplier_on(day)
            holdings.earned(day, points, credited)
            points = credited
        super().earn(day, points)

    def used(self, counter: str, period: str) -> int:
        """What ``counter`` has used in ``period`` (a key such as ``2026-03``)."""
        seen = self.uses.get(counter)
        return seen[1] if seen is not None and seen[0] == period else 0

    def use(self, counter: str, period: str, amount: int) -> None:
        self.uses[counter] = (period, self.used(counter, period) + amount)

    def every_pool(self) -> list[Points]:
        """Its own points and every restricted pool: what a void may take from."""
        return [self, *self.pools.values()]
