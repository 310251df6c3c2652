"""Wire contract v1: CloudEvents 1.0 envelopes (structured JSON mode) for patient interactions.

These pydantic models are the source of truth; the JSON Schema files under ``schemas/json/v1``
are generated from them. Every model forbids unknown fields so no free text (possible PHI)
can ride along, and is frozen so a parsed event cannot be altered after validation.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from schemas.fields import (
    AMOUNT_RULE,
    CHANNEL_RULE,
    CURRENCY_RULE,
    DAY_RULE,
    EVENT_ID_RULE,
    ID_RULE,
    PATIENT_ID_RULE,
    PROGRAM_ID_RULE,
    REASON_CODE_RULE,
    STAFF_ID_RULE,
    TIME_RULE,
    Amount,
    Channel,
    Currency,
    EventId,
    EventSource,
    Id,
    IsoDay,
    NonZeroPoints,
    PatientId,
    ProgramId,
    ReasonCode,
    Rfc3339Time,
    StaffId,
    adjustment_points,
    bounded_int,
)

MAX_EVENT_BYTES: Final = 65536
DEFAULT_PROGRAM_ID: Final = "clinic-default"
SPEC_VERSION: Final = "1.0"

VisitType = Literal["in_person", "telehealth", "urgent_care", "specialist"]
# Who pays for the patient's care (domain.payer.PAYER_CLASSES): federal classes bring a
# program's payer rules into play.
PayerClass = Literal["commercial", "medicare", "medicaid", "tricare", "self_pay", "other"]
PurchaseCategory = Literal["front_store", "prescription", "gift", "service", "wellness_class"]
EngagementAction = Literal[
    "portal_login",
    "record_viewed",
    "message_sent",
    "bill_paid_online",
    "appointment_booked_online",
    "survey_completed",
    "social_follow",
    "content_shared",
]
CheckupType = Literal["annual_wellness", "screening", "vaccination", "dental_cleaning"]


def _rule(text: str) -> Any:
    return Field(description=text)


def _optional(text: str) -> Any:
    # Absent and JSON null both mean "not given": producers commonly emit null for None.
    return Field(default=None, description=text)


def _one_of(literal: Any) -> str:
    return "must be one of " + ", ".join(get_args(literal))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientEnrolledDataV1(_Strict):
    """A patient joined the loyalty programme through a channel, maybe referred by another."""

    channel: Channel = _rule(CHANNEL_RULE)
    referred_by: PatientId | None = _optional(PATIENT_ID_RULE)
    payer_class: PayerClass | None = _optional(
        _one_of(PayerClass) + " (who pays for the patient's care; absent: other)"
    )


class VisitCompletedDataV1(_Strict):
    """A visit of a given kind finished."""

    visit_id: Id = _rule(ID_RULE)
    visit_type: VisitType = _rule(_one_of(VisitType))
    location_id: Id | None = _optional(ID_RULE)


class CheckupCompletedDataV1(_Strict):
    """A preventive checkup of a given kind finished."""

    checkup_type: CheckupType = _rule(_one_of(CheckupType))


class AssessmentCompletedDataV1(_Strict):
    """A health assessment was completed."""

    assessment_id: Id = _rule(ID_RULE)


class ReviewSubmittedDataV1(_Strict):
    """A star rating was submitted. There is deliberately no text field: text may hold PHI."""

    rating: int = bounded_int(1, 5)
    channel: Channel | None = _optional(CHANNEL_RULE)


class ActivityReadingDataV1(_Strict):
    """A daily activity total from a device."""

    metric: Literal["steps"] = _rule('must be "steps"')
    day: IsoDay = _rule(DAY_RULE)
    value: int = bounded_int(0, 200_000)
    device: Id | None = _optional(ID_RULE)


class ReferralMadeDataV1(_Strict):
    """The subject referred another patient."""

    referee: PatientId = _rule(PATIENT_ID_RULE)


class PaymentRecordedDataV1(_Strict):
    """A payment was recorded; the amount is a decimal string, exposed as ``Decimal``."""

    amount: Amount = _rule(AMOUNT_RULE + " (the money paid in cash or card)")
    currency: Currency = _rule(CURRENCY_RULE)
    cashback_used: Amount | None = _optional(AMOUNT_RULE + " (drawn from the cashback wallet)")
    prepaid_used: Amount | None = _optional(AMOUNT_RULE + " (drawn from the prepaid wallet)")


class RedemptionRequestedDataV1(_Strict):
    """The patient asked to spend points on a reward. ``points`` is required unless the
    program has a catalogue, where, when given, it must equal the reward's price."""

    redemption_id: Id = _rule(ID_RULE)
    reward_id: Id = _rule(ID_RULE)
    points: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="must be an integer from 1 to 10000000",
    )
    partner_id: Id | None = _optional(ID_RULE + " (where it is redeemed; default the home partner)")


