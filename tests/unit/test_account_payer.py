"""Payer rules on the pure domain: caps by the payer class in force at the event time, referral
bonuses withheld on each side, prescriptions that never earn, the program file's payer rules
and their pointed errors, and events stored before payer classes existed."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from careledger.application.programs import ProgramFileError, builtin_programs, parse_program
from domain import interactions as di
from domain.account import PatientAccount
from domain.entries import statement_lines_of
from domain.payer import PayerRules, reward_value
from projections.stored import AcceptedFacts
from tests.unit.dsl import (
    DEFAULT,
    Ledger,
    adjust,
    at,
    cancel,
    coverage,
    enrol,
    redeem,
    visit,
    with_version,
)
from tests.unit.stored_events import MAPPER, READER, as_stored
from tests.unit.test_account_referrals import REFEREE, REFERRER, Pair
from tests.unit.test_program_file import shipped, v0, with_change


def medicare(*history: di.Interaction) -> Ledger:
    return Ledger().given(enrol(at(0), payer_class="medicare"), adjust(50_000, at(0)), *history)


def outcome(events: list[Any]) -> list[tuple[str, str | None]]:
    return [
        (type(e).__name__, getattr(e, "reason", None))
        for e in events
        if isinstance(e, PatientAccount.PointsRedeemed | PatientAccount.RedemptionRejected)
    ]


REDEEMED = ("PointsRedeemed", None)
CAPPED = ("RedemptionRejected", "payer_cap")


def test_clinic_default_values_points_and_holds_federal_classes_to_the_oig_caps() -> None:
    version = DEFAULT.latest
    assert version.point_value == Decimal("0.01")
    assert version.payer == PayerRules(
        frozenset({"medicare", "medicaid", "tricare"}),
        Decimal("15.00"),
        Decimal("75.00"),
        referral_bonuses=False,
        never_earn=frozenset({"prescription"}),
    )


def test_a_reward_is_worth_its_own_value_or_its_points_at_the_point_value() -> None:
    assert reward_value(Decimal("12.50"), 300, Decimal("0.01")) == Decimal("12.50")
    assert reward_value(None, 1234, Decimal("0.01")) == Decimal("12.34")
    assert reward_value(None, 1234, None) is None


@pytest.mark.parametrize(
    ("points", "expected"), [(1500, REDEEMED), (1501, CAPPED), (100_00, CAPPED)]
)
def test_one_reward_above_15_is_refused(points: int, expected: tuple[str, Any]) -> None:
    ledger = medicare()
    assert outcome(ledger.when(redeem(points, "r-1", at(1)))) == [expected]


def test_the_calendar_year_total_stops_at_75_and_a_cancellation_frees_room() -> None:
    ledger = medicare(*[redeem(1500, f"r-{n}", at(1 + n)) for n in range(5)])  # 75.00
    assert outcome(ledger.when(redeem(1, "r-over", at(10)))) == [CAPPED]
    ledger.given(cancel("r-0", at(11)))
    assert outcome(ledger.when(redeem(1500, "r-again", at(12)))) == [REDEEMED]
    # the program's time zone's calendar year: 2027 starts afresh
    assert outcome(ledger.when(redeem(1500, "r-2027", at(361)))) == [REDEEMED]


def test_a_refused_redemption_changes_no_points_and_says_why_on_the_statement() -> None:
    ledger = medicare()
    before = ledger.available
    (rejected,) = ledger.when(redeem(1600, "r-1", at(1)))
    assert ledger.available == before
    (line,) = statement_lines_of(rejected, before)
    assert (line.kind, line.points, line.reason) == ("noted", 0, "payer_cap")


@pytest.mark.parametrize("payer_class", ["commercial", "self_pay", "other", None])
def test_patients_without_a_federal_class_are_not_capped(payer_class: str | None) -> None:
    ledger = Ledger().given(enrol(at(0), payer_class=payer_class), adjust(50_000, at(0)))
    events = ledger.when(redeem(10_000, "r-1", at(1)))  # 100.00 at once
    assert outcome(events) == [REDEEMED]
    assert events[0].value == Decimal("100.00")
    assert events[0].payer_class == (payer_class or "other")


def test_the_class_in_force_at_the_event_time_decides_even_when_it_arrives_late() -> None:
    ledger = Ledger().given(enrol(at(0), payer_class="commercial"), adjust(50_000, at(0)))
    ledger.given(coverage("medicare", at(30)))
    assert outcome(ledger.when(redeem(2000, "r-before", at(20)))) == [REDEEMED]  # commercial
    assert outcome(ledger.when(redeem(2000, "r-after", at(40)))) == [CAPPED]
    # a change that arrives late, dated before a redemption, decides the later ones
    ledger.given(coverage("commercial", at(50)), coverage("tricare", at(45)))
    assert ledger.account.payer_class_at(at(46)) == "tricare"
    assert ledger.account.payer_class_at(at(60)) == "commercial"
    assert outcome(ledger.when(redeem(2000, "r-tricare", at(47)))) == [CAPPED]
    assert outcome(ledger.when(redeem(2000, "r-late", at(55)))) == [REDEEMED]


def test_payer_classes_replay_from_the_events() -> None:
    ledger = Ledger().given(
        enrol(at(0), payer_class="medicaid"), coverage("commercial", at(10)), visit(at(11))
    )
    replayed = ledger.replayed()
    assert replayed.payer_changes == ledger.account.payer_changes
    assert (replayed.payer_class_at(at(5)), replayed.payer_class) == ("medicaid", "commercial")


# ----------------------------------------------------------------------------- referrals
def test_a_medicaid_referee_pays_neither_side_and_both_statements_say_why() -> None:
    pair = Pair()
    pair.referrer.given(enrol(at(0), payer_class="commercial"))
    pair.referee.given(enrol(at(1), referred_by=REFERRER, payer_class="medicaid"))
    pair.relay()
    pair.referee.given(visit(at(2)))
    pair.relay()
    assert (pair.referrer.available, pair.referee.available) == (0, 100)  # the visit only
    for ledger, other, rule in (
        (pair.referee, REFERRER, "referral.referee"),
        (pair.referrer, REFEREE, "referral.referrer"),
    ):
        (withheld,) = [
            e
            for e in ledger.account.pending_events
            if type(e) is PatientAccount.ReferralBonusWithheld
        ]
        (line,) = statement_lines_of(withheld, ledger.available)
        assert (line.kind, line.points, line.reason, line.rule_id) == (
            "noted",
            0,
            "referral_not_permitted",
            rule,
        )
        assert (line.source_id, line.occurred_at) == (other, at(2))
    pair.relay()  # nothing is carried twice
    assert (
        len([e for e in pair.referrer.account.pending_events if "Withheld" in type(e).__name__])
        == 1
    )


def test_a_federal_referrer_is_not_paid_but_a_commercial_referee_is() -> None:
    pair = Pair()
    pair.referrer.given(enrol(at(0), payer_class="tricare"))
    pair.referee.given(enrol(at(1), referred_by=REFERRER, payer_class="commercial"))
    pair.relay()
    pair.referee.given(visit(at(2)))
    pair.relay()
    assert (pair.referrer.available, pair.referee.available) == (0, 600)


def test_commercial_patients_keep_their_referral_bonuses() -> None:
    pair = Pair()
    pair.referrer.given(enrol(at(0), payer_class="commercial"))
    pair.referee.given(enrol(at(1), referred_by=REFERRER))
    pair.relay()
    pair.referee.given(visit(at(2)))
    pair.relay()
    assert (pair.referrer.available, pair.referee.available) == (1000, 600)


def test_a_program_may_permit_referral_bonuses_for_federal_classes() -> None:
    assert DEFAULT.latest.payer is not None
    permitting = with_version(DEFAULT, payer=replace(DEFAULT.latest.payer, referral_bonuses=True))
    pair = Pair(permitting)
    pair.referee.given(enrol(at(1), referred_by=REFERRER, payer_class="medicare"))
    pair.relay()
    pair.referee.given(visit(at(2)))
    pair.relay()
    assert (pair.referrer.available, pair.referee.available) == (1000, 600)


# --------------------------------------------------------------------------- purchases
PHARMACY = """
program_id: pharmacy-test
timezone: America/New_York
versions:
  - version: "1"
    effective_from: "2000-01-01T00:00:00Z"
    lot_lifetime_days: 365
    qualification: {basis: qualifying_points, window_days: 365}
    tiers: [{name: base, threshold: 0, multiplier: "1.00"}]
    partners: [{id: pharmacy-1, kind: pharmacy, home: true}]
    rules:
      - {id: purchase, "on": purchase.recorded, award: {per_amount: {rate: "10"}}}
    point_value: {points: 1000, value: "10.00"}
    payer_rules: {}
    referral: {enabled: false, window_days: 90, referrer_bonus: 0, referee_bonus: 0}
    spend: {currency: USD, discount_threshold: "100.00", discount_base_percent: 0,
            discount_step: "100.00", discount_step_percent: 0, discount_max_percent: 0,
            reward_every_payments: 1000, reward_id: none}
