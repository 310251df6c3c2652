"""The facts the read models need from each stored ledger event, decoded straight from its JSON.

Why not the store's mapper: it walks the whole JSON document in Python and builds a domain
event plus a value object per entry, credit and allocation, ~17 µs an event; that was most of
a rebuild's time. Here one typed msgspec decoder per kind of event reads only the fields the
read models use, in C (UUIDs, datetimes and decimals included), in ~2-3 µs.

The JSON is the store's own format (eventsourcing's transcoder: typed values wrapped as
``{"_type_": name, "_data_": value}``); ``Wrapped`` unwraps one. Any mismatch fails loudly (a
``msgspec.ValidationError`` naming the field), and tests/unit/test_projections_stored.py
checks, for every event type, that these facts equal the mapper's domain event field for
field. Event classes that upcast (``class_version`` > 1) are read through the mapper first and
re-encoded, so their upcasters still apply.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from domain.account import LEGACY_STARTING_TIER, PatientAccount
from domain.rejection import RejectedInput

T = TypeVar("T")


class Wrapped(msgspec.Struct, Generic[T], frozen=True, gc=False, rename={"value": "_data_"}):
    """A value the store wrapped with its type name (the name is not needed to read it)."""

    value: T


class Entry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A ``LedgerEntry`` as stored."""

    entry_id: Wrapped[UUID]
    kind: str
    points: int
    balance_after: int
    rule_id: str
    program_version: str
    source: str
    source_id: str
    occurred_at: Wrapped[datetime]
    reason: str | None = None  # adjustments' reason code (absent from older entries)
    operator: str | None = None  # adjustments' staff id


