"""Loading program rules from data files, validated before the ledger may use them.

A program file is JSON (see ``domain/programs/clinic-default.json``). Invalid files fail at
start-up with the path of the offending field, never half-way through a stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.program import Program, ReferralRule, SpendRule, StepsRule, Tier

VISIT_TYPES = ("in_person", "telehealth", "urgent_care", "specialist")
CHECKUP_TYPES = ("annual_wellness", "screening", "vaccination", "dental_cleaning")
DEFAULT_PROGRAM_ID = "clinic-default"

Points = Annotated[int, Field(ge=0, le=10_000_000, strict=True)]
Days = Annotated[int, Field(ge=1, le=3660, strict=True)]


class ProgramFileError(ValueError):
    """Raised when a program file is not valid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StepsBand(_Strict):
    min_steps: Annotated[int, Field(ge=1, le=200_000, strict=True)]
    points: Points


class _Earning(_Strict):
    visit: dict[str, Points]
    checkup: dict[str, Points]
    checkups_once_per_calendar_year: list[str]
    assessment_per_calendar_quarter: Points
    review: Points
    review_cooldown_days: Days
    steps_bands: list[_StepsBand]

    @model_validator(mode="after")
    def _covers_every_type(self) -> _Earning:
        if sorted(self.visit) != sorted(VISIT_TYPES):
            raise ValueError(f"visit must give points for exactly {', '.join(VISIT_TYPES)}")
        if sorted(self.checkup) != sorted(CHECKUP_TYPES):
            raise ValueError(f"checkup must give points for exactly {', '.join(CHECKUP_TYPES)}")
        if not set(self.checkups_once_per_calendar_year) <= set(CHECKUP_TYPES):
            raise ValueError("checkups_once_per_calendar_year names an unknown checkup type")
        return self


class _Tier(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    threshold: Points
    multiplier: Annotated[Decimal, Field(ge=Decimal("1"), le=Decimal("10"), decimal_places=2)]


class _Referral(_Strict):
    enabled: bool
    window_days: Days
    referrer_bonus: Points
    referee_bonus: Points


class _Spend(_Strict):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    discount_threshold: Annotated[Decimal, Field(gt=0, decimal_places=2)]
    discount_base_percent: Annotated[int, Field(ge=0, le=100, strict=True)]
    discount_step: Annotated[Decimal, Field(gt=0, decimal_places=2)]
    discount_step_percent: Annotated[int, Field(ge=0, le=100, strict=True)]
    discount_max_percent: Annotated[int, Field(ge=0, le=100, strict=True)]
    reward_every_payments: Annotated[int, Field(ge=1, le=1000, strict=True)]
    reward_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class ProgramFile(_Strict):
    """The schema of a program data file."""

    program_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")]
    earning: _Earning
    tiers: list[_Tier]
    qualifying_window_days: Days
    lot_lifetime_days: Days
    referral: _Referral
    spend: _Spend
    timezone: str

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend_from_zero(cls, tiers: list[_Tier]) -> list[_Tier]:
        if not tiers or tiers[0].threshold != 0:
            raise ValueError("the first tier must have threshold 0")
        thresholds = [t.threshold for t in tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tier thresholds must strictly ascend")
        if len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tier names must be unique")
        return tiers

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone") from None
        return name

    def to_program(self) -> Program:
        """The domain's view of these rules."""
        earning = self.earning
        bands = sorted(((b.min_steps, b.points) for b in earning.steps_bands), reverse=True)
        return Program(
            program_id=self.program_id,
            version=self.version,
            visit_points=dict(earning.visit),
            checkup_points=dict(earning.checkup),
            checkups_once_per_year=frozenset(earning.checkups_once_per_calendar_year),
            assessment_points=earning.assessment_per_calendar_quarter,
            review_points=earning.review,
            review_cooldown=timedelta(days=earning.review_cooldown_days),
            steps=StepsRule(bands=tuple(bands)),
            tiers=tuple(Tier(t.name, t.threshold, t.multiplier) for t in self.tiers),
            qualifying_window=timedelta(days=self.qualifying_window_days),
            lot_lifetime=timedelta(days=self.lot_lifetime_days),
            referral=ReferralRule(
                enabled=self.referral.enabled,
                window=timedelta(days=self.referral.window_days),
                referrer_bonus=self.referral.referrer_bonus,
                referee_bonus=self.referral.referee_bonus,
            ),
            spend=SpendRule(
                currency=self.spend.currency,
                discount_threshold=self.spend.discount_threshold,
                discount_base_percent=self.spend.discount_base_percent,
                discount_step=self.spend.discount_step,
                discount_step_percent=self.spend.discount_step_percent,
                discount_max_percent=self.spend.discount_max_percent,
                reward_every_payments=self.spend.reward_every_payments,
                reward_id=self.spend.reward_id,
            ),
            timezone=ZoneInfo(self.timezone),
        )


def parse_program(text: str, origin: str) -> Program:
    """Validate one program file's text; ``origin`` names it in errors."""
    try:
        return ProgramFile.model_validate(json.loads(text)).to_program()
    except json.JSONDecodeError as exc:
        raise ProgramFileError(f"{origin}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(file)"
        raise ProgramFileError(f"{origin}: {where}: {first['msg']}") from None


def builtin_programs() -> dict[str, Program]:
    """The programs shipped with careledger (``clinic-default``)."""
    folder = resources.files("domain") / "programs"
    programs = {}
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.name.endswith(".json"):
            program = parse_program(item.read_text(encoding="utf-8"), item.name)
            programs[program.program_id] = program
    return programs


def load_programs(extra_dirs: Iterable[Path] = ()) -> dict[str, Program]:
    """The built-in programs plus every ``*.json`` in ``extra_dirs`` (which may override)."""
    programs = builtin_programs()
    for folder in extra_dirs:
        for path in sorted(folder.glob("*.json")):
            program = parse_program(path.read_text(encoding="utf-8"), str(path))
            programs[program.program_id] = program
    return programs
