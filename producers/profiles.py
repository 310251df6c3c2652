"""Traffic profiles: what the patients of each shipped program do, as data.

The simulator (``producers.clinic``) has one patient model and one agenda; a profile says which
interactions a program's patients produce, how often, at what prices, and what the program pays
for them. Points are the program's *base* points (``domain/programs/<id>.yaml``): the
simulator's balance estimate uses them, and tier multipliers and streak bonuses only ever add
to them, so the estimate errs on the safe side. ``clinic-default``'s profile is the numbers of
``producers.habits`` unchanged, so its traffic stays byte for byte what it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from producers import habits as h
from producers.habits import Habit, Population
from schemas.v1 import DEFAULT_PROGRAM_ID

__all__ = [
    "PROFILES",
    "Action",
    "Memberships",
    "Plan",
    "Reward",
    "Shelf",
    "Stamps",
    "TrafficProfile",
    "Wallets",
    "Wearables",
    "period_key",
]


class Reward(NamedTuple):
    """A reward: its id, its points, and where it is redeemed (None: the home). In a
    catalogue, also the base qualifying points of its minimum tier, its limit per calendar
    month (0: none), how often it is picked, and the further requests of a session (a course
    of treatment books a parking pass for each visit)."""

    reward_id: str
    points: int
    partner_id: str | None = None
    min_qualifying: int = 0
    per_month: int = 0
    weight: float = 1.0
    burst: float = 0.0


@dataclass(frozen=True)
class Plan:
    """A paid membership plan: its price, its term in months, its share of the purchases and
    its earning multiplier (whole: the estimate stays in whole points)."""

    plan_id: str
    cents: int
    months: int
    weight: float
    multiplier: int = 1


@dataclass(frozen=True)
class Memberships:
    """How members behave at each term's end: renew (buy again while active), cancel during
    the term (it runs out), or let it lapse; some who lapsed or cancelled buy again later."""

    plans: tuple[Plan, ...]
    renew: float
    cancel: float
    rejoin: float


@dataclass(frozen=True)
class Wallets:
    """The money wallets: cashback percent of each payment and its lifetime, the chance a
    payment draws on either wallet, and the range of a prepayment (cents)."""

    cashback_percent: int
    cashback_days: int
    cashback_use: float
    prepaid_use: float
    prepayment_cents: tuple[int, int]


@dataclass(frozen=True)
class Stamps:
    """Every ``every``-th payment issues voucher ``<reward_id>:<n>``; ``use`` of them is used
    within ``use_days``."""

    every: int
    reward_id: str
    use: float
    use_days: tuple[int, int]


@dataclass(frozen=True)
class Shelf:
    """What a partner sells in one category: how often, at what prices, for how many points."""

    partner_id: str
    category: str
    weight: float  # share of the patients' purchases
    cents: tuple[int, int]  # price range
    points_per_unit: int  # base points per 1.00, rounded down (0: the program pays nothing)
    hours: tuple[int, int]  # opening hours
    source: str  # the partner's till


@dataclass(frozen=True)
class Action:
    """A portal action: its share of a patient's actions, its points and the program's caps
    on it (awards per calendar period: day, month, quarter, year or lifetime)."""

    action: str
    weight: float
    points: int
    caps: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Wearables:
    """How devices report the day's steps: the share of days with readings, the chance of each
    partial reading before (or, outside its hours, after) the day's total, the base points of
    the total by band, a monthly cap on them, and the days whose readings sync late."""

    reading_days: float = h.READING_DAYS
    partials: tuple[float, ...] = (h.SECOND_READING,)
    partial_hours: tuple[int, int] = (12, 16)
    total_hours: tuple[int, int] = (20, 24)
    bands: tuple[tuple[int, int], ...] = h.STEP_BANDS
    month_cap: int | None = None
    late_share: float = 0.0
    late_days: int = 0


@dataclass(frozen=True)
class Payers:
    """Who pays for the patients' care (``patient.enrolled.payer_class``, by a fixed mix),
    some coverages changing once later (``coverage.changed``), and the program's payer caps
    in points at its point value (docs/rules.md "Payer rules"), so the simulator never
    counts, nor cancels, a redemption the ledger refuses ``payer_cap``."""

    mix: tuple[tuple[str, float], ...]  # (payer class, share of patients)
    change_share: float  # patients whose coverage changes once after they enrol
    item_cap_points: int
    year_cap_points: int
    federal: frozenset[str] = frozenset({"medicare", "medicaid", "tricare"})


@dataclass(frozen=True)
class TrafficProfile:
    """A program's simulated traffic. ``tag`` goes in front of every event id, so the traffic
    of several programs can share one ledger (ids are unique across it)."""

    program_id: str
    populations: Mapping[str, Population]  # by --churn name: default, heavy
    currency: str = "USD"
    tag: str = ""
    sources: Mapping[str, str] = field(default_factory=lambda: dict(h.ID_TAGS))  # -> id tag
    rewards: tuple[Reward, ...] = tuple(Reward(*reward) for reward in h.REWARDS)
    restricted_partners: frozenset[str] = frozenset()  # their points are spent only there
    misplaced_share: float = 0.0  # redemptions elsewhere counting restricted points (rejected)
    shelves: tuple[Shelf, ...] = ()
    actions: tuple[Action, ...] = ()
    actions_per_session: float = 0.0  # further actions after a session's first
    wearables: Wearables = Wearables()
    word_of_mouth: float = h.WORD_OF_MOUTH_SHARE
    other_vaccines_per_year: float = h.OTHER_VACCINES_PER_YEAR
    void_share: float = h.VOID_SHARE
    max_multiplier: float = h.MAX_TIER_MULTIPLIER  # a void takes back up to this times the base
    pays_visits: bool = True  # visits earn their base points
    review_cooldown_days: int = h.REVIEW_COOLDOWN_DAYS  # days between paid reviews (estimate)
    # The rewards side: redemptions name a catalogue reward (the ledger knows its price) and
    # ``voucher_use`` of the vouchers surely issued are used within ``voucher_use_days``.
    catalogue: bool = False
    voucher_use: float = 0.0
    voucher_use_days: tuple[int, int] = (1, 60)
    memberships: Memberships | None = None
    wallets: Wallets | None = None
    stamps: Stamps | None = None
    payers: Payers | None = None

    @property
    def has_holdings(self) -> bool:
        """Whether its patients need a rewards side estimate (``producers.holdings``)."""
        return (
            self.catalogue
            or self.memberships is not None
            or self.wallets is not None
            or (self.stamps is not None)
        )

    @property
    def wire_programid(self) -> str | None:
        """The ``programid`` the events carry; None for the contract's default (omitted)."""
        return None if self.program_id == DEFAULT_PROGRAM_ID else self.program_id


