"""Program files: the shipped program carries the numbers of docs/rules.md; an invalid file
fails on load with a ProgramFileError naming every problem and its place."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from careledger.application.programs import (
    ProgramFileError,
    builtin_programs,
    load_programs,
    parse_program,
)
from domain.program import Downgrade
from domain.rules.awards import BestOfGroup, FixedPoints
from domain.rules.limits import Period


def shipped() -> dict[str, Any]:
    text = (resources.files("domain") / "programs" / "clinic-default.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text.replace(" on: ", ' "on": '))
    return data


def with_change(change: Callable[[dict[str, Any]], Any]) -> str:
    """The shipped program file's content (as YAML) with one change applied."""
    data = copy.deepcopy(shipped())
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def v0(data: dict[str, Any]) -> dict[str, Any]:
    version: dict[str, Any] = data["versions"][0]
    return version


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in v0(data)["rules"] if r["id"] == rule_id)
    return found


# ------------------------------------------------------------------- shipped program
def test_the_shipped_program_has_the_numbers_of_the_rules() -> None:
    program = builtin_programs()["clinic-default"]
    (version,) = program.versions

    assert (program.program_id, version.version) == ("clinic-default", "2026.1")
    assert program.timezone == ZoneInfo("UTC")
    fixed = {r.rule_id: r.award.points for r in version.rules if isinstance(r.award, FixedPoints)}
    assert fixed == {
        "visit.in_person": 100,
        "visit.specialist": 100,
        "visit.telehealth": 50,
        "visit.urgent_care": 50,
        "checkup.annual_wellness": 500,
        "checkup.screening": 200,
        "checkup.vaccination": 100,
        "checkup.dental_cleaning": 150,
        "assessment": 250,
        "review": 50,
    }
    limits = {
        r.rule_id: [(lim.per, lim.awards, lim.days, lim.reason) for lim in r.limits]
        for r in version.rules
        if r.limits
    }
    assert limits == {
        "checkup.annual_wellness": [(Period.YEAR, 1, 0, "already_awarded_this_year")],
        "assessment": [(Period.QUARTER, 1, 0, "already_awarded_this_quarter")],
        "review": [(Period.ROLLING_DAYS, 1, 30, "review_cooldown")],
    }
    steps = next(r.award for r in version.rules if r.rule_id == "activity.steps")
    assert isinstance(steps, BestOfGroup)
    assert [(b.minimum, b.points) for b in steps.bands] == [(10000, 20), (5000, 10)]
    assert [(t.name, t.threshold, t.multiplier, t.downgrade) for t in version.tiers] == [
        ("bronze", 0, Decimal("1.00"), Downgrade.AT_REVIEW),
        ("silver", 1000, Decimal("1.10"), Downgrade.AT_REVIEW),
        ("gold", 3000, Decimal("1.25"), Downgrade.AT_REVIEW),
        ("platinum", 6000, Decimal("1.50"), Downgrade.AT_REVIEW),
    ]
    assert version.qualifying_window == timedelta(days=365)
    assert version.lot_lifetime == timedelta(days=365)
    assert version.referral.enabled is True
    assert version.referral.window == timedelta(days=90)
    assert (version.referral.referrer_bonus, version.referral.referee_bonus) == (1000, 500)
    assert all(r.tier_multiplier and r.qualifying for r in version.rules)


def test_the_shipped_spend_rule_has_the_numbers_of_the_rules() -> None:
    spend = builtin_programs()["clinic-default"].latest.spend

    assert spend.currency == "USD"
    assert (spend.discount_threshold, spend.discount_base_percent) == (Decimal("100.00"), 2)
    assert (spend.discount_step, spend.discount_step_percent) == (Decimal("100.00"), 1)
    assert spend.discount_max_percent == 10
    assert (spend.reward_every_payments, spend.reward_id) == (5, "free-service")


@pytest.mark.parametrize(
    ("points", "tier"),
    [
        (-50, "bronze"),
        (0, "bronze"),
        (999, "bronze"),
        (1000, "silver"),
        (2999, "silver"),
        (3000, "gold"),
        (5999, "gold"),
        (6000, "platinum"),
        (10**6, "platinum"),
    ],
)
def test_the_shipped_tier_thresholds(points: int, tier: str) -> None:
    assert builtin_programs()["clinic-default"].latest.tier_for(points).name == tier


