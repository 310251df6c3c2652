"""Program files: the shipped program carries the numbers of docs/rules.md; an invalid file
fails on load with a ProgramFileError naming the file and the offending field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from careledger.programs import (
    ProgramFileError,
    builtin_programs,
    load_programs,
    parse_program,
)


def shipped() -> dict[str, Any]:
    text = (resources.files("domain") / "programs" / "clinic-default.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def with_change(change: Callable[[dict[str, Any]], Any]) -> str:
    """The shipped program file's text with one change applied."""
    data = copy.deepcopy(shipped())
    change(data)
    return json.dumps(data)


# ------------------------------------------------------------------- shipped program
def test_the_shipped_program_has_the_numbers_of_the_rules() -> None:
    program = builtin_programs()["clinic-default"]

    assert (program.program_id, program.version) == ("clinic-default", "2026.1")
    assert program.visit_points == {
        "in_person": 100,
        "specialist": 100,
        "telehealth": 50,
        "urgent_care": 50,
    }
    assert program.checkup_points == {
        "annual_wellness": 500,
        "screening": 200,
        "vaccination": 100,
        "dental_cleaning": 150,
    }
    assert program.checkups_once_per_year == frozenset({"annual_wellness"})
    assert program.assessment_points == 250
    assert program.review_points == 50
    assert program.review_cooldown == timedelta(days=30)
    assert program.steps.bands == ((10000, 20), (5000, 10))
    assert [(t.name, t.threshold, t.multiplier) for t in program.tiers] == [
        ("bronze", 0, Decimal("1.00")),
        ("silver", 1000, Decimal("1.10")),
        ("gold", 3000, Decimal("1.25")),
        ("platinum", 6000, Decimal("1.50")),
    ]
    assert program.qualifying_window == timedelta(days=365)
    assert program.lot_lifetime == timedelta(days=365)
    assert program.referral.enabled is True
    assert program.referral.window == timedelta(days=90)
    assert (program.referral.referrer_bonus, program.referral.referee_bonus) == (1000, 500)
    assert program.timezone == ZoneInfo("UTC")


def test_the_shipped_spend_rule_has_the_numbers_of_the_rules() -> None:
    spend = builtin_programs()["clinic-default"].spend

    assert spend.currency == "USD"
    assert (spend.discount_threshold, spend.discount_base_percent) == (Decimal("100.00"), 2)
    assert (spend.discount_step, spend.discount_step_percent) == (Decimal("100.00"), 1)
    assert spend.discount_max_percent == 10
    assert (spend.reward_every_payments, spend.reward_id) == (5, "free-service")


@pytest.mark.parametrize(
    ("steps", "points"), [(0, 0), (4999, 0), (5000, 10), (9999, 10), (10000, 20), (50000, 20)]
)
def test_the_shipped_steps_bands(steps: int, points: int) -> None:
    assert builtin_programs()["clinic-default"].steps.base_points(steps) == points


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
    assert builtin_programs()["clinic-default"].tier_for(points).name == tier


def test_the_shipped_file_parses_to_the_builtin_program() -> None:
    assert parse_program(json.dumps(shipped()), "copy.json") == builtin_programs()["clinic-default"]