def period_key(per: str, iso_day: str) -> str:
    """The calendar period of ``per`` holding ``iso_day`` (UTC programs), as a short key."""
    if per == "day":
        return iso_day
    if per == "month":
        return iso_day[:7]
    if per == "quarter":
        return f"{iso_day[:4]}-Q{(int(iso_day[5:7]) - 1) // 3 + 1}"
    if per == "year":
        return iso_day[:4]
    if per == "lifetime":
        return ""
    raise ValueError(f"no calendar period {per!r}")


def _heavy(loyal: Habit, churning: Habit) -> Population:
    """The recipe of ``habits.HEAVY_CHURN``: nearly everyone stops within weeks of joining."""
    return Population(
        (replace(loyal, share=0.05), replace(churning, share=0.95)),
        churn_after_days=0,
        churn_mean_days=10.0,
    )


# A US clinic's payer mix, opt-in (``--payers``: the default traffic stays byte for byte what
# it was); clinic-default values 1,000 points at 10.00 USD and caps federal
# classes at 15.00 a reward and 75.00 a calendar year.
CLINIC_PAYERS: Final = Payers(
    mix=(
        ("commercial", 0.55),
        ("medicare", 0.20),
        ("medicaid", 0.15),
        ("tricare", 0.03),
        ("self_pay", 0.07),
    ),
    change_share=0.05,
    item_cap_points=1500,
    year_cap_points=7500,
)
CLINIC_DEFAULT: Final = TrafficProfile(DEFAULT_PROGRAM_ID, h.POPULATIONS)