def test_the_shipped_file_read_as_json_is_the_same_program() -> None:
    import json

    text = json.dumps(shipped(), default=str)
    copy_ = parse_program(text, "copy.json")
    builtin = builtin_programs()["clinic-default"]
    assert [v.version for v in copy_.versions] == [v.version for v in builtin.versions]
    assert copy_.latest.tiers == builtin.latest.tiers
    assert [r.rule_id for r in copy_.latest.rules] == [r.rule_id for r in builtin.latest.rules]


def test_yaml_on_is_a_key_not_a_boolean() -> None:
    """YAML 1.1 reads a bare ``on`` as true; program files are read with 1.2 booleans."""
    program = builtin_programs()["clinic-default"]
    assert {r.on for r in program.latest.rules} >= {"visit.completed", "activity.reading"}


# ------------------------------------------------------------------------ invalid files
INVALID: list[tuple[str, Callable[[dict[str, Any]], Any], list[str]]] = [
    (
        "missing-field",
        lambda d: v0(d)["spend"].pop("currency"),
        ["versions[0].spend.currency", "required"],
    ),
    ("missing-top-field", lambda d: d.pop("timezone"), ["timezone", "required"]),
    ("unknown-field", lambda d: d.update(bonus_points=5), ["bonus_points", "Extra"]),
    (
        "unknown-nested-field",
        lambda d: v0(d)["referral"].update(cap=3),
        ["versions[0].referral.cap", "Extra"],
    ),
    ("tiers-descending", lambda d: v0(d)["tiers"].reverse(), ["versions[0].tiers"]),
    (
        "tiers-not-ascending",
        lambda d: v0(d)["tiers"].__setitem__(slice(1, 3), [v0(d)["tiers"][2], v0(d)["tiers"][1]]),
        ["versions[0].tiers[2].threshold: must be above tiers[1].threshold (3000)"],
    ),
    (
        "tiers-equal-thresholds",
        lambda d: v0(d)["tiers"][2].update(threshold=1000),
        ["versions[0].tiers[2].threshold: must be above tiers[1].threshold (1000)"],
    ),
    (
        "tiers-not-from-0",
        lambda d: v0(d)["tiers"][0].update(threshold=10),
        ["versions[0].tiers[0].threshold", "threshold 0"],
    ),
    ("no-tiers", lambda d: v0(d).update(tiers=[]), ["versions[0].tiers"]),
    (
        "duplicate-tier-name",
        lambda d: v0(d)["tiers"][1].update(name="bronze"),
        ["versions[0].tiers[1].name", "unique"],
    ),
    (
        "negative-points",
        lambda d: rule(d, "visit.in_person")["award"].update(points=-1),
        ["versions[0].rules[0].award"],
    ),
    (
        "fractional-points",
        lambda d: rule(d, "visit.in_person")["award"].update(points=100.5),
        ["versions[0].rules[0].award"],
    ),
    (
        "points-as-text",
        lambda d: rule(d, "visit.in_person")["award"].update(points="100"),
        ["versions[0].rules[0].award"],
    ),
    (
        "negative-bonus",
        lambda d: v0(d)["referral"].update(referee_bonus=-500),
        ["versions[0].referral.referee_bonus"],
    ),
    ("bad-timezone", lambda d: d.update(timezone="Mars/Olympus_Mons"), ["timezone"]),
    ("path-as-timezone", lambda d: d.update(timezone="../../etc/passwd"), ["timezone"]),
    (
        "unknown-interaction",
        lambda d: rule(d, "review").update(on="house.call"),
        ["versions[0].rules[9].on"],
    ),
    (
        "unknown-match-field",
        lambda d: rule(d, "visit.in_person").update(match={"room": "3"}),
        ["versions[0].rules[0].match.room: not a field of visit.completed"],
    ),
    (
        "unknown-match-value",
        lambda d: rule(d, "visit.in_person").update(match={"visit_type": "house_call"}),
        ["versions[0].rules[0].match.visit_type: must be one of"],
    ),
    (
        "duplicate-rule-id",
        lambda d: rule(d, "review").update(id="assessment"),
        ["versions[0].rules[9].id", "unique"],
    ),
    (
        "bad-condition",
        lambda d: rule(d, "review").update(when="data.rating >="),
        ["versions[0].rules[9].when: not a valid CEL expression"],
    ),
    (
        "condition-unknown-variable",
        lambda d: rule(d, "review").update(when="patient.name == 'x'"),
        ["versions[0].rules[9].when: unknown variable patient"],
    ),
    (
        "limit-without-size",
        lambda d: rule(d, "review")["limits"][0].pop("awards"),
        ["versions[0].rules[9].limits[0]: give awards or points"],
    ),
    (
        "rolling-without-days",
        lambda d: rule(d, "review")["limits"][0].pop("days"),
        ["versions[0].rules[9].limits[0].days"],
    ),
    (
        "multiplier-below-1",
        lambda d: v0(d)["tiers"][1].update(multiplier="0.90"),
        ["versions[0].tiers[1].multiplier"],
    ),
    (
        "multiplier-three-places",
        lambda d: v0(d)["tiers"][1].update(multiplier="1.105"),
        ["versions[0].tiers[1].multiplier"],
    ),
    (
        "grace-without-days",
        lambda d: v0(d)["tiers"][1].update(downgrade="grace"),
        ["versions[0].tiers[1].grace_days"],
    ),
    (
        "zero-day-window",
        lambda d: v0(d)["referral"].update(window_days=0),
        ["versions[0].referral.window_days"],
    ),
    (
        "lower-case-currency",
        lambda d: v0(d)["spend"].update(currency="usd"),
        ["versions[0].spend.currency"],
    ),
    (
        "versions-out-of-order",
        lambda d: d["versions"].append(
            {**v0(d), "version": "old", "effective_from": "1999-01-01T00:00:00Z"}
        ),
        ["versions[1].effective_from: must be after versions[0].effective_from"],
    ),
    (
        "version-renames-tiers",
        lambda d: d["versions"].append(
            {
                **copy.deepcopy(v0(d)),
                "version": "2027.1",
                "effective_from": "2027-01-01T00:00:00Z",
                "tiers": [{**t, "name": f"t{i}"} for i, t in enumerate(v0(d)["tiers"])],
            }
        ),
        ["versions[1].tiers: must name the same tiers as versions[0]"],
    ),
    (
        "naive-effective-from",
        lambda d: v0(d).update(effective_from="2026-01-01T00:00:00"),
        ["versions[0].effective_from"],
    ),
]