"""


def buy(category: str, when: Any) -> di.Purchase:
    return di.Purchase(
        source="pos",
        source_id=f"buy-{category}-{when.isoformat()}",
        occurred_at=when,
        purchase_id=f"p-{category}",
        partner_id="pharmacy-1",
        amount=Decimal("20.00"),
        currency="USD",
        category=category,
    )


def test_prescriptions_never_earn_for_federal_classes_and_do_for_others() -> None:
    program = parse_program(PHARMACY, "pharmacy.yaml")
    assert program.latest.payer == PayerRules()  # every field has the federal default
    federal = Ledger(program=program).given(enrol(at(0), payer_class="medicaid"))
    (noted,) = federal.when(buy("prescription", at(1)))
    assert (type(noted).__name__, noted.outcome) == ("InteractionNoted", "payer_category_excluded")
    assert federal.when(buy("front_store", at(2)))[0].awards[0].credit.points == 200
    commercial = Ledger(program=program).given(enrol(at(0), payer_class="commercial"))
    assert commercial.when(buy("prescription", at(1)))[0].awards[0].credit.points == 200


# ------------------------------------------------------------------------- program file
def test_payer_rules_are_data_and_the_shipped_programs_state_theirs() -> None:
    programs = builtin_programs()
    with_rules = sorted(pid for pid, p in programs.items() if p.latest.payer is not None)
    assert with_rules == ["clinic-default"]
    assert v0(shipped())["payer_rules"]["never_earn"] == ["prescription"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda v: v["payer_rules"].update(year_cap="10.00"),
            "versions[0].payer_rules.year_cap: must be at least item_cap (15.00)",
        ),
        (lambda v: v.pop("point_value"), "versions[0].point_value: required with payer_rules"),
        (
            lambda v: v.update(catalogue=[{"id": "mug", "points": 500}]),
            "versions[0].catalogue[0].value: required with payer_rules",
        ),
        (
            lambda v: v["payer_rules"].update(federal_classes=["medicare", "veterans"]),
            "versions[0].payer_rules.federal_classes[1]",
        ),
        (
            lambda v: v["payer_rules"].update(never_earn=["opioids"]),
            "versions[0].payer_rules.never_earn[0]",
        ),
        (lambda v: v["payer_rules"].update(item_cap="-1"), "versions[0].payer_rules.item_cap"),
    ],
)
def test_invalid_payer_rules_are_refused_naming_the_place(change: Any, named: str) -> None:
    with pytest.raises(ProgramFileError) as refused:
        parse_program(with_change(lambda d: change(v0(d))), "bad.yaml")
    assert any(problem.startswith(named) for problem in refused.value.problems), (
        refused.value.problems
    )


# ------------------------------------------------------------ events stored before this
def _stored_without(event: Any, *names: str) -> Any:
    """``event`` as a store written before ``names`` existed holds it."""
    stored = MAPPER.to_stored_event(event)
    state = json.loads(stored.state)
    for name in names:
        del state[name]
    return replace(stored, state=json.dumps(state).encode())


def test_events_stored_before_payer_classes_load_with_class_defaults() -> None:
    ledger = Ledger().given(enrol(at(0)), adjust(5000, at(0)), redeem(1500, "r-1", at(1)))
    ledger.given(cancel("r-1", at(2)))
    events = ledger.account.pending_events
    old = {
        PatientAccount.PatientEnrolled: ("payer_class",),
        PatientAccount.PointsRedeemed: ("value", "payer_class", "value_year"),
        PatientAccount.RedemptionCancelled: ("value", "payer_class", "value_year"),
    }
    account = None
    for event in events:
        names = old.get(type(event), ())
        stored = _stored_without(event, *names) if names else MAPPER.to_stored_event(event)
        loaded = MAPPER.to_domain_event(stored)
        for name in names:
            assert getattr(loaded, name) is None
        account = loaded.mutate(account)
    assert account is not None
    assert (account.payer_class, account.available) == ("other", 5000)
    # an old redemption carries no value: it counts nothing toward a year's cap
    assert account.redemptions["r-1"].value is None


def test_an_old_referral_qualification_loads_without_a_withheld_reason() -> None:
    pair = Pair()
    pair.referee.given(enrol(at(1), referred_by=REFERRER))
    pair.relay()
    pair.referee.given(visit(at(2)))
    (qualified,) = [
        e
        for e in pair.referee.account.pending_events
        if type(e) is PatientAccount.ReferralQualified
    ]
    loaded = MAPPER.to_domain_event(_stored_without(qualified, "withheld"))
    assert loaded.withheld is None and loaded.credit is not None


def test_the_projector_reads_old_redemptions_as_unvalued() -> None:
    """An old redemption has no value, so reward_value_by_year leaves it out (a new one is
    read with its value and year)."""
    ledger = Ledger().given(enrol(at(0)), adjust(5000, at(0)), redeem(1500, "r-1", at(1)))
    redeemed = ledger.account.pending_events[-1]
    facts = as_stored(7, redeemed).facts
    assert isinstance(facts, AcceptedFacts)
    assert facts.value is not None
    assert (facts.value.value, facts.payer_class, facts.value_year) == (
        Decimal("15.00"),
        "other",
        2026,
    )
    stored = _stored_without(redeemed, "value", "payer_class", "value_year")
    assert isinstance(stored.originator_id, UUID)
    old = READER.read(
        7, stored.originator_id, stored.originator_version, stored.topic, stored.state
    )
    assert isinstance(old.facts, AcceptedFacts)
    assert (old.facts.value, old.facts.payer_class, old.facts.value_year) == (None, None, None)