# -- coalition-health: partners' purchases, clinic visits (no co-pay), portal engagement ------

PHARMACY: Final = "urn:coalition:pharmacy-1:pos"
GIFT_SHOP: Final = "urn:coalition:giftshop-1:pos"
WELLNESS: Final = "urn:coalition:wellness-1:bookings"


def _habit(
    name: str,
    share: float,
    redemptions_per_year: float,
    visits_per_month: float = 0.0,
    purchases_per_month: float = 0.0,
    engagements_per_month: float = 0.0,
    steps: tuple[int, int] | None = None,
    spread: float = 0.35,
    churns: bool = False,
) -> Habit:
    """A patient outside clinic-default: no co-pays, reviews, referrals or preventive care
    (the programs below pay nothing for them); ``steps``: wears a device, daily mean in range."""
    return Habit(
        name,
        share,
        visits_per_month,
        *(0.0, 0.0, 0.0),  # pays after a visit, reviews after a visit, referrals per year
        redemptions_per_year,
        *(0.0,) * 5,  # assessments, annual wellness, flu shots, screenings, dental cleanings
        wears_device=steps is not None,
        churns=churns,
        purchases_per_month=purchases_per_month,
        engagements_per_month=engagements_per_month,
        step_range=steps or (0, 0),
        step_spread=spread,
    )


# Visits are publicly funded (no co-pay): the money side is the partners' purchases.
_COALITION_HABITS: Final = (
    _habit("loyal", 0.25, 5.0, visits_per_month=1.0, purchases_per_month=4.0,
           engagements_per_month=18.0),
    _habit("shopper", 0.35, 3.0, visits_per_month=0.3, purchases_per_month=3.0,
           engagements_per_month=3.0),
    _habit("portal", 0.20, 2.0, visits_per_month=0.6, purchases_per_month=0.8,
           engagements_per_month=26.0),
    _habit("churning", 0.20, 1.0, visits_per_month=0.8, purchases_per_month=2.0,
           engagements_per_month=8.0, churns=True),
)  # fmt: skip

COALITION_HEALTH: Final = TrafficProfile(
    "coalition-health",
    {
        "default": Population(_COALITION_HABITS, churn_after_days=30, churn_mean_days=75.0),
        "heavy": _heavy(_COALITION_HABITS[0], _COALITION_HABITS[3]),
    },
    currency="CAD",
    tag="ch",
    sources={**h.ID_TAGS, PHARMACY: "rx", GIFT_SHOP: "gft", WELLNESS: "wel"},
    rewards=(
        Reward("parking-pass", 200),  # at the clinic, the home partner
        Reward("pharmacy-voucher-5", 500, "pharmacy-1"),
        Reward("pharmacy-voucher-20", 2000, "pharmacy-1"),
        Reward("gift-card-10", 1000, "giftshop-1"),
        Reward("yoga-class", 1500, "wellness-1"),
        Reward("wellness-month", 4000, "wellness-1"),
    ),
    restricted_partners=frozenset({"wellness-1"}),
    misplaced_share=0.15,
    shelves=(
        Shelf("pharmacy-1", "front_store", 0.45, (299, 7_999), 10, (8, 22), PHARMACY),
        Shelf("pharmacy-1", "prescription", 0.25, (999, 18_000), 0, (9, 21), PHARMACY),
        Shelf("giftshop-1", "gift", 0.15, (499, 6_000), 5, (9, 20), GIFT_SHOP),
        Shelf("wellness-1", "wellness_class", 0.15, (1_500, 4_500), 15, (6, 21), WELLNESS),
    ),
    actions=(
        Action("portal_login", 0.42, 5, (("day", 1), ("month", 20))),
        Action("record_viewed", 0.16, 10, (("month", 5),)),
        Action("message_sent", 0.11, 10, (("month", 5),)),
        Action("bill_paid_online", 0.07, 25, (("month", 2),)),
        Action("appointment_booked_online", 0.10, 25, (("month", 4),)),
        Action("survey_completed", 0.04, 50, (("quarter", 1),)),
        Action("social_follow", 0.03, 100, (("lifetime", 1),)),
        Action("content_shared", 0.07, 20, (("month", 2),)),
    ),
    actions_per_session=0.6,
    word_of_mouth=0.0,  # the program pays no referrals
    other_vaccines_per_year=0.0,  # nor preventive care
    max_multiplier=1.0,  # one tier, x1.00
)

