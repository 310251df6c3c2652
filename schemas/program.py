"""The program definition file: the contract a program manager writes a program in.

A program file (YAML, or JSON, which YAML reads too) holds a program's identity and calendar
and its versions, each complete and in force from ``effective_from``. These pydantic models
check the file's structure; ``careledger.application.programs`` checks what structure cannot
(ascending thresholds, known fields, conditions that compile) and compiles it for the ledger.
The JSON Schema under ``schemas/json/program.schema.json`` is generated from these models.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.v1 import PayerClass, PurchaseCategory

Points = Annotated[int, Field(ge=0, le=10_000_000, strict=True)]
PositivePoints = Annotated[int, Field(ge=1, le=10_000_000, strict=True)]
Days = Annotated[int, Field(ge=1, le=3660, strict=True)]
Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
RuleId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]
Money = Annotated[Decimal, Field(gt=0, decimal_places=2)]
EarningInteraction = Literal[
    "visit.completed",
    "checkup.completed",
    "assessment.completed",
    "review.submitted",
    "activity.reading",
    "purchase.recorded",
    "engagement.recorded",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedAward(_Strict):
    """A fixed number of points per interaction."""

    points: PositivePoints


class PerAmount(_Strict):
    """``rate`` points per 1.00 of a money field of the interaction, rounded down."""

    field: Literal["amount"] = "amount"
    rate: Annotated[Decimal, Field(gt=0, le=1000, decimal_places=4)]


class PerAmountAward(_Strict):
    per_amount: PerAmount


class Band(_Strict):
    min: Annotated[int, Field(ge=1, le=10_000_000, strict=True)]
    points: PositivePoints


class BestOf(_Strict):
    """The best band a reading of ``field`` reaches, once per ``group_by`` (a day); a better
    reading of the same group later tops up what the group already earned."""

    field: str = "steps"
    group_by: str = "day"
    bands: Annotated[list[Band], Field(min_length=1)]
    reason: Code = Field(default="no_top_up", description="reason code when nothing is topped up")


class BestOfAward(_Strict):
    best_of: BestOf


class Boost(_Strict):
    """A campaign: multiply (2.00 doubles) or add to what other rules paid the interaction."""

    multiply: Annotated[Decimal, Field(gt=1, le=10, decimal_places=2)] | None = None
    add: PositivePoints | None = None
    applies_to: list[RuleId] = Field(
        default_factory=list, description="rule ids it boosts; empty: every rule that paid"
    )


class BoostAward(_Strict):
    boost: Boost


class Limit(_Strict):
    """At most ``awards`` awards and/or ``points`` points per period (program time zone)."""

    per: Literal["day", "iso_week", "month", "quarter", "year", "rolling_days", "lifetime"]
    days: Days | None = Field(default=None, description="for per: rolling_days")
    awards: PositivePoints | None = None
    points: PositivePoints | None = None
    counter: RuleId | None = Field(
        default=None, description="share this limit with other rules naming the same counter"
    )
    reason: Code = Field(default="capped", description="reason code when the limit refuses")


class Window(_Strict):
    """Interactions with event time in [from, until) only (a campaign)."""

    from_: AwareDatetime | None = Field(default=None, alias="from")
    until: AwareDatetime | None = None


class RuleFile(_Strict):
    """An earning rule: on an interaction, if it matches, pay an award within limits."""

    id: RuleId
    on: EarningInteraction
    match: dict[str, str | list[str]] = Field(
        default_factory=dict, description="data field -> value or values (exact match)"
    )
    when: str | None = Field(default=None, description="a CEL condition (see docs/rules.md)")
    award: FixedAward | PerAmountAward | BestOfAward | BoostAward
    limits: list[Limit] = Field(default_factory=list)
    window: Window | None = None
    tier_multiplier: bool = True
    counts_toward_tier: bool | None = Field(
        default=None, description="default: true for awards, false for boosts"
    )


class TierFile(_Strict):
    name: Code
    threshold: Points
    multiplier: Annotated[Decimal, Field(ge=Decimal("1"), le=Decimal("10"), decimal_places=2)]
    benefits: list[Code] = Field(default_factory=list)
    downgrade: Literal["at_review", "grace", "never"] = "at_review"
    grace_days: Days | None = Field(default=None, description="for downgrade: grace")


class Qualification(_Strict):
    """What tiers are reached by: qualifying points, or goal days (needs ``activity``), in
    the trailing ``window_days``."""

    basis: Literal["qualifying_points", "goal_days"] = "qualifying_points"
    window_days: Days


class PartnerFile(_Strict):
    """A coalition partner: issues points for what is bought from it, redeems everyone's
    (unless ``redeem_only_here``: its points are spent only at itself, a sub-ledger)."""

    id: RuleId
    kind: Literal["clinic", "pharmacy", "gift_shop", "wellness_centre", "other"]
    home: bool = Field(default=False, description="issues visits and engagement; one per program")
    redeem_only_here: bool = False


class PointValue(_Strict):
    """What points are worth, in the program's currency: ``value`` per ``points`` points."""

    points: PositivePoints = 1000
    value: Money


