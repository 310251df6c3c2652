"""The rule engine as a table: (program version, account at event time, interaction) -> award.

Each case is a small program written as a file would be, evaluated on the pure domain with
no event store: limits of every period (a points limit trims), shared counters, campaign
boosts and windows, CEL conditions on the tier held at the event time, versions, and the
tier downgrade policies.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from careledger.application.programs import parse_program
from domain.account import PatientAccount
from domain.program import Program
from tests.unit.dsl import Ledger, adjust, checkup, consent, review, steps, visit, void


def program(
    rules: list[dict[str, Any]], tiers: list[dict[str, Any]] | None = None, **more: Any
) -> Program:
    base = {
        "version": "1",
        "effective_from": "2020-01-01T00:00:00Z",
        "lot_lifetime_days": 365,
        "qualification": {"basis": "qualifying_points", "window_days": 365},
        "tiers": tiers or [{"name": "basic", "threshold": 0, "multiplier": "1.00"}],
        "rules": rules,
        "referral": {"enabled": False, "window_days": 1, "referrer_bonus": 0, "referee_bonus": 0},
        "spend": {
            "currency": "USD",
            "discount_threshold": "100.00",
            "discount_base_percent": 0,
            "discount_step": "100.00",
            "discount_step_percent": 0,
            "discount_max_percent": 0,
            "reward_every_payments": 5,
            "reward_id": "free-service",
        },
    }
    versions = [base, *({**base, **v} for v in more.get("later", []))]
    file = {"program_id": "table", "timezone": more.get("timezone", "UTC"), "versions": versions}
    return parse_program(json.dumps(file), "table.json")


def visits_rule(**extra: Any) -> dict[str, Any]:
    return {"id": "visit", "on": "visit.completed", "award": {"points": 100}, **extra}


def earned(events: list[Any]) -> list[tuple[str, int]]:
    return [
        (award.rule_id, award.credit.points)
        for event in events
        if isinstance(event, PatientAccount.PointsEarned)
        for award in event.awards
    ]


def reason(events: list[Any]) -> str | None:
    noted = [e for e in events if isinstance(e, PatientAccount.InteractionNoted)]
    return noted[0].outcome if noted else None


def day(d: int, hour: int = 9) -> datetime:
    return datetime(2026, 3, 1, hour, tzinfo=UTC) + timedelta(days=d)


# ------------------------------------------------------------------------------ limits
@pytest.mark.parametrize(
    ("per", "first", "second", "capped"),
    [
        ("day", day(0, 9), day(0, 23), True),
        ("day", day(0, 23), day(1, 0), False),
        ("iso_week", day(1), day(7), True),  # Mon 2 Mar .. Sun 8 Mar 2026
        ("iso_week", day(7), day(8), False),  # Sunday, then Monday
        ("month", day(0), day(30), True),
        ("month", day(30), day(31), False),  # 31 Mar, then 1 Apr
        ("quarter", day(0), day(30), True),
        ("quarter", day(30), day(31), False),
        ("year", day(0), day(300), True),
        ("year", day(0), day(306), False),  # 1 Jan 2027
        ("lifetime", day(0), day(2000), True),
    ],
)
def test_one_award_per_period(per: str, first: datetime, second: datetime, capped: bool) -> None:
    ledger = Ledger(program=program([visits_rule(limits=[{"per": per, "awards": 1}])]))
    ledger.given(visit(first))

    events = ledger.when(visit(second))

    assert (reason(events), earned(events)) == (
        ("capped", []) if capped else (None, [("visit", 100)])
    )


def test_calendar_periods_are_the_programs_local_ones() -> None:
    ny = program([visits_rule(limits=[{"per": "day", "awards": 1}])], timezone="America/New_York")
    ledger = Ledger(program=ny).given(visit(datetime(2026, 3, 2, 3, tzinfo=UTC)))  # 1 Mar there

    assert earned(ledger.when(visit(datetime(2026, 3, 2, 6, tzinfo=UTC)))) == [("visit", 100)]


def test_a_rolling_limit_counts_any_window_of_that_many_days_either_side() -> None:
    ledger = Ledger(
        program=program([visits_rule(limits=[{"per": "rolling_days", "days": 10, "awards": 2}])])
    )
    ledger.given(visit(day(0)), visit(day(9)))

    assert reason(ledger.when(visit(day(5)))) == "capped"  # late: (day -1, day 9] holds both
    assert earned(ledger.when(visit(day(-5)))) == [("visit", 100)]  # no window holds three
    assert reason(ledger.when(visit(day(-3)))) == "capped"  # (day -10, day 0] would
    assert earned(ledger.when(visit(day(19)))) == [("visit", 100)]


def test_a_points_limit_trims_the_award_to_what_is_left() -> None:
    ledger = Ledger(program=program([visits_rule(limits=[{"per": "month", "points": 250}])]))
    ledger.given(visit(day(1)), visit(day(2)))

    assert earned(ledger.when(visit(day(3)))) == [("visit", 50)]
    assert reason(ledger.when(visit(day(4)))) == "capped"


def test_a_void_frees_what_its_award_used() -> None:
    ledger = Ledger(program=program([visits_rule(limits=[{"per": "month", "awards": 1}])]))
    first = visit(day(1))
    ledger.given(first, void(first, day(2)))

    assert earned(ledger.when(visit(day(3)))) == [("visit", 100)]


def test_rules_naming_one_counter_share_it_even_on_one_interaction() -> None:
    shared = {"per": "day", "awards": 1, "counter": "daily"}
    ledger = Ledger(
        program=program(
            [
                visits_rule(limits=[shared]),
                {
                    "id": "visit.extra",
                    "on": "visit.completed",
                    "award": {"points": 5},
                    "limits": [shared],
                },
            ]
        )
    )

    assert earned(ledger.when(visit(day(0)))) == [("visit", 100)]
    assert reason(ledger.when(visit(day(0), 10))) == "capped"


def test_a_limit_names_its_own_reason() -> None:
    ledger = Ledger(
        program=program([visits_rule(limits=[{"per": "day", "awards": 1, "reason": "once_a_day"}])])
    )
    ledger.given(visit(day(0)))

    assert reason(ledger.when(visit(day(0), 10))) == "once_a_day"


def test_an_interaction_no_rule_listens_to_is_noted_no_rule() -> None:
    assert reason(Ledger(program=program([visits_rule()])).when(checkup(day(0)))) == "no_rule"


# ---------------------------------------------------------------- campaigns and windows
OCTOBER = {"from": "2025-10-01T00:00:00Z", "until": "2025-11-01T00:00:00Z"}
SCREENING = {
    "id": "screening",
    "on": "checkup.completed",
    "match": {"checkup_type": "screening"},
    "award": {"points": 200},
}


@pytest.mark.parametrize(
    ("when", "lines"),
    [
        (datetime(2025, 9, 30, 23, 59, tzinfo=UTC), [("screening", 200)]),
        (datetime(2025, 10, 1, tzinfo=UTC), [("screening", 200), ("double", 200)]),
        (datetime(2025, 10, 31, 23, 59, tzinfo=UTC), [("screening", 200), ("double", 200)]),
        (datetime(2025, 11, 1, tzinfo=UTC), [("screening", 200)]),
    ],
)
def test_a_campaign_doubles_within_its_window(when: datetime, lines: list[tuple[str, int]]) -> None:
    double = {
        "id": "double",
        "on": "checkup.completed",
        "window": OCTOBER,
        "award": {"boost": {"multiply": "2.00"}},
    }
    ledger = Ledger(program=program([SCREENING, double]))

    assert earned(ledger.when(checkup(when, "screening"))) == lines


def test_a_boost_adds_only_to_what_it_applies_to_and_never_alone() -> None:
    bonus = {
        "id": "bonus",
        "on": "checkup.completed",
        "award": {"boost": {"add": 25, "applies_to": ["screening"]}},
    }
    ledger = Ledger(program=program([SCREENING, bonus]))

    assert earned(ledger.when(checkup(day(0), "screening"))) == [("screening", 200), ("bonus", 25)]
    assert earned(ledger.when(checkup(day(1), "vaccination"))) == []


def test_a_boost_does_not_count_toward_tiers_by_default() -> None:
    double = {"id": "double", "on": "checkup.completed", "award": {"boost": {"multiply": "2.00"}}}
    ledger = Ledger(program=program([SCREENING, double]))
    ledger.given(checkup(day(0), "screening"))

    assert ledger.account.qualifying_points(day(0), ledger.program) == 200


# ------------------------------------------------------------------------ conditions
TIERS = [
    {"name": "basic", "threshold": 0, "multiplier": "1.00"},
    {"name": "gold", "threshold": 200, "multiplier": "1.50"},
]


def test_a_condition_sees_the_tier_held_at_the_event_time() -> None:
    gold_reviews = {
        "id": "gold.review",
        "on": "review.submitted",
        "when": 'account.tier == "gold"',
        "award": {"points": 10},
    }
    ledger = Ledger(program=program([visits_rule(award={"points": 200}), gold_reviews], TIERS))
    ledger.given(visit(day(10)))  # gold from day 10
    assert ledger.tier == "gold"

    assert reason(ledger.when(review(day(5)))) == "no_rule"  # late: basic on day 5
    assert earned(ledger.when(review(day(11)))) == [("gold.review", 15)]


def test_a_condition_on_data_and_local_time() -> None:
    weekend = {
        "id": "weekend",
        "on": "review.submitted",
        "when": "data.rating >= 4 && local.weekday >= 6",
        "award": {"points": 10},
    }
    ledger = Ledger(program=program([weekend]))

    assert earned(ledger.when(review(day(6), rating=5))) == [("weekend", 10)]  # Sat 7 Mar 2026
    assert reason(ledger.when(review(day(8), rating=5))) == "no_rule"  # Monday
    assert reason(ledger.when(review(day(13), rating=3))) == "no_rule"


def test_the_tier_multiplier_and_the_qualifying_flag_are_per_rule() -> None:
    flat = visits_rule(id="flat", tier_multiplier=False, counts_toward_tier=False)
    ledger = Ledger(program=program([visits_rule(award={"points": 200}), flat], TIERS))
    ledger.given(visit(day(0)))

    assert earned(ledger.when(visit(day(1)))) == [("visit", 300), ("flat", 100)]
    assert ledger.account.qualifying_points(day(1), ledger.program) == 400


def test_steps_top_up_per_day_whatever_the_order() -> None:
    bands = {
        "id": "steps",
        "on": "activity.reading",
        "award": {
            "best_of": {"bands": [{"min": 5000, "points": 10}, {"min": 10000, "points": 30}]}
        },
    }
    ledger = Ledger(program=program([bands]))
    one_day = date(2026, 3, 1)

    assert earned(ledger.when(steps(one_day, 12000, day(3)))) == [("steps", 30)]
    assert reason(ledger.when(steps(one_day, 6000, day(1)))) == "no_top_up"


# ---------------------------------------------------------------------------- versions
def test_each_interaction_is_decided_by_the_version_in_force_at_its_time() -> None:
    later = {
        "version": "2",
        "effective_from": "2026-03-05T00:00:00Z",
        "rules": [visits_rule(award={"points": 120})],
    }
    ledger = Ledger(program=program([visits_rule()], later=[later]))
    ledger.given(visit(day(10)))

    late = ledger.when(visit(day(1)))

    assert earned(late) == [("visit", 100)]
    assert [a.credit.entry.program_version for e in late for a in getattr(e, "awards", [])] == ["1"]
    assert earned(ledger.when(visit(day(3, 23)))) == [("visit", 100)]  # 4 Mar, 23:00
    assert earned(ledger.when(visit(day(4, 0)))) == [("visit", 120)]  # 5 Mar, 00:00


# ------------------------------------------------------------------ downgrade policies
def tiered(policy: dict[str, Any]) -> Ledger:
    tiers = [TIERS[0], {**TIERS[1], **policy}]
    ledger = Ledger(program=program([visits_rule(award={"points": 200})], tiers))
    return ledger.given(visit(day(0)))


def test_at_review_downgrades_at_the_first_maintenance_below() -> None:
    ledger = tiered({"downgrade": "at_review"})
    ledger.maintain(day(400))
    assert ledger.tier == "basic"


def test_never_keeps_the_tier() -> None:
    ledger = tiered({"downgrade": "never"})
    ledger.maintain(day(800))
    assert ledger.tier == "gold"


def test_grace_marks_then_downgrades_after_the_grace_and_clears_when_back() -> None:
    ledger = tiered({"downgrade": "grace", "grace_days": 60})
    started = ledger.maintain(day(400))
    assert [type(e).__name__ for e in started] == [
        "PointsExpired",
        "QualifyingPointsChanged",
        "TierGraceStarted",
    ]
    assert ledger.maintain(day(400)) == []  # idempotent
    assert ledger.maintain(day(459)) == [] and ledger.tier == "gold"

    ledger.given(visit(day(459, 10)))  # back at the threshold within the grace
    cleared = ledger.maintain(day(459, 11))
    assert [type(e).__name__ for e in cleared] == ["TierGraceCleared"]
    ledger.maintain(day(900))  # below again: a fresh grace starts, no downgrade yet
    assert ledger.tier == "gold"
    ledger.maintain(day(960))
    assert ledger.tier == "basic"


# ------------------------------------------------------------------------- adjustments
def test_an_adjustment_credit_is_a_lot_and_a_debit_may_go_negative() -> None:
    ledger = Ledger(program=program([visits_rule()]))
    ledger.given(visit(day(0)))

    credit = ledger.when(adjust(40, day(1), reason="goodwill", operator="staff-1"))
    debit = ledger.when(adjust(-300, day(2), reason="fraud_reversal", operator="staff-2"))

    (entry,) = credit[0].credit and [credit[0].credit.entry]
    assert (entry.kind, entry.points, entry.reason, entry.operator) == (
        "adjusted",
        40,
        "goodwill",
        "staff-1",
    )
    assert ledger.account.lots[credit[0].credit.lot_id].expires_at == day(1) + timedelta(days=365)
    assert (debit[0].entry.points, debit[0].debt_added) == (-300, 160)
    assert ledger.available == -160
    assert ledger.account.qualifying_points(day(2), ledger.program) == 100  # never qualifying


# ------------------------------------------------------------- consent and expiry notices
def notices(events: list[Any]) -> list[tuple[datetime, int]]:
    return [
        (e.expires_at, e.points) for e in events if isinstance(e, PatientAccount.ExpiryNoticeDue)
    ]


def test_an_expiring_lot_is_noticed_once_within_the_notice_period_with_consent() -> None:
    ledger = Ledger(program=program([visits_rule()]))
    ledger.given(visit(day(0)), consent(True, day(1)))
    expires = day(365)

    assert notices(ledger.maintain(day(334))) == []  # 31 days before
    assert notices(ledger.maintain(day(335))) == [(expires, 100)]  # 30 days before
    assert notices(ledger.maintain(day(336))) == []  # once per lot


def test_no_notice_without_consent_at_the_time_of_the_close_of_day() -> None:
    ledger = Ledger(program=program([visits_rule()]))
    ledger.given(visit(day(0)), consent(True, day(1)), consent(False, day(300)))
    assert notices(ledger.maintain(day(340))) == []

    ledger.given(consent(True, day(200)))  # late: consent on from day 200, but off from 300
    assert notices(ledger.maintain(day(341))) == []
    assert ledger.account.consents_at(day(250)) is True
