"""Tiers: qualifying points (base points of earning rules, net of reversals, in (t - 365 d, t])
set the tier; upgrades follow the crossing event, downgrades wait for maintenance."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.account import entries_of
from domain.program import Tier
from tests.unit.dsl import DEFAULT, Ledger, at, checkup, steps, visit, void, with_version

SECOND = timedelta(seconds=1)
DAY = date(2026, 1, 5)


def happened(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def earned(events: list[Any]) -> list[int]:
    return [e.points for event in events for e in entries_of(event) if e.kind == "earned"]


def tier_changes(events: list[Any]) -> list[tuple[str, str, str, int]]:
    return [
        (e.from_tier, e.to_tier, e.reason, e.qualifying_points)
        for e in events
        if type(e).__name__ == "TierChanged"
    ]


def visits(n: int, days: float = 0) -> list[Any]:
    return [visit(at(days)) for _ in range(n)]


def test_a_new_account_is_bronze() -> None:
    ledger = Ledger()

    assert ledger.tier == "bronze"
    assert ledger.account.balance(ledger.program).tier == "bronze"


def test_990_qualifying_points_stay_bronze_and_1000_reach_silver() -> None:
    ledger = Ledger().given(
        *visits(9),
        visit(at(0), "telehealth"),
        steps(DAY, 10000, at(0)),
        steps(DAY + timedelta(days=1), 10000, at(0)),
    )
    assert ledger.account.qualifying_points(at(0), ledger.program) == 990
    assert ledger.tier == "bronze"

    events = ledger.when(steps(DAY + timedelta(days=2), 5000, at(0)))

    assert earned(events) == [10]
    assert tier_changes(events) == [("bronze", "silver", "qualifying_points", 1000)]


def test_the_event_that_reaches_1000_earns_at_bronze_then_the_account_is_silver() -> None:
    ledger = Ledger().given(*visits(9))

    events = ledger.when(visit(at(0)))

    assert happened(events) == ["PointsEarned", "TierChanged"]
    assert earned(events) == [100]
    assert tier_changes(events) == [("bronze", "silver", "qualifying_points", 1000)]
    assert events[1].occurred_at == at(0)
    assert ledger.tier == "silver"


def test_after_the_upgrade_earning_is_multiplied() -> None:
    ledger = Ledger().given(*visits(10))

    assert earned(ledger.when(visit(at(0)))) == [110]


@pytest.mark.parametrize(
    ("visits_before", "tier", "points"),
    [(10, "silver", 110), (30, "gold", 125), (60, "platinum", 150)],
)
def test_tier_thresholds_and_multipliers(visits_before: int, tier: str, points: int) -> None:
    ledger = Ledger().given(*visits(visits_before))

    assert ledger.tier == tier
    assert earned(ledger.when(visit(at(0)))) == [points]


def test_qualifying_points_are_base_points_not_multiplied_ones() -> None:
    ledger = Ledger().given(*visits(29))  # 1000 at bronze, then 19 x 110 at silver

    assert ledger.available == 1000 + 19 * 110 == 3090
    assert ledger.tier == "silver"  # 2900 qualifying, not 3090

    events = ledger.when(visit(at(0)))

    assert earned(events) == [110]  # the crossing event earns at the old tier
    assert tier_changes(events) == [("silver", "gold", "qualifying_points", 3000)]


def test_gold_to_platinum_crossing_earns_at_gold() -> None:
    ledger = Ledger().given(*visits(59))

    events = ledger.when(visit(at(0)))

    assert earned(events) == [125]
    assert tier_changes(events) == [("gold", "platinum", "qualifying_points", 6000)]


def test_one_event_can_cross_several_thresholds() -> None:
    low = with_version(
        DEFAULT,
        tiers=(
            Tier("bronze", 0, Decimal("1.00")),
            Tier("silver", 100, Decimal("1.10")),
            Tier("gold", 300, Decimal("1.25")),
        ),
    )
    ledger = Ledger(program=low)

    events = ledger.when(checkup(at(0), "annual_wellness"))

    assert earned(events) == [500]
    assert tier_changes(events) == [("bronze", "gold", "qualifying_points", 500)]


def test_points_exactly_365_days_old_no_longer_qualify_for_an_upgrade() -> None:
    ledger = Ledger().given(*visits(5, 0), *visits(4, 365))

    events = ledger.when(visit(at(365)))

    assert ledger.account.qualifying_points(at(365), ledger.program) == 500
    assert tier_changes(events) == []
    assert ledger.tier == "bronze"


def test_points_just_under_365_days_old_still_qualify_for_an_upgrade() -> None:
    ledger = Ledger().given(*visits(5, 0), *visits(4, 364))

    events = ledger.when(visit(at(365) - SECOND))

    assert tier_changes(events) == [("bronze", "silver", "qualifying_points", 1000)]


def test_there_is_no_downgrade_between_maintenance_runs() -> None:
    ledger = Ledger().given(*visits(10, 0))

    events = ledger.when(visit(at(400)))  # the day-0 points have left the window

    assert tier_changes(events) == []
    assert earned(events) == [110]  # still silver
    assert ledger.tier == "silver"


def test_maintenance_downgrades_when_the_window_has_moved_on() -> None:
    ledger = Ledger().given(*visits(10, 0))

    events = ledger.maintain(at(365))

    assert tier_changes(events) == [("silver", "bronze", "maintenance", 0)]
    assert ledger.tier == "bronze"


def test_maintenance_one_second_before_the_window_ends_keeps_the_tier() -> None:
    ledger = Ledger().given(*visits(10, 0))

    events = ledger.maintain(at(365) - SECOND)

    assert tier_changes(events) == []
    assert ledger.tier == "silver"


def test_maintenance_can_drop_several_tiers() -> None:
    ledger = Ledger().given(*visits(60, 0))

    events = ledger.maintain(at(400))

    assert tier_changes(events) == [("platinum", "bronze", "maintenance", 0)]


def test_maintenance_sets_the_tier_up_too() -> None:
    # Five visits at day 100, then five that arrive late with day-0 times: the tenth counts
    # its window as of day 0 (500 points), maintenance as of day 100 sees all 1000.
    ledger = Ledger().given(*visits(5, 100), *visits(5, 0))
    assert ledger.tier == "bronze"

    events = ledger.maintain(at(100))

    assert tier_changes(events) == [("bronze", "silver", "maintenance", 1000)]


def test_a_void_reduces_qualifying_points_but_does_not_downgrade_by_itself() -> None:
    history = visits(10, 0)
    ledger = Ledger().given(*history)

    events = ledger.when(void(history[0], at(1)))

    assert tier_changes(events) == []
    assert ledger.tier == "silver"
    assert ledger.account.qualifying_points(at(1), ledger.program) == 900
    assert tier_changes(ledger.maintain(at(1))) == [("silver", "bronze", "maintenance", 900)]


def test_a_reversal_counts_at_the_voided_events_time() -> None:
    early = visits(10, 0)
    ledger = Ledger().given(*early, *visits(10, 100), void(early[0], at(200)))

    # As of day 366 the day-0 visits and their reversal have both left the window.
    assert ledger.account.qualifying_points(at(366), ledger.program) == 1000
    assert tier_changes(ledger.maintain(at(366))) == []
    assert ledger.tier == "silver"


def test_bonuses_do_not_qualify() -> None:
    ledger = Ledger(patient_id="referee").given(*visits(9, 0))
    ledger.account.note_referral("referrer", at(0), "portal", "ref-1", ledger.program)

    assert ledger.available == 900 + 500
    assert ledger.account.qualifying_points(at(0), ledger.program) == 900
    assert ledger.tier == "bronze"


def test_the_balance_reports_the_tier_and_qualifying_points() -> None:
    ledger = Ledger().given(*visits(10, 0), checkup(at(1), "screening"))

    balance = ledger.account.balance(ledger.program)

    assert (balance.tier, balance.qualifying_points) == ("silver", 1200)


def test_the_balance_reports_qualifying_points_as_of_a_maintenance_that_moved_them() -> None:
    ledger = Ledger().given(*visits(10, 0))

    events = ledger.maintain(at(366))

    assert "QualifyingPointsChanged" in happened(events)
    assert ledger.account.balance(ledger.program).qualifying_points == 0


def test_a_late_interaction_keeps_qualifying_points_as_of_the_later_maintenance() -> None:
    ledger = Ledger().given(*visits(5, 0))
    ledger.maintain(at(366))  # the window moved past the day-0 visits: 0 qualifying

    events = ledger.when(checkup(at(100), "vaccination"))  # arrives late, dated day 100

    # rules.md: as of the later of the latest interaction (day 100) and the latest
    # maintenance that changed them (day 366): only the vaccination's 100 counts.
    assert events[-1].qualifying_points == 100
    assert ledger.account.balance(ledger.program).qualifying_points == 100
