"""Ledger facts as ledger.v1 messages: the pure half of ``careledger feed``.

One account event becomes zero or more outbound messages (``schemas.ledger_v1``): one per
ledger entry it carries (typed by the entry's kind), one per tier change and one per
expiring-points notice. Ids come from the fact, never from the feed: a point entry's own id
(derived by the domain from the account and the cause), else a uuid5 of the account and the
event's version, so every re-send and every replay of the same input has the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.account import PatientAccount
from domain.entries import entries_of
from domain.ids import derived_id
from domain.program import Program
from domain.values import Credit, EntryKind, LedgerEntry
from schemas.ledger_v1 import (
    CauseV1,
    LedgerEnvelopeV1,
    PointsAdjustedDataV1,
    PointsAdjustedV1,
    PointsEarnedDataV1,
    PointsEarnedV1,
    PointsExpiredDataV1,
    PointsExpiredV1,
    PointsExpiringDataV1,
    PointsExpiringV1,
    PointsRedeemedDataV1,
    PointsRedeemedV1,
    PointsReturnedDataV1,
    PointsReturnedV1,
    PointsReversedDataV1,
    PointsReversedV1,
    TierChangedDataV1,
    TierChangedV1,
    schema_url,
)

# The account events the feed reads (the rest move no points and change no tier).
FACT_EVENTS: Final = (
    PatientAccount.PointsEarned,
    PatientAccount.ReferralQualified,
    PatientAccount.ReferrerBonusEarned,
    PatientAccount.StreakBonusEarned,
    PatientAccount.StreakBonusReversed,
    PatientAccount.PointsRedeemed,
    PatientAccount.RedemptionCancelled,
    PatientAccount.PointsExpired,
    PatientAccount.InteractionVoided,
    PatientAccount.PointsAdjusted,
    PatientAccount.TierChanged,
    PatientAccount.ExpiryNoticeDue,
)
FEED_TOPICS: Final = tuple(get_topic(cls) for cls in (PatientAccount.Opened, *FACT_EVENTS))
_KEY_SEPARATOR: Final = "\x1f"  # domain.ids.interaction_key joins (source, id) with it


@dataclass(frozen=True)
class Holder:
    """Whose account an event belongs to: the program and the patient pseudonym."""

    program_id: str
    patient_id: str


@dataclass(frozen=True)
class Outbound:
    """One message ready to send: the key is the subject, the value its JSON."""

    event_type: str
    key: bytes
    value: bytes
    message: LedgerEnvelopeV1


# The interaction right before a tier change, if it caused one: (source, id) or None.
CauseOf = Callable[[Any], CauseV1 | None]


def messages_of(
    event: Any, holder: Holder, programs: dict[str, Program], cause_of: CauseOf
) -> list[Outbound]:
    """The outbound messages of one account event (none for events the feed ignores)."""
    program = programs.get(holder.program_id)
    match event:
        case PatientAccount.TierChanged():
            models: list[LedgerEnvelopeV1] = [_tier_changed(event, holder, program, cause_of)]
        case PatientAccount.ExpiryNoticeDue():
            models = [_expiring(event, holder, program)]
        case _:
            credits = {credit.entry.entry_id: credit for credit in _credits_of(event)}
            models = [
                _entry_message(event, entry, credits.get(entry.entry_id), holder)
                for entry in entries_of(event)
            ]
    return [
        Outbound(m.type, holder.patient_id.encode(), m.model_dump_json().encode(), m)
        for m in models
    ]


def _credits_of(event: Any) -> list[Credit]:
    match event:
        case PatientAccount.PointsEarned():
            return [award.credit for award in event.awards]
        case (
            PatientAccount.ReferralQualified()
            | PatientAccount.ReferrerBonusEarned()
            | PatientAccount.StreakBonusEarned()
            | PatientAccount.PointsAdjusted()
        ) if event.credit is not None:
            return [event.credit]
    return []


def _envelope(fact_id: UUID, event_type: str, at: datetime, holder: Holder) -> dict[str, Any]:
    return {
        "id": fact_id,
        "time": at,
        "subject": holder.patient_id,
        "programid": holder.program_id,
        "dataschema": schema_url(event_type),
    }


def _entry_fields(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "points": entry.points,
        "balance_after": entry.balance_after,
        "rule_id": entry.rule_id,
        "program_version": entry.program_version,
        "occurred_at": entry.occurred_at,
        "cause": CauseV1(source=entry.source, id=entry.source_id),
    }


def _entry_message(
    event: Any, entry: LedgerEntry, credit: Credit | None, holder: Holder
) -> LedgerEnvelopeV1:
    """The message of one ledger entry, by its kind, with what its event adds."""
    fields = _entry_fields(entry)
    envelope = _envelope
    at = entry.occurred_at
    match entry.kind:
        case EntryKind.EARNED | EntryKind.BONUS:
            assert credit is not None, "every earned entry is a credit"
            data = PointsEarnedDataV1(
                **fields, kind=entry.kind, lot_id=credit.lot_id, expires_at=credit.expires_at
            )
            return PointsEarnedV1(
                **envelope(entry.entry_id, "points.earned", at, holder), data=data
            )
        case EntryKind.REDEEMED:
            redeemed = PointsRedeemedDataV1(
                **fields, redemption_id=event.redemption_id, reward_id=event.reward_id
            )
            return PointsRedeemedV1(
                **envelope(entry.entry_id, "points.redeemed", at, holder), data=redeemed
            )
        case EntryKind.RETURNED:
            returned = PointsReturnedDataV1(**fields, redemption_id=event.redemption_id)
            return PointsReturnedV1(
                **envelope(entry.entry_id, "points.returned", at, holder), data=returned
            )
        case EntryKind.EXPIRED:
            expired = PointsExpiredDataV1(
                **fields,
                lot_id=getattr(event, "lot_id", None),  # a cancellation names no single lot
                redemption_id=getattr(event, "redemption_id", None),
            )
            return PointsExpiredV1(
                **envelope(entry.entry_id, "points.expired", at, holder), data=expired
            )
        case EntryKind.REVERSED:
            reversed_ = PointsReversedDataV1(**fields, **_reversal(event))
            return PointsReversedV1(
                **envelope(entry.entry_id, "points.reversed", at, holder), data=reversed_
            )
        case EntryKind.ADJUSTED:
            adjusted = PointsAdjustedDataV1(
                **fields,
                adjustment_id=event.adjustment_id,
                reason=entry.reason,
                operator=entry.operator,
                lot_id=credit.lot_id if credit else None,
                expires_at=credit.expires_at if credit else None,
            )
            return PointsAdjustedV1(
                **envelope(entry.entry_id, "points.adjusted", at, holder), data=adjusted
            )
    raise ValueError(f"no outbound type for ledger entries of kind {entry.kind!r}")


def _reversal(event: Any) -> dict[str, Any]:
    """What was voided and why; a streak bonus taken back (its block broken by a late
    reading or a void: ``cause``) names neither."""
    if isinstance(event, PatientAccount.InteractionVoided):
        source, _, source_id = event.voided_key.partition(_KEY_SEPARATOR)
        return {"voided": CauseV1(source=source, id=source_id), "reason": event.reason}
    return {"voided": None, "reason": None}


def fact_id(event: Any) -> UUID:
    """The id of a fact that is not a point entry: its account and version, as a uuid5."""
    return derived_id(str(event.originator_id), "feed", str(event.originator_version))


def _tier_changed(
    event: Any, holder: Holder, program: Program | None, cause_of: CauseOf
) -> TierChangedV1:
    data = TierChangedDataV1(
        from_tier=event.from_tier,
        to_tier=event.to_tier,
        reason=event.reason,
        qualifying_points=event.qualifying_points,
        occurred_at=event.occurred_at,
        program_version=program.at(event.occurred_at).version if program else None,
        cause=cause_of(event) if event.reason == "qualifying_points" else None,
    )
    envelope = _envelope(fact_id(event), "tier.changed", event.occurred_at, holder)
    return TierChangedV1(**envelope, data=data)


def _expiring(event: Any, holder: Holder, program: Program | None) -> PointsExpiringV1:
    version = program.at(event.as_of) if program else None
    data = PointsExpiringDataV1(
        lot_id=event.lot_id,
        points=event.points,
        expires_at=event.expires_at,
        as_of=event.as_of,
        notice_days=version.expiry_notice.days if version else None,
        program_version=version.version if version else None,
    )
    envelope = _envelope(fact_id(event), "points.expiring", event.as_of, holder)
    return PointsExpiringV1(**envelope, data=data)