class RedemptionCancelledDataV1(_Strict):
    """A pending redemption was withdrawn."""

    redemption_id: Id = _rule(ID_RULE)


class InteractionVoidedDataV1(_Strict):
    """An earlier interaction, named by its (source, id), is void; the reason is a code."""

    voided_id: EventId = _rule(EVENT_ID_RULE.format(n=128))
    voided_source: EventSource = _rule(EVENT_ID_RULE.format(n=256))
    reason: ReasonCode = _rule(REASON_CODE_RULE)


class PointsAdjustedDataV1(_Strict):
    """Staff corrected the balance (a goodwill credit or a debit); the reason is a code."""

    adjustment_id: Id = _rule(ID_RULE)
    points: NonZeroPoints = adjustment_points()
    reason: ReasonCode = _rule(REASON_CODE_RULE)
    operator: StaffId = _rule(STAFF_ID_RULE)


class PurchaseRecordedDataV1(_Strict):
    """A purchase at a coalition partner (no item detail: categories only)."""

    purchase_id: Id = _rule(ID_RULE)
    partner_id: Id = _rule(ID_RULE)
    amount: Amount = _rule(AMOUNT_RULE)
    currency: Currency = _rule(CURRENCY_RULE)
    category: PurchaseCategory = _rule(_one_of(PurchaseCategory))


class EngagementRecordedDataV1(_Strict):
    """The subject used the portal or an online channel (an action code, never content)."""

    engagement_id: Id = _rule(ID_RULE)
    action: EngagementAction = _rule(_one_of(EngagementAction))


class RewardUsedDataV1(_Strict):
    """A voucher (named by the redemption that issued it) was used at the clinic."""

    redemption_id: Id = _rule(ID_RULE)
    location_id: Id | None = _optional(ID_RULE)


class MembershipPurchasedDataV1(_Strict):
    """A paid membership plan was bought (or renewed) for its price."""

    membership_id: Id = _rule(ID_RULE)
    plan_id: Id = _rule(ID_RULE)
    amount: Amount = _rule(AMOUNT_RULE)
    currency: Currency = _rule(CURRENCY_RULE)


class MembershipCancelledDataV1(_Strict):
    """A membership will not renew (no refund: it runs to its paid-through date)."""

    membership_id: Id = _rule(ID_RULE)


class PrepaymentRecordedDataV1(_Strict):
    """Money paid in advance into the prepaid wallet."""

    prepayment_id: Id = _rule(ID_RULE)
    amount: Amount = _rule(AMOUNT_RULE)
    currency: Currency = _rule(CURRENCY_RULE)


class ConsentChangedDataV1(_Strict):
    """The subject gave or withdrew consent to marketing messages (offers, expiring points)."""

    marketing: StrictBool = _rule("must be true or false")


class CoverageChangedDataV1(_Strict):
    """The subject's payer class changed (a new insurance), in force from the event time."""

    payer_class: PayerClass = _rule(_one_of(PayerClass))


class ErasureRequestedDataV1(_Strict):
    """The subject asked to be forgotten; ``reason`` is a code (never free text)."""

    reason: ReasonCode = _rule(REASON_CODE_RULE)


