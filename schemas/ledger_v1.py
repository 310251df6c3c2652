"""Outbound contract ledger.v1: what ``careledger feed`` publishes to ``careledger.ledger.v1``.

CloudEvents 1.0 in structured JSON mode, keyed by the patient pseudonym (``subject``). One
message per ledger fact: every entry that moves points, every tier change and every
expiring-points notice. These pydantic models are the source of truth; the JSON Schema files
under ``schemas/json/ledger.v1`` are generated from them (``python -m schemas.generate``).

Nothing here is PHI: subjects, operators and causes are pseudonymous ids, everything else is
a code, a number or a time. ``points`` is signed as it moves the balance, so a consumer that
sums the ``points`` of every ``points.*`` message of a subject keeps a mirror of its balance
(``balance_after`` says what the ledger holds right after the fact).

``id`` is derived from the ledger fact (a point entry's own id; for other facts a uuid5 of the
account and the event's version), so a re-sent message has the id it had the first time:
delivery is at least once, consumers dedupe by (``source``, ``id``).
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, get_args
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.fields import (
    PATIENT_ID_RULE,
    PROGRAM_ID_RULE,
    REASON_CODE_RULE,
    STAFF_ID_RULE,
    EventId,
    EventSource,
    Id,
    PatientId,
    ProgramId,
    ReasonCode,
    StaffId,
)

LEDGER_SOURCE: Final = "urn:careledger:ledger"
SCHEMA_BASE_URL: Final = "https://careledger.dev/schemas/ledger.v1/"


class _Out(BaseModel):
    # Published schemas describe messages as sent (mode="serialization"): every field is there.
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )


class CauseV1(_Out):
    """The inbound interaction (CloudEvents ``source`` and ``id``) behind a fact.

    Facts the ledger makes itself name a ``careledger:`` source: ``careledger:referral`` (the
    id is the other patient of the referral).
    """

    source: EventSource
    id: EventId


class _EntryData(_Out):
    """What every point-moving fact carries."""

    points: int = Field(description="signed as it moves the balance (+ credit, - debit)")
    balance_after: int = Field(description="the available balance right after this fact")
    rule_id: str = Field(description="the rule (or mechanic: redemption, void, expiry...)")
    program_version: str = Field(description="the program version that decided it")
    occurred_at: AwareDatetime = Field(description="event time of the fact")
    cause: CauseV1


class PointsEarnedDataV1(_EntryData):
    """An earning rule paid (``earned``) or a bonus (referral, streak) was paid (``bonus``):
    a new lot."""

    kind: Literal["earned", "bonus"]
    lot_id: UUID = Field(description="the lot the points went into (= this message's id)")
    expires_at: AwareDatetime = Field(description="when the lot's points expire")


class PointsRedeemedDataV1(_EntryData):
    """Points were spent on a reward."""

    redemption_id: Id
    reward_id: Id


class PointsReturnedDataV1(_EntryData):
    """A cancelled redemption gave its points back (into their lots, if still live)."""

    redemption_id: Id


class PointsExpiredDataV1(_EntryData):
    """A lot reached its expiry (``lot_id``), or a cancelled redemption's points came back
    after their lot had expired (``redemption_id``). ``cause`` is the lot's earning
    interaction, or the cancellation."""

    lot_id: UUID | None = None
    redemption_id: Id | None = None


class PointsReversedDataV1(_EntryData):
    """A void took back what an interaction had paid, or a streak bonus was taken back
    (``rule_id`` streak: its block was broken by ``cause``; ``voided`` and ``reason`` null)."""

    voided: CauseV1 | None = Field(description="the interaction that was voided")
    reason: ReasonCode | None = Field(description=REASON_CODE_RULE)


class PointsAdjustedDataV1(_EntryData):
    """Staff corrected the balance: a credit is a new lot, a debit may leave it negative."""

    adjustment_id: Id
    reason: ReasonCode = Field(description=REASON_CODE_RULE)
    operator: StaffId = Field(description=STAFF_ID_RULE)
    lot_id: UUID | None = Field(None, description="the new lot, for a credit")
    expires_at: AwareDatetime | None = Field(None, description="its expiry, for a credit")


class TierChangedDataV1(_Out):
    """The account moved to another tier: up right after the interaction that reached the
    threshold (``cause``), or at the close of day (``cause`` null)."""

    from_tier: str
    to_tier: str
    reason: ReasonCode = Field(description="qualifying_points, maintenance or grace_ended")
    qualifying_points: int
    occurred_at: AwareDatetime
    program_version: str | None = Field(description="the version in force at occurred_at")
    cause: CauseV1 | None


class PointsExpiringDataV1(_Out):
    """A marketing notice: a lot expires within the program's notice period. Sent once per
    lot, by the close of day ``as_of``, only while the patient's marketing consent is on."""

    lot_id: UUID = Field(description="the lot (the id of the message that created it)")
    points: int = Field(description="what is left in the lot")
    expires_at: AwareDatetime
    as_of: AwareDatetime = Field(description="the close of day that found it due")
    notice_days: int | None = Field(description="the program's expiry_notice_days")
    program_version: str | None = Field(description="the version in force at as_of")