# ------------------------------------------------------------------------ invalid files
INVALID: list[tuple[str, Callable[[dict[str, Any]], Any], list[str]]] = [
    ("missing-field", lambda d: d["spend"].pop("currency"), ["spend.currency", "required"]),
    ("missing-top-field", lambda d: d.pop("timezone"), ["timezone", "required"]),
    ("unknown-field", lambda d: d.update(bonus_points=5), ["bonus_points", "Extra"]),
    (
        "unknown-nested-field",
        lambda d: d["referral"].update(cap=3),
        ["referral.cap", "Extra"],
    ),
    ("tiers-descending", lambda d: d["tiers"].reverse(), ["tiers"]),
    (
        "tiers-not-ascending",
        lambda d: d["tiers"].__setitem__(slice(1, 3), [d["tiers"][2], d["tiers"][1]]),
        ["tiers", "ascend"],
    ),
    ("tiers-equal-thresholds", lambda d: d["tiers"][2].update(threshold=1000), ["tiers", "ascend"]),
    ("tiers-not-from-0", lambda d: d["tiers"][0].update(threshold=10), ["tiers", "threshold 0"]),
    ("no-tiers", lambda d: d.update(tiers=[]), ["tiers"]),
    ("duplicate-tier-name", lambda d: d["tiers"][1].update(name="bronze"), ["tiers", "unique"]),
    (
        "negative-visit-points",
        lambda d: d["earning"]["visit"].update(in_person=-1),
        ["earning.visit.in_person"],
    ),
    (
        "negative-steps-points",
        lambda d: d["earning"]["steps_bands"][0].update(points=-5),
        ["earning.steps_bands.0.points"],
    ),
    (
        "negative-bonus",
        lambda d: d["referral"].update(referee_bonus=-500),
        ["referral.referee_bonus"],
    ),
    ("negative-threshold", lambda d: d["tiers"][2].update(threshold=-1), ["tiers.2.threshold"]),
    (
        "fractional-points",
        lambda d: d["earning"]["visit"].update(in_person=100.5),
        ["earning.visit.in_person"],
    ),
    (
        "points-as-text",
        lambda d: d["earning"]["visit"].update(in_person="100"),
        ["earning.visit.in_person"],
    ),
    ("bad-timezone", lambda d: d.update(timezone="Mars/Olympus_Mons"), ["timezone"]),
    ("path-as-timezone", lambda d: d.update(timezone="../../etc/passwd"), ["timezone"]),
    (
        "missing-visit-type",
        lambda d: d["earning"]["visit"].pop("telehealth"),
        ["earning", "visit", "telehealth"],
    ),
    (
        "unknown-visit-type",
        lambda d: d["earning"]["visit"].update(house_call=100),
        ["earning", "visit"],
    ),
    (
        "missing-checkup-type",
        lambda d: d["earning"]["checkup"].pop("screening"),
        ["earning", "checkup"],
    ),
    (
        "unknown-capped-checkup",
        lambda d: d["earning"].update(checkups_once_per_calendar_year=["yoga"]),
        ["earning", "checkups_once_per_calendar_year"],
    ),
    (
        "multiplier-below-1",
        lambda d: d["tiers"][1].update(multiplier="0.90"),
        ["tiers.1.multiplier"],
    ),
    (
        "multiplier-three-places",
        lambda d: d["tiers"][1].update(multiplier="1.105"),
        ["tiers.1.multiplier"],
    ),
    ("zero-day-window", lambda d: d["referral"].update(window_days=0), ["referral.window_days"]),
    ("lower-case-currency", lambda d: d["spend"].update(currency="usd"), ["spend.currency"]),
]


@pytest.mark.parametrize(
    ("change", "named"), [(c, n) for _, c, n in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_an_invalid_program_file_is_refused_naming_the_field(
    change: Callable[[dict[str, Any]], Any], named: list[str]
) -> None:
    with pytest.raises(ProgramFileError) as refused:
        parse_program(with_change(change), "bad-program.json")

    message = str(refused.value)
    assert message.startswith("bad-program.json: ")
    for part in named:
        assert part in message


def test_a_file_that_is_not_json_is_refused() -> None:
    with pytest.raises(ProgramFileError, match=r"^broken\.json: not JSON"):
        parse_program('{"program_id": ', "broken.json")


def test_a_file_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ProgramFileError, match=r"^list\.json: "):
        parse_program("[]", "list.json")


def test_a_program_error_is_a_value_error() -> None:
    assert issubclass(ProgramFileError, ValueError)


# ----------------------------------------------------------------------- loading folders
def test_extra_folders_add_programs_and_may_override_builtins(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(
        with_change(lambda d: d.update(program_id="dental-plus", version="7")), "utf-8"
    )
    (tmp_path / "override.json").write_text(
        with_change(lambda d: d["earning"]["visit"].update(telehealth=75)), "utf-8"
    )
    (tmp_path / "notes.txt").write_text("not a program", "utf-8")

    programs = load_programs([tmp_path])

    assert sorted(programs) == ["clinic-default", "dental-plus"]
    assert programs["dental-plus"].version == "7"
    assert programs["clinic-default"].visit_points["telehealth"] == 75


def test_an_invalid_file_in_an_extra_folder_is_named_by_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(with_change(lambda d: d.pop("tiers")), "utf-8")

    with pytest.raises(ProgramFileError) as refused:
        load_programs([tmp_path])

    assert str(refused.value).startswith(f"{bad}: tiers")
