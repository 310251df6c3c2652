"""Referrals: established by ``referral.made`` (carried to the referee by the relay) or by the
referee's enrolment; the referee's first visit 0-90 days later pays 500 to the referee and,
through the relay, 1000 to the referrer, once per referee.

The relay is simulated here as careledger.application.ledger does it: ``note_referral`` on the
referee for a ``ReferralMade``, ``pay_referrer_bonus`` on the referrer for a ``ReferralQualified``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from domain import errors
from domain.account import PatientAccount, entries_of
from domain.program import Program
from tests.unit.dsl import (
    DEFAULT,
    Ledger,
    at,
    checkup,
    enrol,
    redeem,
    refer,
    visit,
    void,
    with_version,
)

REFERRER, REFEREE = "patient-1", "patient-2"
SECOND = timedelta(seconds=1)
NO_REFERRALS = with_version(DEFAULT, referral=replace(DEFAULT.latest.referral, enabled=False))


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def lines(events: list[Any]) -> list[tuple[str, int, int, str]]:
    return [
        (e.kind, e.points, e.balance_after, e.rule_id)
        for event in events
        for e in entries_of(event)
    ]


class Pair:
    """A referrer's and a referee's accounts, with the referral relay between them."""

    def __init__(self, program: Program = DEFAULT) -> None:
        self.program = program
        self.referrer = Ledger(program=program, patient_id=REFERRER)
        self.referee = Ledger(program=program, patient_id=REFEREE)
        self._carried: set[int] = set()

    def relay(self) -> list[Any]:
        """Carry every referral fact not yet carried; returns the events it produced."""
        produced: list[Any] = []
        for source, target in ((self.referrer, self.referee), (self.referee, self.referrer)):
            for event in list(source.account.pending_events):
                if id(event) in self._carried:
                    continue
                self._carried.add(id(event))
                produced += self._carry(event, target)
        return produced

    def _carry(self, event: Any, target: Ledger) -> list[Any]:
        before = len(target.account.pending_events)
        name = type(event).__name__
        if name == "ReferralMade":
            target.account.note_referral(
                REFERRER, event.occurred_at, event.source, event.source_id, self.program
            )
        elif name == "ReferralQualified":
            target.account.pay_referrer_bonus(
                REFEREE, event.qualified_at, self.program, withheld=event.withheld
            )
        return target.account.pending_events[before:]


@pytest.fixture
def pair() -> Pair:
    return Pair()


# ------------------------------------------------------------------ referral.made
def test_referral_made_is_recorded_on_the_referrer_and_carried_to_the_referee(pair: Pair) -> None:
    events = pair.referrer.when(refer(REFEREE, at(0)))

    assert happened(events) == ["ReferralMade"]
    carried = pair.relay()
    assert happened(carried) == ["ReferralRecorded"]
    assert (carried[0].referrer, carried[0].referred_at) == (REFERRER, at(0))
    assert lines(events + carried) == []


def test_the_referees_first_visit_in_the_window_pays_both_bonuses(pair: Pair) -> None:
    pair.referrer.when(refer(REFEREE, at(0)))
    pair.relay()

    events = pair.referee.when(visit(at(30)))
    paid = pair.relay()

    assert happened(events) == ["PointsEarned", "ReferralQualified"]
    assert lines(events) == [
        ("earned", 100, 100, "visit.in_person"),
        ("bonus", 500, 600, "referral.referee"),
    ]
    assert happened(paid) == ["ReferrerBonusEarned"]
    assert lines(paid) == [("bonus", 1000, 1000, "referral.referrer")]
    assert (pair.referee.available, pair.referrer.available) == (600, 1000)


def test_bonus_lots_expire_365_days_after_the_qualifying_visit(pair: Pair) -> None:
    pair.referrer.given(refer(REFEREE, at(0)))
    pair.relay()
    events = pair.referee.when(visit(at(30)))
    paid = pair.relay()

    assert events[1].credit.expires_at == at(30) + timedelta(days=365)
    assert paid[0].credit.expires_at == at(30) + timedelta(days=365)


# ------------------------------------------------------------- enrolment.referred_by
def test_an_enrolment_naming_a_referrer_records_the_referral(pair: Pair) -> None:
    events = pair.referee.when(enrol(at(0), referred_by=REFERRER))

    assert happened(events) == ["PatientEnrolled", "ReferralRecorded"]
    assert events[1].referrer == REFERRER


def test_an_enrolment_referral_pays_both_bonuses(pair: Pair) -> None:
    pair.referee.given(enrol(at(0), referred_by=REFERRER))

    events = pair.referee.when(visit(at(90)))
    paid = pair.relay()

    assert lines(events)[-1] == ("bonus", 500, 600, "referral.referee")
    assert lines(paid) == [("bonus", 1000, 1000, "referral.referrer")]


def test_both_events_naming_the_same_pair_are_one_referral(pair: Pair) -> None:
    pair.referee.given(enrol(at(0), referred_by=REFERRER))
    pair.referrer.given(refer(REFEREE, at(1)))

    assert pair.relay() == []  # the referral is already recorded
    pair.referee.given(visit(at(10)))
    pair.relay()

    assert (pair.referee.available, pair.referrer.available) == (600, 1000)


def test_the_first_referrer_recorded_stands(pair: Pair) -> None:
    pair.referee.given(enrol(at(0), referred_by="patient-3"))
    before = len(pair.referee.account.pending_events)

    pair.referee.account.note_referral(REFERRER, at(1), "portal", "ref-9", pair.program)

    assert len(pair.referee.account.pending_events) == before
    events = pair.referee.when(visit(at(10)))
    assert events[-1].referrer == "patient-3"


# ------------------------------------------------------------------------- window
@pytest.mark.parametrize("days", [0, 1, 45, 90])
def test_a_first_visit_0_to_90_days_after_the_referral_qualifies(days: int) -> None:
    ledger = Ledger(patient_id=REFEREE).given(enrol(at(0), referred_by=REFERRER))

    events = ledger.when(visit(at(days)))

    assert happened(events) == ["PointsEarned", "ReferralQualified"]


@pytest.mark.parametrize(
    "when",
    [at(90) + SECOND, at(200), at(0) - SECOND, at(-30)],
    ids=["just-after-90-days", "200-days", "just-before", "30-days-before"],
)
def test_a_first_visit_outside_the_window_does_not_qualify(when: Any) -> None:
    ledger = Ledger(patient_id=REFEREE).given(enrol(at(0), referred_by=REFERRER))

    events = ledger.when(visit(when))

    assert happened(events) == ["PointsEarned"]


def test_only_the_earliest_visit_counts(pair: Pair) -> None:
    pair.referee.given(visit(at(-5)), enrol(at(0), referred_by=REFERRER))

    events = pair.referee.when(visit(at(10)))

    assert happened(events) == ["PointsEarned"]
    assert pair.relay() == []


def test_a_visit_before_the_referral_arrives_qualifies_once_it_does(pair: Pair) -> None:
    pair.referee.given(visit(at(10)))  # the visit arrives first
    pair.referrer.given(refer(REFEREE, at(0)))

    carried = pair.relay()

    assert happened(carried) == ["ReferralRecorded", "ReferralQualified", "ReferrerBonusEarned"]
    assert lines(carried) == [
        ("bonus", 500, 600, "referral.referee"),
        ("bonus", 1000, 1000, "referral.referrer"),
    ]


def test_non_visit_interactions_do_not_qualify_a_referral() -> None:
    ledger = Ledger(patient_id=REFEREE).given(enrol(at(0), referred_by=REFERRER))

    events = ledger.when(checkup(at(5), "screening"))

    assert happened(events) == ["PointsEarned"]


# ---------------------------------------------------------------------------- once
def test_the_referee_bonus_is_paid_once(pair: Pair) -> None:
    pair.referee.given(enrol(at(0), referred_by=REFERRER), visit(at(10)))

    events = pair.referee.when(visit(at(20)))

    assert happened(events) == ["PointsEarned"]


def test_the_referrer_bonus_is_paid_once_per_referee(pair: Pair) -> None:
    pair.referee.given(enrol(at(0), referred_by=REFERRER), visit(at(10)))
    pair.relay()
    account = pair.referrer.account
    before = len(account.pending_events)

    account.pay_referrer_bonus(REFEREE, at(10), pair.program)  # the relay delivers again
    account.pay_referrer_bonus(REFEREE, at(11), pair.program)

    assert len(account.pending_events) == before
    assert pair.referrer.available == 1000


def test_a_referrer_is_paid_for_each_referee() -> None:
    ledger = Ledger(patient_id=REFERRER)

    ledger.account.pay_referrer_bonus("patient-2", at(10), ledger.program)
    ledger.account.pay_referrer_bonus("patient-3", at(11), ledger.program)

    assert [e.points for e in ledger.entries()] == [1000, 1000]
    assert ledger.available == 2000


# -------------------------------------------------------------------- self-referral
def test_referring_yourself_is_refused() -> None:
    ledger = Ledger(patient_id=REFERRER)

    with pytest.raises(errors.SelfReferral):
        ledger.when(refer(REFERRER, at(0)))

    assert ledger.account.pending_events[1:] == []
    assert errors.SelfReferral.code == "self_referral"


def test_enrolling_as_referred_by_yourself_is_refused() -> None:
    ledger = Ledger(patient_id=REFEREE)

    with pytest.raises(errors.SelfReferral):
        ledger.when(enrol(at(0), referred_by=REFEREE))

    assert ledger.account.pending_events[1:] == []


def test_the_relay_cannot_record_a_self_referral() -> None:
    ledger = Ledger(patient_id=REFEREE)

    with pytest.raises(errors.SelfReferral):
        ledger.account.note_referral(REFEREE, at(0), "portal", "r", ledger.program)

    assert ledger.account.pending_events[1:] == []


# ---------------------------------------------------------------- bonus properties
def test_bonuses_are_not_multiplied() -> None:
    pair = Pair()
    pair.referee.given(
        *[checkup(at(0), "screening") for _ in range(5)]
    )  # silver before the first visit
    pair.referrer.given(*[checkup(at(0), "screening") for _ in range(15)])  # gold
    assert (pair.referee.tier, pair.referrer.tier) == ("silver", "gold")
    pair.referee.given(enrol(at(1), referred_by=REFERRER))

    events = pair.referee.when(visit(at(2)))
    paid = pair.relay()

    assert [e.points for e in entries_of(events[-1])] == [500]
    assert [e.points for e in entries_of(paid[0])] == [1000]
    assert [e.points for e in entries_of(events[0])] == [110]


def test_a_bonus_repays_a_negative_balance_first() -> None:
    ledger = Ledger(patient_id=REFERRER)
    earned = visit(at(0))
    ledger.given(earned, redeem(100, "r-1", at(1)), void(earned, at(2)))  # -100
    before = len(ledger.account.pending_events)

    ledger.account.pay_referrer_bonus(REFEREE, at(3), ledger.program)

    (event,) = ledger.account.pending_events[before:]
    assert isinstance(event, PatientAccount.ReferrerBonusEarned)
    assert (event.credit.debt_repaid, event.credit.entry.balance_after) == (100, 900)
    assert ledger.account.debt == 0


# ---------------------------------------------------------------- program switch
def test_a_program_with_referral_rewards_off_pays_no_bonuses() -> None:
    pair = Pair(NO_REFERRALS)
    pair.referrer.given(refer(REFEREE, at(0)))
    pair.relay()

    events = pair.referee.when(visit(at(10)))
    paid = pair.relay()

    assert happened(events) == ["PointsEarned", "ReferralQualified"]
    assert events[1].credit is None
    assert lines(events) == [("earned", 100, 100, "visit.in_person")]
    assert paid == []
    assert (pair.referee.available, pair.referrer.available) == (100, 0)


def test_referral_events_are_still_accepted_when_rewards_are_off() -> None:
    ledger = Ledger(program=NO_REFERRALS, patient_id=REFERRER)

    assert happened(ledger.when(refer(REFEREE, at(0)))) == ["ReferralMade"]
