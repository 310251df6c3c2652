"""What the ledger is asked to apply: one value per kind of patient interaction.

These are domain commands, separate from the wire schemas in ``schemas/``: the application
maps a validated CloudEvent onto one of these. Every interaction carries its cause (the
CloudEvents ``source`` and ``id``) and its event time; nothing here knows about JSON or Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, kw_only=True)
class Interaction:
    """The cause every ledger decision is traced to."""

    source: str
    source_id: str
    occurred_at: datetime

    kind = "interaction"


@dataclass(frozen=True, kw_only=True)
class Enrolment(Interaction):
    channel: str
    referred_by: str | None = None
    payer_class: str | None = None  # who pays for the patient's care (None: not told)
    kind = "patient.enrolled"


@dataclass(frozen=True, kw_only=True)
class Visit(Interaction):
    visit_id: str
    visit_type: str
    kind = "visit.completed"


@dataclass(frozen=True, kw_only=True)
class Checkup(Interaction):
    checkup_type: str
    kind = "checkup.completed"


@dataclass(frozen=True, kw_only=True)
class Assessment(Interaction):
    assessment_id: str
    kind = "assessment.completed"


@dataclass(frozen=True, kw_only=True)
class Review(Interaction):
    rating: int
    kind = "review.submitted"


@dataclass(frozen=True, kw_only=True)
class StepsReading(Interaction):
    day: date
    steps: int
    kind = "activity.reading"


@dataclass(frozen=True, kw_only=True)
class Referral(Interaction):
    referee: str
    kind = "referral.made"


@dataclass(frozen=True, kw_only=True)
class Payment(Interaction):
    amount: Decimal  # the money paid in cash or card
    currency: str
    cashback_used: Decimal | None = None  # drawn from the cashback wallet
    prepaid_used: Decimal | None = None  # drawn from the prepaid wallet
    kind = "payment.recorded"


@dataclass(frozen=True, kw_only=True)
class RedemptionRequest(Interaction):
    redemption_id: str
    reward_id: str
    points: int | None  # None: the catalogue reward's price
    partner_id: str | None = None  # where it is redeemed (None: the home partner)
    kind = "redemption.requested"


@dataclass(frozen=True, kw_only=True)
class RedemptionCancellation(Interaction):
    redemption_id: str
    kind = "redemption.cancelled"


@dataclass(frozen=True, kw_only=True)
class Void(Interaction):
    voided_source: str
    voided_id: str
    reason: str
    kind = "interaction.voided"


@dataclass(frozen=True, kw_only=True)
class Adjustment(Interaction):
    """Staff corrected a balance: ``points`` is non-zero, ``reason`` a code, ``operator`` a
    pseudonymous staff id."""

    adjustment_id: str
    points: int
    reason: str
    operator: str
    kind = "points.adjusted"


@dataclass(frozen=True, kw_only=True)
class Purchase(Interaction):
    """A purchase at a coalition partner, by category: it earns by partner and category."""

    purchase_id: str
    partner_id: str
    amount: Decimal
    currency: str
    category: str
    kind = "purchase.recorded"


@dataclass(frozen=True, kw_only=True)
class Engagement(Interaction):
    """Use of the portal or an online channel: an action code, never its content."""

    engagement_id: str
    action: str
    kind = "engagement.recorded"


@dataclass(frozen=True, kw_only=True)
class RewardUse(Interaction):
    """A voucher, named by the redemption that issued it, was used."""

    redemption_id: str
    location_id: str | None = None
    kind = "reward.used"


@dataclass(frozen=True, kw_only=True)
class MembershipPurchase(Interaction):
    membership_id: str
    plan_id: str
    amount: Decimal
    currency: str
    kind = "membership.purchased"


@dataclass(frozen=True, kw_only=True)
class MembershipCancellation(Interaction):
    membership_id: str
    kind = "membership.cancelled"


@dataclass(frozen=True, kw_only=True)
class Prepayment(Interaction):
    prepayment_id: str
    amount: Decimal
    currency: str
    kind = "prepayment.recorded"


@dataclass(frozen=True, kw_only=True)
class ConsentChange(Interaction):
    """The patient's consent to marketing messages, in force from the event time."""

    marketing: bool
    kind = "consent.changed"


@dataclass(frozen=True, kw_only=True)
class CoverageChange(Interaction):
    """The patient's payer class (``domain.payer.PAYER_CLASSES``), in force from the event
    time: federal classes bring a program's payer rules into play."""

    payer_class: str
    kind = "coverage.changed"


@dataclass(frozen=True, kw_only=True)
class ErasureRequest(Interaction):
    """The patient asked to be forgotten (GDPR art. 17): the account closes (ADR 0015)."""

    reason: str
    kind = "account.erasure_requested"


# Interactions that do not make a patient "active" for retention: they move points or money
# but are not engagement with care.
NOT_ENGAGEMENT = frozenset(
    {
        "redemption.requested",
        "redemption.cancelled",
        "payment.recorded",
        "interaction.voided",
        "points.adjusted",
        "consent.changed",
        "coverage.changed",
        "account.erasure_requested",
        "membership.purchased",
        "membership.cancelled",
        "prepayment.recorded",
    }
)