# -- activity-motion: daily steps against a 10,000-step goal; tiers by goal days -------------

# Nobody visits (the program pays nothing for visits): they wear a device, some of them
# meeting 10,000 steps nearly every day (streaks, champion), some often enough for active.
_MOTION_HABITS: Final = (
    _habit("committed", 0.30, 4.0, steps=(13_500, 17_000), spread=0.18),
    _habit("steady", 0.25, 2.0, steps=(9_500, 12_500), spread=0.25),
    _habit("occasional", 0.30, 1.0, steps=(5_500, 9_000)),
    _habit("churning", 0.15, 0.5, steps=(3_000, 9_000), churns=True),
)

ACTIVITY_MOTION: Final = TrafficProfile(
    "activity-motion",
    {
        "default": Population(_MOTION_HABITS, churn_after_days=30, churn_mean_days=75.0),
        "heavy": _heavy(_MOTION_HABITS[0], _MOTION_HABITS[3]),
    },
    tag="am",
    wearables=Wearables(
        reading_days=0.95,
        partials=(0.6, 0.3),  # several syncs a day, in any order of their counts
        partial_hours=(7, 23),
        total_hours=(20, 24),
        bands=((10_000, 30),),  # a goal day earns 30 (times the tier), once a day
        month_cap=600,
        late_share=0.08,  # the phone was off: the day's readings arrive a few days late
        late_days=3,
    ),
    word_of_mouth=0.0,
    other_vaccines_per_year=0.0,
)

# -- membership-plus: a catalogue, tier privileges and paid memberships -----------------------

# Clinic patients without reviews, referrals or assessments (the program pays none of them):
# visits, co-pays and the year's checkups; some buy a membership soon after enrolling. The
# chronic patients visit weekly or more and redeem parking passes in courses of treatment.
_MEMBER_HABITS: Final = (
    Habit("chronic", 0.15, 5.0, 0.6, 0.0, 0.0, 10.0, 0.0, 0.9, 0.8, 1.0, 2.0,
          buys_membership=0.6),
    Habit("loyal", 0.25, 2.0, 0.75, 0.0, 0.0, 5.0, 0.0, 0.9, 0.7, 0.5, 2.0, buys_membership=0.35),
    Habit("occasional", 0.40, 0.6, 0.7, 0.0, 0.0, 1.0, 0.0, 0.4, 0.35, 0.2, 0.8,
          buys_membership=0.08),
    Habit("churning", 0.20, 1.2, 0.75, 0.0, 0.0, 1.0, 0.0, 0.5, 0.3, 0.2, 1.0, churns=True,
          buys_membership=0.1),
)  # fmt: skip