class EnvelopeV1(_Strict):
    """CloudEvents 1.0 attributes common to every v1 interaction."""

    specversion: Literal["1.0"] = _rule('must be exactly "1.0"')
    id: EventId = _rule(EVENT_ID_RULE.format(n=128))
    source: EventSource = _rule(EVENT_ID_RULE.format(n=256))
    time: Rfc3339Time = _rule(TIME_RULE)
    subject: PatientId = _rule(PATIENT_ID_RULE)
    programid: ProgramId = Field(default=DEFAULT_PROGRAM_ID, description=PROGRAM_ID_RULE)
    datacontenttype: Literal["application/json"] | None = _optional(
        'must be "application/json" when present'
    )

    @property
    def dedupe_key(self) -> tuple[str, str]:
        """CloudEvents identity: (source, id) is unique, so it is the idempotency key."""
        return (self.source, self.id)


_DATA_RULE = "must be a JSON object with exactly the fields of this event type"


class PatientEnrolledV1(EnvelopeV1):
    """patient.enrolled: the subject joined the programme."""

    type: Literal["patient.enrolled"] = _rule('must be "patient.enrolled"')
    data: PatientEnrolledDataV1 = _rule(_DATA_RULE)


class VisitCompletedV1(EnvelopeV1):
    """visit.completed: the subject finished a visit."""

    type: Literal["visit.completed"] = _rule('must be "visit.completed"')
    data: VisitCompletedDataV1 = _rule(_DATA_RULE)


class CheckupCompletedV1(EnvelopeV1):
    """checkup.completed: the subject finished a preventive checkup."""

    type: Literal["checkup.completed"] = _rule('must be "checkup.completed"')
    data: CheckupCompletedDataV1 = _rule(_DATA_RULE)


class AssessmentCompletedV1(EnvelopeV1):
    """assessment.completed: the subject completed a health assessment."""

    type: Literal["assessment.completed"] = _rule('must be "assessment.completed"')
    data: AssessmentCompletedDataV1 = _rule(_DATA_RULE)


class ReviewSubmittedV1(EnvelopeV1):
    """review.submitted: the subject left a star rating."""

    type: Literal["review.submitted"] = _rule('must be "review.submitted"')
    data: ReviewSubmittedDataV1 = _rule(_DATA_RULE)


class ActivityReadingV1(EnvelopeV1):
    """activity.reading: a device reported the subject's daily steps."""

    type: Literal["activity.reading"] = _rule('must be "activity.reading"')
    data: ActivityReadingDataV1 = _rule(_DATA_RULE)


class ReferralMadeV1(EnvelopeV1):
    """referral.made: the subject referred another patient."""

    type: Literal["referral.made"] = _rule('must be "referral.made"')
    data: ReferralMadeDataV1 = _rule(_DATA_RULE)


class PaymentRecordedV1(EnvelopeV1):
    """payment.recorded: a payment by the subject was recorded."""

    type: Literal["payment.recorded"] = _rule('must be "payment.recorded"')
    data: PaymentRecordedDataV1 = _rule(_DATA_RULE)


class RedemptionRequestedV1(EnvelopeV1):
    """redemption.requested: the subject asked to redeem points."""

    type: Literal["redemption.requested"] = _rule('must be "redemption.requested"')
    data: RedemptionRequestedDataV1 = _rule(_DATA_RULE)


class RedemptionCancelledV1(EnvelopeV1):
    """redemption.cancelled: a redemption request was withdrawn."""

    type: Literal["redemption.cancelled"] = _rule('must be "redemption.cancelled"')
    data: RedemptionCancelledDataV1 = _rule(_DATA_RULE)


class InteractionVoidedV1(EnvelopeV1):
    """interaction.voided: an earlier interaction must be treated as never having happened."""

    type: Literal["interaction.voided"] = _rule('must be "interaction.voided"')
    data: InteractionVoidedDataV1 = _rule(_DATA_RULE)


