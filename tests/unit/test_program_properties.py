"""Properties over random programs: any program the schema accepts keeps the ledger's core.

Programs are drawn as files (tiers, rules with matches, conditions, awards, boosts, limits,
windows, and sometimes a second version), validated and compiled by the loader, then driven
with the random interaction histories of test_account_properties (every kind, out of order,
redeliveries, voids, adjustments, maintenance). After every step: available is the sum of
the entries and of the lots less debt, no lot goes negative, no calendar or lifetime limit
holds more than it allows; replay rebuilds the same account; redeliveries change nothing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.application.programs import parse_program
from domain.program import Program
from tests.unit.test_account_properties import histories, run

TIER_NAMES = ["starter", "member", "plus", "gold", "vip", "elite"]
KINDS = {
    "visit.completed": ("visit_type", ["in_person", "telehealth", "urgent_care", "specialist"]),
    "checkup.completed": (
        "checkup_type",
        ["annual_wellness", "screening", "vaccination", "dental_cleaning"],
    ),
    "assessment.completed": (None, []),
    "review.submitted": (None, []),
    "activity.reading": (None, []),
}
CONDITIONS = [
    None,
    "account.tier_rank >= 1",
    'account.tier == "starter" || local.weekday <= 5',
    'time >= timestamp("2026-06-01T00:00:00Z")',
    "local.month != 12",
]
# Fewer examples than the single-program properties: each draws a program as well.
PROGRAM_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PERIODS = ["day", "iso_week", "month", "quarter", "year", "rolling_days", "lifetime"]

tiers = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 3000), min_size=n - 1, max_size=n - 1, unique=True),
        st.lists(st.sampled_from(["1.00", "1.10", "1.25", "1.50", "2.00"]), min_size=n, max_size=n),
        st.lists(st.sampled_from(["at_review", "grace", "never"]), min_size=n, max_size=n),
    ).map(
        lambda t: [
            {
                "name": TIER_NAMES[i],
                "threshold": threshold,
                "multiplier": t[1][i],
                "downgrade": t[2][i],
                **({"grace_days": 30} if t[2][i] == "grace" else {}),
            }
            for i, threshold in enumerate([0, *sorted(t[0])])
        ]
    )
)
limits = st.lists(
    st.builds(
        lambda per, awards, points, shared: {
            "per": per,
            **({"days": 14} if per == "rolling_days" else {}),
            **({"awards": awards or 1} if awards or not points else {}),
            **({"points": points} if points else {}),
            **(
                {"counter": f"shared-{per}-{awards or int(not points)}-{points or 0}"}
                if shared
                else {}
            ),
        },
        st.sampled_from(PERIODS),
        st.one_of(st.none(), st.integers(1, 3)),
        st.one_of(st.none(), st.integers(50, 600)),
        st.booleans(),
    ),
    max_size=2,
)


@st.composite
def rules(draw: st.DrawFn, n_rules: int, prefix: str = "") -> list[dict[str, Any]]:
    """Rules of one version; ``prefix`` keeps a second version's counters apart (limits are
    checked per counter, and a version without a limit may fill its rule's counter freely)."""
    made: list[dict[str, Any]] = []
    for i in range(n_rules):
        kind = draw(st.sampled_from(sorted(KINDS)))
        field, values = KINDS[kind]
        rule: dict[str, Any] = {"id": f"{prefix}rule-{i}", "on": kind}
        if field and draw(st.booleans()):
            rule["match"] = {
                field: draw(st.lists(st.sampled_from(values), min_size=1, unique=True))
            }
        if (condition := draw(st.sampled_from(CONDITIONS))) is not None:
            rule["when"] = condition
        award = draw(st.sampled_from(["points", "best_of", "boost"]))
        if award == "best_of" and kind == "activity.reading":
            rule["award"] = {
                "best_of": {"bands": [{"min": 5000, "points": 10}, {"min": 10000, "points": 25}]}
            }
        elif award == "boost" and made:
            rule["award"] = {"boost": {"multiply": "2.00"} if draw(st.booleans()) else {"add": 40}}
        else:
            rule["award"] = {"points": draw(st.integers(1, 400))}
        rule["limits"] = [
            {**lim, "counter": f"{prefix}{lim['counter']}"} if "counter" in lim else lim
            for lim in draw(limits)
        ]
        if draw(st.integers(0, 4)) == 0:
            rule["window"] = {"from": "2026-02-01T00:00:00Z", "until": "2026-09-01T00:00:00Z"}
        rule["tier_multiplier"] = draw(st.booleans())
        made.append(rule)
    return made


def version(
    name: str, start: str, tier_list: list[dict[str, Any]], rule_list: list[Any]
) -> dict[str, Any]:
    return {
        "version": name,
        "effective_from": start,
        "lot_lifetime_days": 180,
        "qualification": {"basis": "qualifying_points", "window_days": 365},
        "tiers": tier_list,
        "rules": rule_list,
        "referral": {
            "enabled": True,
            "window_days": 90,
            "referrer_bonus": 100,
            "referee_bonus": 50,
        },
        "spend": {
            "currency": "USD",
            "discount_threshold": "100.00",
            "discount_base_percent": 2,
            "discount_step": "100.00",
            "discount_step_percent": 1,
            "discount_max_percent": 10,
            "reward_every_payments": 5,
            "reward_id": "free-service",
        },
    }


@st.composite
def programs(draw: st.DrawFn) -> Program:
    """A random program file, validated and compiled by the loader like a shipped one."""
    tier_list = draw(tiers)
    versions = [
        version("v1", "2020-01-01T00:00:00Z", tier_list, draw(rules(draw(st.integers(1, 8)))))
    ]
    if draw(st.booleans()):
        later = [{**t, "multiplier": "1.00"} for t in tier_list]  # same names, other numbers
        versions.append(
            version(
                "v2", "2026-07-01T00:00:00Z", later, draw(rules(draw(st.integers(1, 8)), "v2-"))
            )
        )
    text = json.dumps(
        {
            "program_id": "random",
            "timezone": draw(st.sampled_from(["UTC", "America/New_York"])),
            "versions": versions,
        }
    )
    return parse_program(text, "random.json")


@PROGRAM_SETTINGS
@given(program=programs(), ops=histories)
def test_any_program_keeps_the_invariants_after_every_step(
    program: Program, ops: list[tuple[Any, ...]]
) -> None:
    run(ops, program)


@PROGRAM_SETTINGS
@given(program=programs(), ops=histories)
def test_any_program_replays_to_the_same_account(
    program: Program, ops: list[tuple[Any, ...]]
) -> None:
    driven = run(ops, program)

    assert driven.state(driven.replayed()) == driven.state()


@PROGRAM_SETTINGS
@given(program=programs(), ops=histories, data=st.data())
def test_any_program_ignores_redeliveries(
    program: Program, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    driven = run(ops, program)
    before_events, before_state = len(driven.account.pending_events), driven.state()

    again = data.draw(st.permutations(driven.accepted))
    outcomes = [driven.account.handle(interaction, program) for interaction in again]

    assert set(outcomes) <= {"duplicate"}
    assert len(driven.account.pending_events) == before_events
    assert driven.state() == before_state