@pytest.mark.parametrize(
    ("change", "named"), [(c, n) for _, c, n in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_an_invalid_program_file_is_refused_naming_the_place(
    change: Callable[[dict[str, Any]], Any], named: list[str]
) -> None:
    with pytest.raises(ProgramFileError) as refused:
        parse_program(with_change(change), "bad-program.yaml")

    assert str(refused.value).startswith("bad-program.yaml: ")
    problems = "\n".join(refused.value.problems)
    for part in named:
        assert part in problems


def test_every_problem_is_reported_not_only_the_first() -> None:
    def two_problems(d: dict[str, Any]) -> None:
        v0(d)["tiers"][2].update(threshold=1000)
        rule(d, "review").update(when="data.rating >=")

    with pytest.raises(ProgramFileError) as refused:
        parse_program(with_change(two_problems), "bad.yaml")

    assert len(refused.value.problems) == 2


def test_a_file_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(ProgramFileError, match=r"^broken\.yaml: \(file\): not YAML or JSON"):
        parse_program('{"program_id": ', "broken.yaml")


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ProgramFileError, match=r"^list\.yaml: "):
        parse_program("[]", "list.yaml")


def test_a_program_error_is_a_value_error() -> None:
    assert issubclass(ProgramFileError, ValueError)


# ----------------------------------------------------------------------- loading folders
def test_extra_folders_add_programs_and_may_override_builtins(tmp_path: Path) -> None:
    def other(d: dict[str, Any]) -> None:
        d.update(program_id="dental-plus")
        v0(d).update(version="7")

    (tmp_path / "other.yaml").write_text(with_change(other), "utf-8")
    (tmp_path / "override.yml").write_text(
        with_change(lambda d: rule(d, "visit.telehealth")["award"].update(points=75)), "utf-8"
    )
    (tmp_path / "notes.txt").write_text("not a program", "utf-8")

    programs = load_programs([tmp_path])

    assert sorted(programs) == sorted([*builtin_programs(), "dental-plus"])
    assert programs["dental-plus"].latest.version == "7"
    telehealth = next(
        r for r in programs["clinic-default"].latest.rules if r.rule_id == "visit.telehealth"
    )
    assert telehealth.award == FixedPoints(75)


def test_an_invalid_file_in_an_extra_folder_is_named_by_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(with_change(lambda d: v0(d).pop("tiers")), "utf-8")

    with pytest.raises(ProgramFileError) as refused:
        load_programs([tmp_path])

    assert str(refused.value).startswith(f"{bad}: versions[0].tiers")
