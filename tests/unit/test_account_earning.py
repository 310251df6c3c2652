"""Earning rules: given an account's history, when one interaction arrives, then these entries.

Every number is the one docs/rules.md gives for program ``clinic-default`` 2026.1.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain.account import entries_of
from tests.unit.dsl import (
    DEFAULT,
    Ledger,
    assessment,
    at,
    checkup,
    review,
    steps,
    visit,
)

YEAR = timedelta(days=365)


def happened(events: list[Any]) -> list[str]:
    """The names of the events an interaction produced, in order."""
    return [type(event).__name__ for event in events]


def lines(events: list[Any]) -> list[tuple[str, int, int, str]]:
    """The ledger lines events carry: (kind, points, balance_after, rule_id)."""
    return [
        (e.kind, e.points, e.balance_after, e.rule_id)
        for event in events
        for e in entries_of(event)
    ]


def at_tier(tier: str) -> Ledger:
    """An account that has just reached ``tier`` with in-person visits at T0 (nothing else)."""
    visits_needed = {"bronze": 0, "silver": 10, "gold": 30, "platinum": 60}[tier]
    ledger = Ledger().given(*[visit(at(0)) for _ in range(visits_needed)])
    assert ledger.tier == tier
    return ledger


def noted(events: list[Any]) -> str:
    """The outcome of the single InteractionNoted an interaction produced."""
    assert happened(events) == ["InteractionNoted"]
    return str(events[0].outcome)


# ------------------------------------------------------------------------------ visits
@pytest.mark.parametrize(
    ("visit_type", "points"),
    [("in_person", 100), ("specialist", 100), ("telehealth", 50), ("urgent_care", 50)],
)
def test_a_visit_earns_its_base_points_at_bronze(visit_type: str, points: int) -> None:
    events = Ledger().when(visit(at(0), visit_type))

    assert happened(events) == ["PointsEarned"]
    assert lines(events) == [("earned", points, points, f"visit.{visit_type}")]


def test_an_entry_carries_its_cause_rule_and_program_version() -> None:
    interaction = visit(at(3), id="visit-42")

    (entry,) = entries_of(Ledger().when(interaction)[0])

    assert entry.source == "emr"
    assert entry.source_id == "visit-42"
    assert entry.occurred_at == at(3)
    assert entry.program_version == "2026.1"
    assert entry.rule_id == "visit.in_person"


def test_entry_ids_are_derived_from_the_cause_so_a_replay_never_makes_a_twin() -> None:
    first = Ledger().given(visit(at(0), id="v-1"), checkup(at(1), id="c-1")).entries()
    again = Ledger().given(visit(at(0), id="v-1"), checkup(at(1), id="c-1")).entries()

    assert [e.entry_id for e in first] == [e.entry_id for e in again]
    assert len({e.entry_id for e in first}) == 2


def test_every_award_is_a_lot_expiring_365_days_after_its_event_time() -> None:
    ledger = Ledger()

    (earned,) = ledger.when(visit(at(10, hours=5)))

    lot = ledger.account.lots[earned.credit.lot_id]
    assert lot.expires_at == at(10, hours=5) + YEAR
    assert lot.remaining == 100


def test_balance_after_runs_across_awards() -> None:
    ledger = Ledger().given(visit(at(0)))

    events = ledger.when(checkup(at(1), "screening"))

    assert lines(events) == [("earned", 200, 300, "checkup.screening")]
    assert ledger.available == 300


def test_visits_have_no_frequency_cap() -> None:
    ledger = Ledger().given(visit(at(0)), visit(at(0)))

    assert lines(ledger.when(visit(at(0)))) == [("earned", 100, 300, "visit.in_person")]


# ---------------------------------------------------------------------------- checkups
@pytest.mark.parametrize(
    ("checkup_type", "points"),
    [("annual_wellness", 500), ("screening", 200), ("vaccination", 100), ("dental_cleaning", 150)],
)
def test_a_checkup_earns_its_base_points(checkup_type: str, points: int) -> None:
    events = Ledger().when(checkup(at(0), checkup_type))

    assert lines(events) == [("earned", points, points, f"checkup.{checkup_type}")]


@pytest.mark.parametrize("checkup_type", ["screening", "vaccination", "dental_cleaning"])
def test_other_checkups_are_not_capped(checkup_type: str) -> None:
    ledger = Ledger().given(checkup(at(0), checkup_type))

    assert happened(ledger.when(checkup(at(0), checkup_type))) == ["PointsEarned"]


def test_annual_wellness_is_awarded_once_per_calendar_year() -> None:
    ledger = Ledger().given(checkup(datetime(2026, 2, 1, tzinfo=UTC), "annual_wellness"))

    events = ledger.when(checkup(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "annual_wellness"))

    assert noted(events) == "already_awarded_this_year"
    assert lines(events) == []
    assert ledger.available == 500


def test_annual_wellness_on_dec_31_and_jan_1_are_different_years() -> None:
    ledger = Ledger().given(
        checkup(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "annual_wellness")
    )

    events = ledger.when(checkup(datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "annual_wellness"))

    assert lines(events) == [("earned", 500, 1000, "checkup.annual_wellness")]


def test_annual_wellness_year_is_the_program_time_zones_year() -> None:
    new_york = Ledger(program=replace(DEFAULT, timezone=ZoneInfo("America/New_York")))
    new_york.given(checkup(datetime(2026, 12, 1, 12, tzinfo=UTC), "annual_wellness"))

    # 03:00 UTC on Jan 1 is still Dec 31 in New York; 05:00 UTC is Jan 1 there.
    still_2026 = new_york.when(checkup(datetime(2027, 1, 1, 3, tzinfo=UTC), "annual_wellness"))
    now_2027 = new_york.when(checkup(datetime(2027, 1, 1, 5, tzinfo=UTC), "annual_wellness"))

    assert noted(still_2026) == "already_awarded_this_year"
    assert lines(now_2027) == [("earned", 500, 1000, "checkup.annual_wellness")]


# ------------------------------------------------------------------------- assessments
def test_an_assessment_earns_250() -> None:
    assert lines(Ledger().when(assessment(at(0)))) == [("earned", 250, 250, "assessment")]


def test_assessment_is_awarded_once_per_calendar_quarter() -> None:
    ledger = Ledger().given(assessment(datetime(2026, 1, 1, tzinfo=UTC)))

    events = ledger.when(assessment(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)))

    assert noted(events) == "already_awarded_this_quarter"
    assert ledger.available == 250


def test_assessment_quarters_turn_at_midnight_between_mar_31_and_apr_1() -> None:
    ledger = Ledger().given(assessment(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)))

    events = ledger.when(assessment(datetime(2026, 4, 1, tzinfo=UTC)))

    assert lines(events) == [("earned", 250, 500, "assessment")]


def test_q1_of_the_next_year_is_a_new_quarter() -> None:
    ledger = Ledger().given(assessment(datetime(2026, 3, 31, tzinfo=UTC)))

    events = ledger.when(assessment(datetime(2027, 1, 1, tzinfo=UTC)))

    assert lines(events) == [("earned", 250, 500, "assessment")]


def test_assessment_quarter_is_the_program_time_zones_quarter() -> None:
    new_york = Ledger(program=replace(DEFAULT, timezone=ZoneInfo("America/New_York")))
    new_york.given(assessment(datetime(2026, 3, 15, tzinfo=UTC)))

    # 02:00 UTC on Apr 1 is still Mar 31 (Q1) in New York.
    events = new_york.when(assessment(datetime(2026, 4, 1, 2, tzinfo=UTC)))

    assert noted(events) == "already_awarded_this_quarter"


# ----------------------------------------------------------------------------- reviews
def test_a_review_earns_50() -> None:
    assert lines(Ledger().when(review(at(0)))) == [("earned", 50, 50, "review")]


@pytest.mark.parametrize("offset", [timedelta(days=29), -timedelta(days=29), timedelta(0)])
def test_no_review_is_awarded_within_30_days_of_an_awarded_review(offset: timedelta) -> None:
    ledger = Ledger().given(review(at(100)))

    events = ledger.when(review(at(100) + offset))

    assert noted(events) == "review_cooldown"
    assert ledger.available == 50


@pytest.mark.parametrize(
    "offset",
    [timedelta(days=31), -timedelta(days=31), timedelta(days=30), -timedelta(days=30)],
)
def test_a_review_30_days_or_more_from_an_awarded_review_earns(offset: timedelta) -> None:
    ledger = Ledger().given(review(at(100)))

    events = ledger.when(review(at(100) + offset))

    assert lines(events) == [("earned", 50, 100, "review")]


def test_a_review_just_inside_30_days_is_noted() -> None:
    ledger = Ledger().given(review(at(100)))

    events = ledger.when(review(at(130) - timedelta(seconds=1)))

    assert noted(events) == "review_cooldown"


def test_the_review_window_counts_from_awarded_reviews_only() -> None:
    ledger = Ledger().given(review(at(0)), review(at(20)))  # the second is noted

    events = ledger.when(review(at(40)))

    assert lines(events) == [("earned", 50, 100, "review")]


# ------------------------------------------------------------------------------- steps
DAY = date(2026, 1, 5)


@pytest.mark.parametrize(("value", "points"), [(5000, 10), (9999, 10), (10000, 20), (25000, 20)])
def test_a_days_steps_earn_their_band(value: int, points: int) -> None:
    assert lines(Ledger().when(steps(DAY, value, at(0)))) == [
        ("earned", points, points, "activity.steps")
    ]


def test_fewer_than_5000_steps_earn_nothing_and_are_noted() -> None:
    ledger = Ledger()

    assert noted(ledger.when(steps(DAY, 4999, at(0)))) == "no_steps_top_up"
    assert ledger.available == 0


def test_steps_top_up_what_the_day_already_earned_and_never_take_back() -> None:
    ledger = Ledger()

    first = ledger.when(steps(DAY, 5000, at(0, hours=1)))
    better = ledger.when(steps(DAY, 12000, at(0, hours=2)))
    worse = ledger.when(steps(DAY, 3000, at(0, hours=3)))

    assert lines(first) == [("earned", 10, 10, "activity.steps")]
    assert lines(better) == [("earned", 10, 20, "activity.steps")]
    assert noted(worse) == "no_steps_top_up"
    assert ledger.available == 20


def test_a_lower_reading_after_the_best_band_is_noted() -> None:
    ledger = Ledger().given(steps(DAY, 12000, at(0)))

    assert noted(ledger.when(steps(DAY, 6000, at(0, hours=1)))) == "no_steps_top_up"


def test_step_days_are_independent() -> None:
    ledger = Ledger().given(steps(DAY, 12000, at(0)))

    events = ledger.when(steps(DAY + timedelta(days=1), 5000, at(1)))

    assert lines(events) == [("earned", 10, 30, "activity.steps")]


# ----------------------------------------------------------------- tier multipliers
@pytest.mark.parametrize(
    ("tier", "interaction", "points", "rule_id"),
    [
        ("silver", lambda: visit(at(1), "telehealth"), 55, "visit.telehealth"),
        ("silver", lambda: visit(at(1)), 110, "visit.in_person"),
        ("silver", lambda: steps(DAY, 5000, at(1)), 11, "activity.steps"),
        ("silver", lambda: checkup(at(1), "dental_cleaning"), 165, "checkup.dental_cleaning"),
        ("gold", lambda: review(at(1)), 62, "review"),
        ("gold", lambda: visit(at(1)), 125, "visit.in_person"),
        ("gold", lambda: checkup(at(1), "dental_cleaning"), 187, "checkup.dental_cleaning"),
        ("gold", lambda: steps(DAY, 5000, at(1)), 12, "activity.steps"),
        ("platinum", lambda: visit(at(1), "urgent_care"), 75, "visit.urgent_care"),
        ("platinum", lambda: assessment(at(1)), 375, "assessment"),
    ],
)
def test_points_are_base_times_tier_multiplier_rounded_down(
    tier: str, interaction: Any, points: int, rule_id: str
) -> None:
    ledger = at_tier(tier)
    before = ledger.available

    events = ledger.when(interaction())

    assert lines(events) == [("earned", points, before + points, rule_id)]


def test_steps_top_ups_are_multiplied_one_at_a_time() -> None:
    ledger = at_tier("gold")
    ledger.given(steps(DAY, 5000, at(1)))

    events = ledger.when(steps(DAY, 10000, at(1, hours=1)))

    assert [e.points for event in events for e in entries_of(event)] == [12]  # floor(10 x 1.25)


# ----------------------------------------------------------------------------- dedupe
def test_the_same_source_and_id_twice_is_a_duplicate_and_changes_nothing() -> None:
    ledger = Ledger().given(visit(at(0), id="v-1"))
    before = len(ledger.account.pending_events)

    outcome = ledger.account.handle(visit(at(0), id="v-1"), ledger.program)

    assert outcome == "duplicate"
    assert len(ledger.account.pending_events) == before
    assert ledger.available == 100


def test_a_duplicate_is_recognised_whatever_it_carries_and_however_late() -> None:
    ledger = Ledger().given(visit(at(0), id="v-1"))

    events = ledger.when(visit(at(900), "telehealth", id="v-1"))

    assert events == []
    assert ledger.available == 100


def test_the_same_id_from_another_source_is_another_interaction() -> None:
    ledger = Ledger().given(visit(at(0), id="v-1"))

    events = ledger.when(visit(at(0), source="clinic-b", id="v-1"))

    assert lines(events) == [("earned", 100, 200, "visit.in_person")]


def test_handle_reports_accepted_for_a_new_interaction() -> None:
    ledger = Ledger()

    assert ledger.account.handle(visit(at(0)), ledger.program) == "accepted"
    assert ledger.account.handle(review(at(0)), ledger.program) == "accepted"
