"""The coalition and activity read models on both stores, row for row: partner liability and
settlement, engagement by action and month, goal days and streaks; and rebuilt == followed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from projections.runner import ProjectionOptions
from projections.service import catch_up, rebuild
from tests.conftest import Database
from tests.integration.test_projections_support import (
    COALITION,
    MOTION,
    activity,
    apply,
    coalition,
    dump,
    ledger_for,
    settings_for,
)

pytestmark = pytest.mark.integration
MARCH = date(2026, 3, 1)


async def test_a_coalition_and_an_activity_program_leave_exactly_these_rows(
    database: Database,
) -> None:
    settings = settings_for(database)
    ledger = ledger_for(database)
    apply(ledger, [*coalition(), *activity()])
    await catch_up(settings, ProjectionOptions(batch_size=5))
    tables = await dump(settings)
    pv = Decimal("0.010000")  # 1,000 points = 10.00 CAD
    assert tables["partner_liability"] == [
        # activity-motion has no partners (one row, partner '') and no point value:
        # 11 goal days x 30 + two streak payments; the void's 30 and one bonus reversed
        (MOTION, "", 530, 0, 0, 130, 400, None, None),
        # the visit 100, the login 5 and the follow 100 are the home partner's
        (COALITION, "clinic-main", 205, 100, 0, 0, 105, pv, Decimal("1.05")),
        (COALITION, "giftshop-1", 50, 0, 0, 0, 50, pv, Decimal("0.50")),
        (COALITION, "pharmacy-1", 120, 100, 0, 0, 20, pv, Decimal("0.20")),
        (COALITION, "wellness-1", 150, 0, 0, 0, 150, pv, Decimal("1.50")),
    ]
    assert tables["partner_settlement"] == [
        (COALITION, "clinic-main", "pharmacy-1", MARCH, 100, Decimal("1.00")),  # owes 1.00
        (COALITION, "pharmacy-1", "pharmacy-1", MARCH, 100, Decimal("1.00")),  # its own
    ]
    assert tables["engagement_monthly"] == [
        (COALITION, MARCH, "portal_login", 2, 1, 5),
        (COALITION, MARCH, "social_follow", 1, 1, 100),
    ]
    # goal days 1-10 March (the 11th voided): 10 in the 30 days to the 10th, a run of 10
    assert tables["activity_days"] == [
        (MOTION, "walt", 10, 10, 10, 10, date(2026, 3, 1), date(2026, 3, 10)),
    ]
    assert len(tables["patient_goal_readings"]) == 10
    streak = [
        (row[4], row[9]) for row in tables["ledger_entries"] if row[6] == "streak"
    ]  # (points, the reading that caused it)
    assert sorted(streak) == [(-100, "walt-late"), (100, "walt-11"), (100, "walt-late")]
    refused = [row for row in tables["ledger_entries"] if row[9] == "cora-r2"]
    assert [(r[3], r[12]) for r in refused] == [("noted", "insufficient_points")]

    # the same rows rebuilt, in one worker or three
    followed = tables
    await rebuild(settings)
    assert await dump(settings) == followed
    await rebuild(settings, ProjectionOptions(batch_size=3, account_cache=1, rebuild_workers=3))
    assert await dump(settings) == followed
