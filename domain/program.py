"""A loyalty program as plain values: versions of rules, tiers and mechanics.

The program is data: each shipped program is a file in ``domain/programs/`` validated and
compiled once when loaded (``careledger.application.programs``). A program holds versions,
each in force from its ``effective_from`` instant; an interaction is decided by the version in
force at its event time, and every ledger entry records that version, so an auditor can tell
which rules paid which points.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from domain.payer import PayerRules
from domain.rules.limits import Limit
from domain.rules.rule import Rule


class Downgrade(StrEnum):
    """When an account below a tier's threshold leaves the tier."""

    AT_REVIEW = "at_review"  # at the next maintenance
    GRACE = "grace"  # after a grace period spent below the threshold
    NEVER = "never"  # never (VIP tiers)


@dataclass(frozen=True)
class Tier:
    """A status tier: reached at ``threshold`` qualifying points, boosting earning rules."""

    name: str
    threshold: int
    multiplier: Decimal
    benefits: tuple[str, ...] = ()
    downgrade: Downgrade = Downgrade.AT_REVIEW
    grace: timedelta = timedelta(0)  # for Downgrade.GRACE


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
    reward_validity: timedelta | None = None  # set: every Nth payment issues a voucher

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
class Partner:
    """A coalition partner; ``exclusive`` partners' points are redeemed only at themselves."""

    partner_id: str
    kind: str
    home: bool = False
    exclusive: bool = False


@dataclass(frozen=True)
class ActivityGoal:
    """A day is a goal day when its best reading meets ``goal_steps``; a streak bonus pays
    ``streak_points`` for every complete block of ``streak_days`` consecutive goal days."""

    goal_steps: int
    streak_days: int = 0  # 0: no streak bonus
    streak_points: int = 0


@dataclass(frozen=True)
class CatalogueReward:
    """A reward of the catalogue: price in points, money value, minimum tier, limits."""

    reward_id: str
    points: int
    value: Decimal | None = None
    min_tier: str | None = None
    limits: tuple[Limit, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A paid membership plan: price, term in months, earning multiplier, privileges."""

    plan_id: str
    price: Decimal
    term_months: int
    multiplier: Decimal
    discount_percent: int = 0
    benefits: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cashback:
    """``percent`` of each payment's amount, rounded down to the cent, expiring after a while."""

    percent: Decimal
    lifetime: timedelta


@dataclass(frozen=True)
class Prepaid:
    """The prepaid wallet's discount: ``steps`` of (minimum total, percent), highest first,
    over the prepayments of the trailing ``window``."""

    window: timedelta
    steps: tuple[tuple[Decimal, int], ...] = ()

    def discount_percent(self, total: Decimal) -> int:
        return next((percent for minimum, percent in self.steps if total >= minimum), 0)


@dataclass(frozen=True)
class ProgramVersion:
    """Every rule and number the ledger decides with, for one version of a program."""

    version: str
    effective_from: datetime
    rules: tuple[Rule, ...]
    tiers: tuple[Tier, ...]  # ascending thresholds, the first at 0
    qualifying_window: timedelta
    lot_lifetime: timedelta
    referral: ReferralRule
    spend: SpendRule
    expiry_notice: timedelta = timedelta(days=30)  # a lot's notice is due this long before
    partners: tuple[Partner, ...] = ()
    point_value: Decimal | None = None  # money per point, in the program's currency
    activity: ActivityGoal | None = None
    qualification_basis: str = "qualifying_points"  # or "goal_days"
    catalogue: dict[str, CatalogueReward] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    cashback: Cashback | None = None
    prepaid: Prepaid | None = None
    payer: PayerRules | None = None  # limits for federally insured patients (None: none)
    tier_names: tuple[str, ...] = field(init=False)
    earning_rules: dict[str, tuple[Rule, ...]] = field(init=False, repr=False)
    boosts: dict[str, tuple[Rule, ...]] = field(init=False, repr=False)
    # Read on every interaction, so worked out once:
    grants_benefits: bool = field(init=False, repr=False)  # a tier or plan lists benefits
    _home_partner: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier_names", tuple(t.name for t in self.tiers))
        home = next((p.partner_id for p in self.partners if p.home), None)
        object.__setattr__(self, "_home_partner", home)
        listed = any(t.benefits for t in self.tiers) or any(p.benefits for p in self.plans.values())
        object.__setattr__(self, "grants_benefits", listed)
        earning: dict[str, list[Rule]] = {}
        boosts: dict[str, list[Rule]] = {}
        for rule in self.rules:
            (boosts if rule.award.is_boost else earning).setdefault(rule.on, []).append(rule)
        object.__setattr__(self, "earning_rules", {k: tuple(v) for k, v in earning.items()})
        object.__setattr__(self, "boosts", {k: tuple(v) for k, v in boosts.items()})

    @property
    def home_partner(self) -> str | None:
        """The partner that issues visits and engagement (None: a program without partners)."""
        return self._home_partner

    def partner(self, partner_id: str) -> Partner | None:
        """The partner called ``partner_id``, if this version has one."""
        return next((p for p in self.partners if p.partner_id == partner_id), None)

    @property
    def exclusive_partners(self) -> frozenset[str]:
        """Partners whose points are redeemed only at themselves."""
        return frozenset(p.partner_id for p in self.partners if p.exclusive)

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
        """The position of a tier, the starting tier lowest."""
        return self.tier_names.index(tier_name)

    def listens_to(self, kind: str) -> bool:
        """Whether any earning rule of this version is about interactions of ``kind``."""
        return kind in self.earning_rules

    @staticmethod
    def multiply(base_points: int, tier: Tier) -> int:
        """Apply a tier multiplier, rounding down as the rules say."""
        return int((Decimal(base_points) * tier.multiplier).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class Program:
    """A program: its identity, its calendar and its versions (ascending ``effective_from``).

    Every version names the same tiers in the same order (the loader checks it), so an
    account's tier history reads the same under any version.
    """

    program_id: str
    timezone: ZoneInfo  # calendar days, weeks, months, quarters and years are local ones
    versions: tuple[ProgramVersion, ...]
    _starts: tuple[datetime, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(v.effective_from for v in self.versions))

    def at(self, when: datetime) -> ProgramVersion:
        """The version in force at ``when`` (the first version before it came into force)."""
        if len(self.versions) == 1:  # most programs, asked several times an interaction
            return self.versions[0]
        index = bisect_right(self._starts, when) - 1
        return self.versions[max(index, 0)]

    @property
    def latest(self) -> ProgramVersion:
        """The newest version."""
        return self.versions[-1]

    @property
    def starting_tier(self) -> str:
        """The tier every account starts in: the lowest."""
        return self.versions[0].tiers[0].name

    @property
    def tier_names(self) -> tuple[str, ...]:
        """The tiers, lowest first (the same in every version)."""
        return self.versions[0].tier_names

    @property
    def currency(self) -> str:
        """The program's currency (payments in another are refused)."""
        return self.latest.spend.currency