class PointsAdjustedV1(EnvelopeV1):
    """points.adjusted: staff credited or debited the subject's points."""

    type: Literal["points.adjusted"] = _rule('must be "points.adjusted"')
    data: PointsAdjustedDataV1 = _rule(_DATA_RULE)


class PurchaseRecordedV1(EnvelopeV1):
    """purchase.recorded: the subject bought something at a coalition partner."""

    type: Literal["purchase.recorded"] = _rule('must be "purchase.recorded"')
    data: PurchaseRecordedDataV1 = _rule(_DATA_RULE)


class EngagementRecordedV1(EnvelopeV1):
    """engagement.recorded: the subject used the patient portal or another online channel."""

    type: Literal["engagement.recorded"] = _rule('must be "engagement.recorded"')
    data: EngagementRecordedDataV1 = _rule(_DATA_RULE)


class RewardUsedV1(EnvelopeV1):
    """reward.used: the subject used a voucher."""

    type: Literal["reward.used"] = _rule('must be "reward.used"')
    data: RewardUsedDataV1 = _rule(_DATA_RULE)


class MembershipPurchasedV1(EnvelopeV1):
    """membership.purchased: the subject bought or renewed a paid membership."""

    type: Literal["membership.purchased"] = _rule('must be "membership.purchased"')
    data: MembershipPurchasedDataV1 = _rule(_DATA_RULE)


class MembershipCancelledV1(EnvelopeV1):
    """membership.cancelled: the subject's membership will not renew."""

    type: Literal["membership.cancelled"] = _rule('must be "membership.cancelled"')
    data: MembershipCancelledDataV1 = _rule(_DATA_RULE)


class PrepaymentRecordedV1(EnvelopeV1):
    """prepayment.recorded: the subject paid money in advance."""

    type: Literal["prepayment.recorded"] = _rule('must be "prepayment.recorded"')
    data: PrepaymentRecordedDataV1 = _rule(_DATA_RULE)


class ConsentChangedV1(EnvelopeV1):
    """consent.changed: the subject's marketing consent, in force from its event time."""

    type: Literal["consent.changed"] = _rule('must be "consent.changed"')
    data: ConsentChangedDataV1 = _rule(_DATA_RULE)


class CoverageChangedV1(EnvelopeV1):
    """coverage.changed: the subject's payer class, in force from its event time."""

    type: Literal["coverage.changed"] = _rule('must be "coverage.changed"')
    data: CoverageChangedDataV1 = _rule(_DATA_RULE)


class ErasureRequestedV1(EnvelopeV1):
    """account.erasure_requested: close the subject's account and shred its data (ADR 0015)."""

    type: Literal["account.erasure_requested"] = _rule('must be "account.erasure_requested"')
    data: ErasureRequestedDataV1 = _rule(_DATA_RULE)


InteractionV1: TypeAlias = Annotated[
    PatientEnrolledV1
    | VisitCompletedV1
    | CheckupCompletedV1
    | AssessmentCompletedV1
    | ReviewSubmittedV1
    | ActivityReadingV1
    | ReferralMadeV1
    | PaymentRecordedV1
    | RedemptionRequestedV1
    | RedemptionCancelledV1
    | InteractionVoidedV1
    | PointsAdjustedV1
    | ConsentChangedV1
    | CoverageChangedV1
    | PurchaseRecordedV1
    | EngagementRecordedV1
    | RewardUsedV1
    | MembershipPurchasedV1
    | MembershipCancelledV1
    | PrepaymentRecordedV1
    | ErasureRequestedV1,
    Field(discriminator="type"),
]

ENVELOPE_MODELS: Final[tuple[type[EnvelopeV1], ...]] = get_args(get_args(InteractionV1)[0])


def _type_of(model: type[EnvelopeV1]) -> str:
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


MODELS_BY_TYPE: Final[Mapping[str, type[EnvelopeV1]]] = MappingProxyType(
    {_type_of(model): model for model in ENVELOPE_MODELS}
)
EVENT_TYPES: Final[tuple[str, ...]] = tuple(MODELS_BY_TYPE)
