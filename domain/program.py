"""A loyalty program's rules, as plain values.

The program is data: the default lives in ``domain/programs/clinic-default.json`` and is
validated when loaded (see ``careledger.programs``). Every ledger entry records
``Program.version``, so an auditor can tell which rules paid which points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Tier:
    """A status tier: reached at ``threshold`` qualifying points, boosting earning rules."""

    name: str
    threshold: int
    multiplier: Decimal


@dataclass(frozen=True)
class StepsRule:
    """Daily step totals: the day's highest reading earns the best band it reaches."""

    bands: tuple[tuple[int, int], ...]  # (minimum steps, points), highest minimum first

    def base_points(self, steps: int) -> int:
        """The points a day with ``steps`` steps is worth before any tier multiplier."""
        for minimum, points in self.bands:
            if steps >= minimum:
                return points
        return 0


@dataclass(frozen=True)
class ReferralRule:
    """The referral bonus: paid once per referee whose first visit falls in the window."""

    enabled: bool
    window: timedelta
    referrer_bonus: int
    referee_bonus: int


@dataclass(frozen=True)
class SpendRule:
    """Spend earns no points; it sets a discount and unlocks a reward every N payments."""

    currency: str
    discount_threshold: Decimal
    discount_base_percent: int
    discount_step: Decimal
    discount_step_percent: int
    discount_max_percent: int
    reward_every_payments: int
    reward_id: str

    def discount_percent(self, spend_total: Decimal) -> int:
        """The discount a cumulative spend earns."""
        if spend_total < self.discount_threshold:
            return 0
        steps = ((spend_total - self.discount_threshold) / self.discount_step).to_integral_value(
            rounding=ROUND_FLOOR
        )
        percent = self.discount_base_percent + int(steps) * self.discount_step_percent
        return min(percent, self.discount_max_percent)


@dataclass(frozen=True)
class Program:
    """Every number the ledger decides with, for one program at one version."""

    program_id: str
    version: str
    visit_points: dict[str, int]
    checkup_points: dict[str, int]
    checkups_once_per_year: frozenset[str]
    assessment_points: int
    review_points: int
    review_cooldown: timedelta
    steps: StepsRule
    tiers: tuple[Tier, ...]  # ascending thresholds, the first at 0
    qualifying_window: timedelta
    lot_lifetime: timedelta
    referral: ReferralRule
    spend: SpendRule
    timezone: ZoneInfo  # calendar years and quarters are the program's local ones
    tier_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier_names", tuple(t.name for t in self.tiers))

    def tier(self, name: str) -> Tier:
        """The tier called ``name``."""
        return self.tiers[self.tier_names.index(name)]

    def tier_for(self, qualifying_points: int) -> Tier:
        """The highest tier whose threshold ``qualifying_points`` reaches."""
        reached = self.tiers[0]
        for tier in self.tiers:
            if qualifying_points >= tier.threshold:
                reached = tier
        return reached

    def rank(self, tier_name: str) -> int:
        """The position of a tier, bronze lowest."""
        return self.tier_names.index(tier_name)

    @staticmethod
    def multiply(base_points: int, tier: Tier) -> int:
        """Apply a tier multiplier, rounding down as the rules say."""
        return int((Decimal(base_points) * tier.multiplier).to_integral_value(rounding=ROUND_FLOOR))
