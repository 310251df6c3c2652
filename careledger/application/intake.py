"""From a validated wire event (``schemas.v1``) to a domain interaction.

The wire contract and the domain evolve separately: this is the one place that knows both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import interactions as di
from schemas import v1


@dataclass(frozen=True)
class Addressed:
    """A domain interaction with the account it belongs to."""

    program_id: str
    patient_id: str
    interaction: di.Interaction


def to_interaction(event: v1.InteractionV1) -> Addressed:
    """Map a validated CloudEvent onto the domain's interaction for its ``type``."""
    cause: dict[str, Any] = {
        "source": event.source,
        "source_id": event.id,
        "occurred_at": event.time,
    }
    interaction: di.Interaction
    match event:
        case v1.PatientEnrolledV1(data=data):
            interaction = di.Enrolment(
                **cause,
                channel=data.channel,
                referred_by=data.referred_by,
                payer_class=data.payer_class,
            )
        case v1.VisitCompletedV1(data=data):
            interaction = di.Visit(**cause, visit_id=data.visit_id, visit_type=data.visit_type)
        case v1.CheckupCompletedV1(data=data):
            interaction = di.Checkup(**cause, checkup_type=data.checkup_type)
        case v1.AssessmentCompletedV1(data=data):
            interaction = di.Assessment(**cause, assessment_id=data.assessment_id)
        case v1.ReviewSubmittedV1(data=data):
            interaction = di.Review(**cause, rating=data.rating)
        case v1.ActivityReadingV1(data=data):
            interaction = di.StepsReading(**cause, day=data.day, steps=data.value)
        case v1.ReferralMadeV1(data=data):
            interaction = di.Referral(**cause, referee=data.referee)
        case v1.PaymentRecordedV1(data=data):
            interaction = di.Payment(
                **cause,
                amount=data.amount,
                currency=data.currency,
                cashback_used=data.cashback_used,
                prepaid_used=data.prepaid_used,
            )
        case v1.RedemptionRequestedV1(data=data):
            interaction = di.RedemptionRequest(
                **cause,
                redemption_id=data.redemption_id,
                reward_id=data.reward_id,
                points=data.points,
                partner_id=data.partner_id,
            )
        case v1.RedemptionCancelledV1(data=data):
            interaction = di.RedemptionCancellation(**cause, redemption_id=data.redemption_id)
        case v1.InteractionVoidedV1(data=data):
            interaction = di.Void(
                **cause,
                voided_source=data.voided_source,
                voided_id=data.voided_id,
                reason=data.reason,
            )
        case v1.PointsAdjustedV1(data=data):
            interaction = di.Adjustment(
                **cause,
                adjustment_id=data.adjustment_id,
                points=data.points,
                reason=data.reason,
                operator=data.operator,
            )
        case v1.PurchaseRecordedV1(data=data):
            interaction = di.Purchase(
                **cause,
                purchase_id=data.purchase_id,
                partner_id=data.partner_id,
                amount=data.amount,
                currency=data.currency,
                category=data.category,
            )
        case v1.EngagementRecordedV1(data=data):
            interaction = di.Engagement(
                **cause, engagement_id=data.engagement_id, action=data.action
            )
        case v1.RewardUsedV1(data=data):
            interaction = di.RewardUse(
                **cause, redemption_id=data.redemption_id, location_id=data.location_id
            )
        case v1.MembershipPurchasedV1(data=data):
            interaction = di.MembershipPurchase(
                **cause,
                membership_id=data.membership_id,
                plan_id=data.plan_id,
                amount=data.amount,
                currency=data.currency,
            )
        case v1.MembershipCancelledV1(data=data):
            interaction = di.MembershipCancellation(**cause, membership_id=data.membership_id)
        case v1.PrepaymentRecordedV1(data=data):
            interaction = di.Prepayment(
                **cause,
                prepayment_id=data.prepayment_id,
                amount=data.amount,
                currency=data.currency,
            )
        case v1.ConsentChangedV1(data=data):
            interaction = di.ConsentChange(**cause, marketing=data.marketing)
        case v1.CoverageChangedV1(data=data):
            interaction = di.CoverageChange(**cause, payer_class=data.payer_class)
        case v1.ErasureRequestedV1(data=data):
            interaction = di.ErasureRequest(**cause, reason=data.reason)
        case _:
            raise TypeError(f"no domain interaction for {type(event).__name__}")
    return Addressed(event.programid, event.subject, interaction)