class LedgerEnvelopeV1(_Out):
    """CloudEvents 1.0 attributes of every ledger.v1 message."""

    specversion: Literal["1.0"] = "1.0"
    type: str = Field(description="the fact: points.earned, tier.changed, ...")
    id: UUID = Field(description="derived from the ledger fact: the same on every re-send")
    source: Literal["urn:careledger:ledger"] = LEDGER_SOURCE
    time: AwareDatetime = Field(description="event time of the fact")
    subject: PatientId = Field(description=PATIENT_ID_RULE)
    programid: ProgramId = Field(description=PROGRAM_ID_RULE)
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(description="the JSON Schema of this type")


class PointsEarnedV1(LedgerEnvelopeV1):
    """points.earned: a rule or a referral bonus paid points into a new lot."""

    type: Literal["points.earned"] = "points.earned"
    data: PointsEarnedDataV1


class PointsRedeemedV1(LedgerEnvelopeV1):
    """points.redeemed: the subject spent points on a reward."""

    type: Literal["points.redeemed"] = "points.redeemed"
    data: PointsRedeemedDataV1


class PointsReturnedV1(LedgerEnvelopeV1):
    """points.returned: a cancelled redemption gave its points back."""

    type: Literal["points.returned"] = "points.returned"
    data: PointsReturnedDataV1


class PointsExpiredV1(LedgerEnvelopeV1):
    """points.expired: points reached their lot's expiry."""

    type: Literal["points.expired"] = "points.expired"
    data: PointsExpiredDataV1


class PointsReversedV1(LedgerEnvelopeV1):
    """points.reversed: a void took back what an interaction had paid."""

    type: Literal["points.reversed"] = "points.reversed"
    data: PointsReversedDataV1


class PointsAdjustedV1(LedgerEnvelopeV1):
    """points.adjusted: staff credited or debited the subject's points."""

    type: Literal["points.adjusted"] = "points.adjusted"
    data: PointsAdjustedDataV1


class TierChangedV1(LedgerEnvelopeV1):
    """tier.changed: the subject's account moved to another tier."""

    type: Literal["tier.changed"] = "tier.changed"
    data: TierChangedDataV1


class PointsExpiringV1(LedgerEnvelopeV1):
    """points.expiring: a marketing notice that a lot expires soon (consent on)."""

    type: Literal["points.expiring"] = "points.expiring"
    data: PointsExpiringDataV1


LedgerEventV1: TypeAlias = (
    PointsEarnedV1
    | PointsRedeemedV1
    | PointsReturnedV1
    | PointsExpiredV1
    | PointsReversedV1
    | PointsAdjustedV1
    | TierChangedV1
    | PointsExpiringV1
)

OUTBOUND_MODELS: Final[tuple[type[LedgerEnvelopeV1], ...]] = get_args(LedgerEventV1)


def _type_of(model: type[LedgerEnvelopeV1]) -> str:
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


OUTBOUND_BY_TYPE: Final[Mapping[str, type[LedgerEnvelopeV1]]] = MappingProxyType(
    {_type_of(model): model for model in OUTBOUND_MODELS}
)
OUTBOUND_TYPES: Final[tuple[str, ...]] = tuple(OUTBOUND_BY_TYPE)


def schema_url(event_type: str) -> str:
    """Where the JSON Schema of an outbound type is published (``dataschema``)."""
    return f"{SCHEMA_BASE_URL}{event_type}.json"