MEMBERSHIP_PLUS: Final = TrafficProfile(
    "membership-plus",
    {
        "default": Population(_MEMBER_HABITS, churn_after_days=30, churn_mean_days=75.0),
        "heavy": _heavy(_MEMBER_HABITS[1], _MEMBER_HABITS[3]),
    },
    tag="mp",
    rewards=(  # the catalogue; min_qualifying: plus 1500, premier 4000 (base points)
        Reward("parking-pass", 300, per_month=4, weight=0.4, burst=1.5),
        Reward("gym-discount", 1500, weight=0.15),
        Reward("charity-donation", 1000, weight=0.2),
        Reward("free-checkup", 2000, min_qualifying=1500, weight=0.15),
        Reward("wellness-workshop", 500, min_qualifying=4000, weight=0.1),
    ),
    catalogue=True,
    voucher_use=0.6,  # of the vouchers surely issued; some are cancelled, the rest expire
    memberships=Memberships(
        (Plan("annual", 48_000, 12, 0.3, 2), Plan("monthly", 4_500, 1, 0.7, 2)),
        renew=0.7,
        cancel=0.12,
        rejoin=0.3,
    ),
    word_of_mouth=0.0,  # referrals are off
    max_multiplier=3.0,  # premier x1.50 times a membership's x2.00
)

# -- clinic-discounts: a private clinic's discounts, stamp card, cashback and prepayments ----

# Patients pay for every visit (GBP), review now and then (the only points), and some pay in
# advance. Preventive care is not part of this clinic's offer.
_DISCOUNT_HABITS: Final = (
    Habit("regular", 0.30, 1.5, 0.95, 0.25, 0.0, 2.0, *(0.0,) * 5, prepayments_per_year=3.0),
    Habit("prepaying", 0.20, 1.0, 0.95, 0.15, 0.0, 0.5, *(0.0,) * 5, prepayments_per_year=5.0),
    Habit("occasional", 0.35, 0.5, 0.9, 0.10, 0.0, 0.3, *(0.0,) * 5, prepayments_per_year=0.3),
    Habit("churning", 0.15, 1.0, 0.9, 0.15, 0.0, 0.3, *(0.0,) * 5, churns=True,
          prepayments_per_year=0.5),
)  # fmt: skip

CLINIC_DISCOUNTS: Final = TrafficProfile(
    "clinic-discounts",
    {
        "default": Population(_DISCOUNT_HABITS, churn_after_days=30, churn_mean_days=75.0),
        "heavy": _heavy(_DISCOUNT_HABITS[0], _DISCOUNT_HABITS[3]),
    },
    currency="GBP",
    tag="cd",
    rewards=(Reward("parking-pass", 100), Reward("gift-card-10", 500)),
    pays_visits=False,  # only reviews earn points
    review_cooldown_days=31,  # the rule's 30 rolling days, with a day to spare
    wallets=Wallets(
        cashback_percent=2,
        cashback_days=180,
        cashback_use=0.35,
        prepaid_use=0.8,
        prepayment_cents=(10_000, 60_000),
    ),
    stamps=Stamps(5, "free-service", use=0.7, use_days=(7, 120)),
    word_of_mouth=0.0,
    other_vaccines_per_year=0.0,
    max_multiplier=1.0,
)

PROFILES: Final[Mapping[str, TrafficProfile]] = {
    profile.program_id: profile
    for profile in (
        CLINIC_DEFAULT,
        COALITION_HEALTH,
        ACTIVITY_MOTION,
        MEMBERSHIP_PLUS,
        CLINIC_DISCOUNTS,
    )
}


# Programs whose traffic can carry payer classes (``--payers``): those with payer rules.
PAYERS: Final[Mapping[str, Payers]] = {DEFAULT_PROGRAM_ID: CLINIC_PAYERS}


def profile_for(program_id: str, payers: bool = False) -> TrafficProfile:
    """The program's traffic profile, with its payer mix when ``payers`` (programs in
    ``PAYERS`` only: raises ``ValueError`` for another)."""
    profile = PROFILES[program_id]
    if not payers:
        return profile
    if program_id not in PAYERS:
        raise ValueError(f"--payers: {program_id} has no payer rules ({', '.join(PAYERS)} has)")
    return replace(profile, payers=PAYERS[program_id])
