"""The projector's decoder reads, of every ledger event, exactly what the store's mapper reads.

projections/stored.py decodes stored JSON straight into the few facts the read models use;
these tests hold it to the mapper (the library's reader, which the ledger itself uses) over a
history with every event type, and check that upcasting and malformed states are handled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from uuid import uuid4

import msgspec
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import register_topic

from careledger.application.programs import builtin_programs
from domain import interactions as di
from domain.account import PatientAccount, entries_of
from domain.program import Downgrade
from domain.rejection import RejectedInput
from projections.stored import Entry, ErasedFacts, NotedFacts, WithheldFacts, Wrapped, facts_type
from tests.unit.dsl import (
    DEFAULT,
    Ledger,
    adjust,
    at,
    cancel,
    checkup,
    consent,
    coverage,
    enrol,
    pay,
    redeem,
    refer,
    steps,
    visit,
    void,
    with_version,
)
from tests.unit.stored_events import MAPPER, READER, as_stored
from tests.unit.test_program_coalition import T, buy, redeem_at

GRACE = with_version(
    DEFAULT,
    tiers=tuple(
        replace(tier, downgrade=Downgrade.GRACE, grace=timedelta(days=60))
        for tier in DEFAULT.latest.tiers
    ),
)
ENTRY_FIELDS = ("awards", "credit", "entry", "entries")


def every_event_type() -> list[Any]:
    """One history of two patients that produces every event the ledger records."""
    referrer, referee = Ledger(patient_id="patient-1"), Ledger(patient_id="patient-2")
    first = visit(at(1))
    payment = pay("150.00", at(13))
    referrer.given(enrol(at(0)), first, refer("patient-2", at(2)))
    made = referrer.account.pending_events[-1]
    referee.account.note_referral(
        "patient-1", made.occurred_at, made.source, made.source_id, referee.program
    )
    referee.given(enrol(at(3)), visit(at(4)))
    qualified = referee.account.pending_events[-1]
    assert type(qualified) is PatientAccount.ReferralQualified
    referrer.account.pay_referrer_bonus("patient-2", qualified.qualified_at, referrer.program)
    referrer.given(
        *[visit(at(5 + d)) for d in range(8)],
        checkup(at(14)),
        steps(at(15).date(), 10, at(15)),  # below the daily threshold: noted, not paid
        redeem(300, "r-1", at(16)),
        cancel("r-1", at(17)),
        redeem(10**7, "r-2", at(18)),  # more than available: rejected
        payment,
        pay("2500.00", at(19)),
        void(payment, at(20)),
        void(first, at(21)),
    )
    referrer.maintain(at(420))  # expiry, qualifying window, tier down
    referrer.given(adjust(40, at(421)), adjust(-90, at(422)))  # a credit, a debit into debt
    referrer.given(consent(True, at(423)), visit(at(424)))
    referrer.maintain(at(770))  # the visit's lot expires within 30 days: a notice
    graced = Ledger(program=GRACE, patient_id="patient-3").given(*[visit(at(0)) for _ in range(10)])
    graced.maintain(at(400))  # below silver: the grace period starts
    graced.given(*[visit(at(401)) for _ in range(10)])
    graced.maintain(at(402))  # back at silver: the grace is cleared
    motion = Ledger(program=builtin_programs()["activity-motion"], patient_id="patient-4")
    days = [at(d).date() for d in range(14)]
    motion.given(*[steps(d, 12000, at(30)) for i, d in enumerate(days) if i != 5])  # block 6..12
    motion.given(steps(days[5], 12000, at(31)))  # the gap filled: the block moves to 0..6
    rewards = Ledger(program=builtin_programs()["membership-plus"], patient_id="patient-5")
    rewards.given(*[checkup(at(1, hours=h), "screening") for h in range(3)])
    rewards.given(
        di.MembershipPurchase(
            source="billing",
            source_id="mp1",
            occurred_at=at(2),
            membership_id="m1",
            plan_id="monthly",
            amount=Decimal("45.00"),
            currency="USD",
        ),
        di.MembershipPurchase(
            source="billing",
            source_id="mp2",
            occurred_at=at(3),
            membership_id="m1",
            plan_id="monthly",
            amount=Decimal("45.00"),
            currency="USD",
        ),
        di.MembershipCancellation(
            source="billing", source_id="mc1", occurred_at=at(4), membership_id="m1"
        ),
        di.RedemptionRequest(
            source="portal",
            source_id="rq1",
            occurred_at=at(5),
            redemption_id="v1",
            reward_id="parking-pass",
            points=None,
        ),
        di.RewardUse(source="desk", source_id="ru1", occurred_at=at(6), redemption_id="v1"),
        di.RedemptionRequest(
            source="portal",
            source_id="rq2",
            occurred_at=at(7),
            redemption_id="v2",
            reward_id="parking-pass",
            points=300,
        ),
        cancel("v2", at(8)),
    )
    rewards.maintain(at(100))  # the membership lapses
    wallets = Ledger(program=builtin_programs()["clinic-discounts"], patient_id="patient-6")
    wallets.given(
        di.Prepayment(
            source="pos",
            source_id="pp1",
            occurred_at=at(1),
            prepayment_id="pp1",
            amount=Decimal("50.00"),
            currency="GBP",
        ),
        di.Payment(
            source="pos",
            source_id="pay1",
            occurred_at=at(2),
            amount=Decimal("100.00"),
            currency="GBP",
            prepaid_used=Decimal("10.00"),
        ),
        di.Payment(
            source="pos",
            source_id="pay2",
            occurred_at=at(3),
            amount=Decimal("10.00"),
            currency="GBP",
            cashback_used=Decimal("1.50"),  # drawn from pay1's lot: (lot, amount) pairs
        ),
    )
    wallets.maintain(at(400))  # the cashback expires
    erasure = di.ErasureRequest(source="crm", source_id="er1", occurred_at=at(401), reason="x")
    wallets.given(erasure)  # closed: points forfeited, the prepaid wallet owed
    # a coalition: lots and allocations that name their issuer, a redemption at a partner
    shop = Ledger(program=builtin_programs()["coalition-health"], patient_id="patient-5")
    pharmacy = redeem_at(150, "pharmacy-1", T + timedelta(days=2))
    shop.given(visit(T), buy("pharmacy-1", "front_store", "12.00", T + timedelta(days=1)), pharmacy)
    shop.given(cancel(pharmacy.redemption_id, T + timedelta(days=3)))
    # payer rules: a medicaid referee's referral withheld on both sides; a coverage change;
    # a redemption with its money value
    sponsor, covered = Ledger(patient_id="patient-7"), Ledger(patient_id="patient-8")
    sponsor.given(enrol(at(0)))
    covered.given(enrol(at(1), payer_class="medicaid"))
    covered.account.note_referral("patient-7", at(1), "portal", "ref-7", covered.program)
    covered.given(visit(at(2)), coverage("commercial", at(3)), redeem(100, "r-8", at(4)))
    (withheld,) = [
        e for e in covered.account.pending_events if type(e) is PatientAccount.ReferralQualified
    ]
    sponsor.account.pay_referrer_bonus(
        "patient-8", withheld.qualified_at, sponsor.program, withheld=withheld.withheld
    )
    rejected = RejectedInput.record(
        origin="file:in.jsonl:7",
        code="invalid_field",
        reason="data.visit_type: not one of the allowed values",
        source="urn:careledger:emr",
        source_id="visit-9",
        received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return [
        *referrer.account.pending_events,
        *referee.account.pending_events,
        *graced.account.pending_events,
        *motion.account.pending_events,
        *rewards.account.pending_events,
        *wallets.account.pending_events,
        *sponsor.account.pending_events,
        *covered.account.pending_events,
        *rejected.collect_events(),
    ]


def shaped(expected: Any, fact: Any) -> Any:
    """``expected`` (a domain value) cut to the fields the fact reads, like ``plain``."""
    if dataclasses.is_dataclass(expected) and isinstance(fact, dict):
        return {name: shaped(getattr(expected, name), fact[name]) for name in fact}
    if isinstance(expected, list | tuple) and isinstance(fact, list) and len(expected) == len(fact):
        return [shaped(e, f) for e, f in zip(expected, fact, strict=True)]
    return expected


def plain(value: Any) -> Any:
    """A decoded fact as plain values (wrappers and structs opened)."""
    if isinstance(value, Wrapped):
        return plain(value.value)
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list | tuple):  # (the store keeps tuples as JSON arrays)
        return [plain(item) for item in value]
    return value


def test_the_history_covers_every_event_class_of_the_ledger() -> None:
    emitted = {type(event) for event in every_event_type()}
    declared = {
        cls
        for cls in vars(PatientAccount).values()
        if isinstance(cls, type) and issubclass(cls, Aggregate.Event)
    } - {PatientAccount.Event, PatientAccount.Created, PatientAccount.Accepted}  # bases only
    assert declared - emitted == set()
    assert RejectedInput.Recorded in emitted


@pytest.mark.parametrize("event", every_event_type(), ids=lambda e: type(e).__name__)
def test_facts_equal_what_the_mapper_decodes(event: Any) -> None:
    stored = MAPPER.to_stored_event(event)
    by_mapper = MAPPER.to_domain_event(stored)  # the library's own reading, types included
    recorded = as_stored(7, event)
    assert (recorded.position, recorded.originator_id) == (7, event.originator_id)
    assert recorded.cls is type(event)
    facts = recorded.facts
    assert type(facts) is facts_type(type(event))
    for name in facts.__struct_fields__:
        if name in ENTRY_FIELDS:
            continue
        # a field this class lacks reads as absent (None)
        fact = plain(getattr(facts, name))
        expected = shaped(getattr(by_mapper, name, None), fact)
        assert fact == expected == shaped(getattr(event, name, None), fact), name
        assert type(fact) is type(expected), name
    if ENTRY_FIELDS[0] in facts.__struct_fields__:
        entries = [plain(entry) for entry in facts.ledger_entries()]  # type: ignore[attr-defined]
        expected_entries = [
            {name: getattr(entry, name) for name in Entry.__struct_fields__}
            for entry in entries_of(by_mapper)
        ]
        assert entries == expected_entries
        assert len(entries) == len(entries_of(event))
        credits = [plain(credit) for credit in facts.credits()]  # type: ignore[attr-defined]
        awards = getattr(by_mapper, "awards", None)
        paid = [a.credit for a in awards] if awards else [getattr(by_mapper, "credit", None)]
        assert credits == shaped([c for c in paid if c is not None], credits)


def test_events_that_explain_an_unpaid_interaction_are_read_with_their_reason() -> None:
    """The classes statement_lines_of gives a zero-point line are read as NotedFacts."""
    explaining = {
        cls
        for cls in vars(PatientAccount).values()
        if isinstance(cls, type) and getattr(cls, "explains_nothing_paid", False)
    }
    assert PatientAccount.InteractionNoted in explaining
    assert PatientAccount.RedemptionRejected in explaining
    # (a withheld referral bonus explains itself too, but is no interaction: its own facts)
    assert PatientAccount.ReferralBonusWithheld in explaining
    assert facts_type(PatientAccount.ReferralBonusWithheld) is WithheldFacts
    explaining.remove(PatientAccount.ReferralBonusWithheld)
    assert all(issubclass(facts_type(cls), NotedFacts) for cls in explaining)
    assert facts_type(PatientAccount.AccountErased) is ErasedFacts  # (its settlement too)
    assert facts_type(PatientAccount.PointsEarned) is not NotedFacts


def test_an_upcast_class_is_read_at_its_current_version() -> None:
    class Renamed(PatientAccount.TierChanged):
        """Version 2 renamed nothing the read models read, but added a field."""

        class_version: ClassVar[int] = 2
        channel: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["channel"] = "unknown"
            state["reason"] = f"v1:{state['reason']}"

    event = PatientAccount.TierChanged(
        originator_id=uuid4(),
        originator_version=3,
        timestamp=at(1),
        from_tier="bronze",
        to_tier="silver",
        occurred_at=at(1),
        reason="qualifying_points",
        qualifying_points=1000,
    )
    v1 = MAPPER.to_stored_event(event)
    topic = f"{__name__}:TierChangedV2"
    register_topic(topic, Renamed)
    recorded = READER.read(1, event.originator_id, 3, topic, v1.state)
    assert recorded.cls is Renamed
    assert plain(recorded.facts)["reason"] == "v1:qualifying_points"


def test_a_malformed_state_fails_loudly_naming_the_field() -> None:
    event = as_stored(1, every_event_type()[0])  # an Opened
    stored = StoredEvent(
        event.originator_id,
        1,
        "domain.account:PatientAccount.Opened",
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"yesterday"},'
        b'"program_id":"p","patient_id":"x"}',
    )
    with pytest.raises(msgspec.ValidationError, match=r"\$\.timestamp\._data_"):
        READER.read(1, event.originator_id, 1, stored.topic, stored.state)