class Streak(_Strict):
    """A bonus for every complete block of ``days`` consecutive goal days."""

    days: Annotated[int, Field(ge=2, le=366, strict=True)]
    points: PositivePoints


class Activity(_Strict):
    """Daily activity goals: a day is a goal day when its best reading meets ``goal_steps``."""

    goal_steps: Annotated[int, Field(ge=1, le=200_000, strict=True)]
    streak: Streak | None = None


class Referral(_Strict):
    enabled: bool
    window_days: Days
    referrer_bonus: Points
    referee_bonus: Points


class Spend(_Strict):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    discount_threshold: Money
    discount_base_percent: Percent
    discount_step: Money
    discount_step_percent: Percent
    discount_max_percent: Percent
    reward_every_payments: Annotated[int, Field(ge=1, le=1000, strict=True)]
    reward_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    reward_valid_days: Days | None = Field(
        default=None, description="every Nth payment issues a voucher valid this long"
    )


class RewardFile(_Strict):
    """A catalogue reward: its point price, its money value, who may have it, how often."""

    id: RuleId
    points: PositivePoints
    value: Money | None = Field(default=None, description="its money value (payer caps)")
    min_tier: Code | None = None
    limits: list[Limit] = Field(default_factory=list)


class PlanFile(_Strict):
    """A paid membership plan."""

    id: RuleId
    price: Money
    term: Literal["month", "year"]
    multiplier: Annotated[Decimal, Field(ge=Decimal("1"), le=Decimal("10"), decimal_places=2)]
    discount_percent: Percent = 0
    benefits: list[Code] = Field(default_factory=list)


class CashbackFile(_Strict):
    """A share of each payment's amount, rounded down to the cent, spendable in the program."""

    percent: Annotated[Decimal, Field(gt=0, le=100, decimal_places=2)]
    expires_days: Days


class PrepaidStep(_Strict):
    min_total: Money
    percent: Percent


class PrepaidFile(_Strict):
    """A prepaid wallet, and the discount its prepayments of the trailing window give."""

    window_days: Days = 365
    discounts: list[PrepaidStep] = Field(default_factory=list)


def _federal_classes() -> list[PayerClass]:
    return ["medicare", "medicaid", "tricare"]


def _never_earn() -> list[PurchaseCategory]:
    return ["prescription"]


class PayerRulesFile(_Strict):
    """Limits for patients whose payer class is federal (the OIG's nominal-value policy and
    the Anti-Kickback Statute in the US): every field has the federal default."""

    federal_classes: Annotated[list[PayerClass], Field(min_length=1)] = Field(
        default_factory=_federal_classes,
        description="payer classes held to these rules",
    )
    item_cap: Money = Field(
        default=Decimal("15.00"), description="the most one reward may be worth"
    )
    year_cap: Money = Field(
        default=Decimal("75.00"),
        description="the most a calendar year's rewards may be worth together (program zone)",
    )
    referral_bonuses: bool = Field(
        default=False, description="whether referral bonuses may be paid (to either side)"
    )
    never_earn: list[PurchaseCategory] = Field(
        default_factory=_never_earn,
        description="purchase categories that never earn",
    )


class VersionFile(_Strict):
    """One complete version of a program's rules."""

    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")]
    effective_from: AwareDatetime
    lot_lifetime_days: Days
    expiry_notice_days: Days = Field(
        default=30, description="how many days before a lot expires its notice is due"
    )
    qualification: Qualification
    tiers: Annotated[list[TierFile], Field(min_length=1)]
    rules: list[RuleFile]
    referral: Referral
    spend: Spend
    partners: list[PartnerFile] = Field(default_factory=list)
    point_value: PointValue | None = None
    activity: Activity | None = None
    catalogue: list[RewardFile] = Field(
        default_factory=list, description="with one, reward_id must name a reward"
    )
    plans: list[PlanFile] = Field(default_factory=list)
    cashback: CashbackFile | None = None
    prepaid: PrepaidFile | None = None
    payer_rules: PayerRulesFile | None = Field(
        default=None, description="limits for federally insured patients (docs/rules.md)"
    )


class ProgramFile(_Strict):
    """A program definition file."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"title": "careledger program"}
    )

    program_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    timezone: str = Field(description="IANA time zone of the program's calendar")
    versions: Annotated[list[VersionFile], Field(min_length=1)]