class Credit(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A ``Credit`` as stored: its entry, and what it put into its issuer's lot."""

    entry: Wrapped[Entry]
    points: int
    debt_repaid: int
    partner: str | None = None  # the issuing partner (left out while None)


class Allocation(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An ``Allocation`` as stored: points taken from (or returned to) a partner's lot."""

    points: int
    partner: str | None = None


class Facts(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What every event has: when the ledger recorded it."""

    timestamp: Wrapped[datetime]


class OpenedFacts(Facts, frozen=True, gc=False, kw_only=True):
    program_id: str
    patient_id: str
    starting_tier: str = LEGACY_STARTING_TIER  # not stored by accounts opened before it was


class Award(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An ``Award`` as stored: only its credit is read."""

    credit: Wrapped[Credit]


class AccountFacts(Facts, frozen=True, gc=False, kw_only=True):
    """An account event: the ledger entries it carries, if any (as ``entries_of``)."""

    awards: list[Wrapped[Award]] | None = None
    credit: Wrapped[Credit] | None = None
    entry: Wrapped[Entry] | None = None
    entries: list[Wrapped[Entry]] = []
    # Points moving between partners' lots (partner_liability, partner_settlement): taken by
    # voids, streak reversals and debits; redeemed; returned or expired by a cancellation.
    taken: list[Wrapped[Allocation]] | None = None
    allocations: list[Wrapped[Allocation]] | None = None
    returned: list[Wrapped[Allocation]] | None = None
    expired: list[Wrapped[Allocation]] | None = None
    partner: str | None = None  # PointsExpired: the lot's issuer
    partner_id: str | None = None  # PointsRedeemed: where it was redeemed
    redemption_id: str | None = None

    def credits(self) -> list[Credit]:
        """The credits the event pays into new lots (as ``ledger_entries``, without entries
        that are not credits)."""
        if self.awards is not None:
            return [award.value.credit.value for award in self.awards]
        return [self.credit.value] if self.credit is not None else []

    def ledger_entries(self) -> list[Entry]:
        if self.awards is not None:
            return [award.value.credit.value.entry.value for award in self.awards]
        if self.credit is not None:
            return [self.credit.value.entry.value]
        if self.entry is not None:
            return [self.entry.value]
        return [wrapped.value for wrapped in self.entries]


class AcceptedFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    """An accepted interaction (payments and voids also carry the spend they leave)."""

    source: str
    source_id: str
    interaction: str
    occurred_at: Wrapped[datetime]
    qualifying_points: int
    spend_total: Wrapped[Decimal] | None = None
    discount_percent: int | None = None
    reward_unlocked: str | None = None
    goal_day: Wrapped[date] | None = None  # a reading that met the daily goal that day
    voided_key: str | None = None  # InteractionVoided: the voided interaction's key
    # PaymentRecorded in programs with money wallets (wallets)
    cashback_earned: Wrapped[Decimal] | None = None
    cashback_drawn: list[tuple[str, Wrapped[Decimal]]] | None = None  # (lot, amount)
    prepaid_drawn: Wrapped[Decimal] | None = None
    prepayment_discount_percent: int | None = None
    # PointsRedeemed and RedemptionCancelled: the reward's money value, the payer class in
    # force and the calendar year the payer caps count it in (reward_value_by_year)
    value: Wrapped[Decimal] | None = None
    payer_class: str | None = None
    value_year: int | None = None


class NotedFacts(AcceptedFacts, frozen=True, gc=False, kw_only=True):
    """An interaction accepted without paying, or refused by the account (the classes marked
    ``explains_nothing_paid``): what its zero-point statement line says
    (``domain.entries.statement_lines_of``). ``outcome`` or ``reason`` is the reason code."""

    outcome: str | None = None  # InteractionNoted
    reason: str | None = None  # RedemptionRejected
    rule_id: str | None = None
    program_version: str | None = None


class ConsentFacts(AcceptedFacts, frozen=True, gc=False, kw_only=True):
    """ConsentChanged: marketing consent from its event time on (marketing_consent)."""

    marketing: bool


class WithheldFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    """ReferralBonusWithheld: a zero statement line for a bonus the payer rules forbid (not
    an interaction: it is the referral's, dated at the qualifying visit)."""

    source: str
    source_id: str
    occurred_at: Wrapped[datetime]
    rule_id: str
    reason: str
    program_version: str


class QualifyingFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    qualifying_points: int


class TierFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    from_tier: str
    to_tier: str
    occurred_at: Wrapped[datetime]
    reason: str


class VoucherFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    """VoucherIssued."""

    voucher_id: str
    reward_id: str
    points: int
    issued_at: Wrapped[datetime]
    expires_at: Wrapped[datetime]


class VoucherUsedFacts(AcceptedFacts, frozen=True, gc=False, kw_only=True):
    voucher_id: str


class VoucherEndedFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    voucher_id: str
    status: str  # cancelled | expired
    at: Wrapped[datetime]


class MembershipFacts(AcceptedFacts, frozen=True, gc=False, kw_only=True):
    """MembershipStarted, MembershipRenewed (no plan, no start) and MembershipCancelled
    (the membership alone)."""

    membership_id: str
    plan_id: str | None = None
    amount: Wrapped[Decimal] | None = None
    started_at: Wrapped[datetime] | None = None
    paid_through: Wrapped[datetime] | None = None


class MembershipLapsedFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    membership_id: str
    at: Wrapped[datetime]  # its paid-through date


class BenefitsFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    benefits: list[str]  # every code held from then on, sorted
    at: Wrapped[datetime]


class ErasedFacts(NotedFacts, frozen=True, gc=False, kw_only=True):
    """An account closed by erasure (ADR 0015): what it forfeited (its entry) and owes."""

    owed_cashback: Wrapped[Decimal]
    owed_prepaid: Wrapped[Decimal]


class PrepaymentFacts(AcceptedFacts, frozen=True, gc=False, kw_only=True):
    amount: Wrapped[Decimal]
    prepaid_balance: Wrapped[Decimal]


class CashbackExpiredFacts(AccountFacts, frozen=True, gc=False, kw_only=True):
    lot_id: str
    amount: Wrapped[Decimal]
    at: Wrapped[datetime]


class RejectedFacts(Facts, frozen=True, gc=False, kw_only=True):
    origin: str
    code: str
    reason: str
    source: str | None
    source_id: str | None
    received_at: Wrapped[datetime]


# Which facts the read models read of each kind of event, most specific class first.
_FACTS: tuple[tuple[type, type[Facts]], ...] = (
    (PatientAccount.Opened, OpenedFacts),
    (PatientAccount.VoucherIssued, VoucherFacts),
    (PatientAccount.VoucherUsed, VoucherUsedFacts),
    (PatientAccount.VoucherEnded, VoucherEndedFacts),
    (PatientAccount.MembershipStarted, MembershipFacts),
    (PatientAccount.MembershipRenewed, MembershipFacts),
    (PatientAccount.MembershipCancelled, MembershipFacts),
    (PatientAccount.MembershipLapsed, MembershipLapsedFacts),
    (PatientAccount.BenefitsChanged, BenefitsFacts),
    (PatientAccount.PrepaymentRecorded, PrepaymentFacts),
    (PatientAccount.CashbackExpired, CashbackExpiredFacts),
    (PatientAccount.ConsentChanged, ConsentFacts),
    (PatientAccount.ReferralBonusWithheld, WithheldFacts),
    (PatientAccount.Accepted, AcceptedFacts),
    (PatientAccount.QualifyingPointsChanged, QualifyingFacts),
    (PatientAccount.TierChanged, TierFacts),
    (PatientAccount.Event, AccountFacts),
    (RejectedInput.Recorded, RejectedFacts),
)


def facts_type(cls: type) -> type[Facts]:
    """Which facts the read models read of events of class ``cls``."""
    if cls is PatientAccount.ReferralBonusWithheld:
        return WithheldFacts  # explains a bonus not paid, but is no interaction of its own
    if issubclass(cls, PatientAccount.AccountErased):
        return ErasedFacts
    if issubclass(cls, PatientAccount.Accepted) and getattr(cls, "explains_nothing_paid", False):
        return NotedFacts  # (the same mark statement_lines_of reads)
    return next((facts for base, facts in _FACTS if issubclass(cls, base)), Facts)


# Classes whose facts read every stored version as it is (PointsEarned v1's ``credit`` and
# v2's ``awards`` are both fields of AccountFacts), so they skip the mapper's upcasting.
READ_AT_EVERY_VERSION: frozenset[type] = frozenset({PatientAccount.PointsEarned})


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """One ledger event as the read models see it: its position in the global order, its
    aggregate, its class and its facts. (A struct: a tenth of a frozen dataclass's cost to
    make, once per event.)"""

    position: int
    originator_id: UUID
    cls: type
    facts: Facts


class _Topic(NamedTuple):
    cls: type
    decode: Callable[[bytes], Any]
    through_mapper: bool  # stored states the mapper must open (cipher, compressor, upcast)


class StoredReader:
    """Decodes stored events into :class:`Recorded`, with one decoder per event topic."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        self._topics: dict[str, _Topic] = {}
        # A cipher or compressor makes stored states opaque: the mapper opens them first.
        self._transformed = mapper.cipher is not None or mapper.compressor is not None

    def read(
        self, position: int, originator_id: UUID, version: int, topic: str, state: bytes
    ) -> Recorded:
        """The event at ``position`` (a row of the events table)."""
        cls, decode, through_mapper = self._topics.get(topic) or self._learn(topic)
        if through_mapper:
            state = self._current(StoredEvent(originator_id, version, topic, state))
        return Recorded(position, originator_id, cls, decode(state))

    def _learn(self, topic: str) -> _Topic:
        cls = resolve_topic(topic)
        upcast = getattr(cls, "class_version", 1) != 1 and cls not in READ_AT_EVERY_VERSION
        decode = msgspec.json.Decoder(facts_type(cls)).decode
        learnt = self._topics[topic] = _Topic(cls, decode, self._transformed or upcast)
        return learnt

    def _current(self, stored: StoredEvent) -> bytes:
        """Plain JSON of the event at its class's current version: decrypted, decompressed
        and upcast by the mapper itself."""
        mapper = self.mapper
        event = mapper.to_domain_event(stored)
        state = dict(event.__dict__)
        del state["originator_id"], state["originator_version"]
        return mapper.transcoder.encode(state)
