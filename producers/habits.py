"""The simulated clinic's population and price lists: who comes how often, and for what.

Numbers are chosen to look like a mid-sized outpatient clinic with a loyalty programme and to
give about 10 interactions per enrolled patient per month, most of them daily step totals from
the quarter of patients who wear a device. Points are the program's *base* points
(``domain/programs/clinic-default.json``): the simulator's balance estimate uses them, and
the ledger's tier multipliers only ever add to them, so the estimate errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

EMR: Final = "urn:clinic:emr"
PORTAL: Final = "urn:clinic:portal"
POS: Final = "urn:clinic:pos"
WEARABLES: Final = "urn:clinic:wearables"

# The short tag each source puts in front of its event ids.
ID_TAGS: Final = {EMR: "emr", PORTAL: "web", POS: "pos", WEARABLES: "wbl"}


@dataclass(frozen=True)
class Habit:
    """How one kind of patient behaves; rates are per month or per year as named."""

    name: str
    share: float
    visits_per_month: float
    pays_after_visit: float
    reviews_after_visit: float
    referrals_per_year: float
    redemptions_per_year: float
    assessment_per_quarter: float
    wellness_per_year: float
    flu_shot_per_year: float
    screenings_per_year: float
    dental_per_year: float
    wears_device: bool = False
    churns: bool = False
    # Beyond the clinic (other programs' profiles, producers.profiles): partner purchases and
    # portal actions per month, and the daily steps of a device wearer (mean drawn from
    # ``step_range``, standard deviation ``step_spread`` times the mean).
    purchases_per_month: float = 0.0
    engagements_per_month: float = 0.0
    step_range: tuple[int, int] = (3_500, 12_500)
    step_spread: float = 0.35
    # The rewards side (membership and wallet programs): the chance of buying a membership
    # soon after enrolling, and prepayments into the prepaid wallet per year.
    buys_membership: float = 0.0
    prepayments_per_year: float = 0.0


HABITS: Final[tuple[Habit, ...]] = (
    Habit("loyal", 0.22, 2.0, 0.8, 0.25, 1.5, 4.0, 0.8, 0.9, 0.7, 0.5, 2.0),
    Habit("occasional", 0.38, 0.6, 0.7, 0.10, 0.2, 0.7, 0.2, 0.4, 0.35, 0.2, 0.8),
    Habit("churning", 0.15, 1.2, 0.75, 0.20, 0.3, 1.0, 0.4, 0.5, 0.3, 0.2, 1.0, churns=True),
    Habit("wearable", 0.25, 1.0, 0.75, 0.15, 0.5, 3.0, 0.6, 0.7, 0.5, 0.3, 1.2, wears_device=True),
)


@dataclass(frozen=True)
class Population:
    """Which habits the clinic's patients have, and how soon a churning patient stops coming:
    ``churn_after_days`` after enrolling plus a random wait of mean ``churn_mean_days``."""

    habits: tuple[Habit, ...]
    churn_after_days: int
    churn_mean_days: float


# The default clinic keeps most of its patients (12-month retention well above 20 %).
DEFAULT_POPULATION: Final = Population(HABITS, churn_after_days=30, churn_mean_days=75.0)
# A failing programme, for the retention alert: nearly everyone stops within weeks of joining.
HEAVY_CHURN: Final = Population(
    (replace(HABITS[0], share=0.05), replace(HABITS[2], share=0.95)),
    churn_after_days=0,
    churn_mean_days=10.0,
)
POPULATIONS: Final = {"default": DEFAULT_POPULATION, "heavy": HEAVY_CHURN}

# Enrolment: most patients join in the programme's first two weeks, the rest over the period.
LAUNCH_SHARE: Final = 0.7
LAUNCH_DAYS: Final = 14
WORD_OF_MOUTH_SHARE: Final = 0.08  # late joiners naming a referrer nobody announced
SURE_SHARE: Final = 0.8  # cancel only redemptions this far within the estimated balance
REFERRAL_CONVERTS: Final = 0.8  # referrals whose referee enrols (and then visits)
REFERRED_BY_ON_ENROLMENT: Final = 0.6  # converted referees whose enrolment names the referrer
CHANNELS: Final = (("portal", PORTAL), ("app", PORTAL), ("front_desk", EMR))

# Wearables: a daily total most days, sometimes an earlier partial reading as well.
READING_DAYS: Final = 0.9
SECOND_READING: Final = 0.35
STEP_BANDS: Final = ((10_000, 20), (5_000, 10))

# visit type: (weight, base points, price range in cents, opening hours)
VISITS: Final = {
    "in_person": (0.50, 100, (4_000, 18_000), (8, 18)),
    "telehealth": (0.28, 50, (2_500, 9_000), (8, 20)),
    "specialist": (0.12, 100, (12_000, 45_000), (9, 17)),
    "urgent_care": (0.10, 50, (8_000, 30_000), (7, 23)),
}
CHECKUP_POINTS: Final = {
    "annual_wellness": 500,
    "screening": 200,
    "vaccination": 100,
    "dental_cleaning": 150,
}
FLU_SEASON_PEAK_DOY: Final = 283  # mid-October
FLU_SEASON_SPREAD_DAYS: Final = 20.0
OTHER_VACCINES_PER_YEAR: Final = 0.1
ASSESSMENT_POINTS: Final = 250
REVIEW_POINTS: Final = 50
REVIEW_COOLDOWN_DAYS: Final = 30
RATINGS: Final = ((5, 0.45), (4, 0.30), (3, 0.12), (2, 0.07), (1, 0.06))
REVIEW_CHANNELS: Final = ("portal", "app", "sms", None)
LOCATIONS: Final = tuple(f"loc-{n:02d}" for n in range(1, 9))

# Corrections: some visits and payments are voided a few days later.
VOID_SHARE: Final = 0.012
VISIT_VOID_REASONS: Final = ("entered_in_error", "duplicate_entry", "wrong_patient")
PAYMENT_VOID_REASONS: Final = ("refunded", "entered_in_error")
MAX_TIER_MULTIPLIER: Final = 1.5  # a void takes back up to this times the base

# Rewards: (reward id, points). Patients spend at most this share of what they think they have.
REWARDS: Final = (
    ("parking-pass", 200),
    ("wellness-kit", 500),
    ("massage-30", 1000),
    ("gift-card-25", 2500),
    ("spa-day", 5000),
)
SPEND_SHARE: Final = 0.8
OVERREACH: Final = 0.05  # redemptions asking for more than the patient has (rejected)
CANCEL_SHARE: Final = 0.08
