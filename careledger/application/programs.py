"""Loading programs: read a program file, validate it, compile it once per version.

A program file (``domain/programs/*.yaml``; schema in ``schemas.program``) is checked in two
passes: its structure by the pydantic models, then what structure cannot say (thresholds
ascend, rule ids are unique, match fields exist, conditions compile). Every problem names its
place, e.g. ``versions[0].tiers[2].threshold: must be above tiers[1].threshold (3000)``, and
an invalid file fails at start-up, never half-way through a stream.

Conditions are CEL (the ``common-expression-language`` package: a maintained, sandboxed
implementation), compiled here and handed to the domain as plain callables.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
import yaml
from pydantic import ValidationError

from domain import interactions as di
from domain.payer import PayerRules
from domain.program import (
    ActivityGoal,
    Cashback,
    CatalogueReward,
    Downgrade,
    Partner,
    Plan,
    Prepaid,
    Program,
    ProgramVersion,
    ReferralRule,
    SpendRule,
    Tier,
)
from domain.rules import awards as aw
from domain.rules.limits import Limit, Period
from domain.rules.rule import Condition, Rule, Window
from schemas import program as pf
from schemas.v1 import MODELS_BY_TYPE

PROGRAM_SUFFIXES = (".yaml", ".yml", ".json")
# The domain interaction each earning rule's ``on`` names: its fields are what ``match`` and
# conditions see as ``data``.
INTERACTION_CLASSES: Mapping[str, type[di.Interaction]] = {
    "visit.completed": di.Visit,
    "checkup.completed": di.Checkup,
    "assessment.completed": di.Assessment,
    "review.submitted": di.Review,
    "activity.reading": di.StepsReading,
    "purchase.recorded": di.Purchase,
    "engagement.recorded": di.Engagement,
}
CONDITION_VARIABLES = frozenset({"data", "event", "time", "local", "account"})
_CAUSE = frozenset({"source", "source_id", "occurred_at"})


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false, so a rule's ``on:`` key stays the string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class ProgramFileError(ValueError):
    """Raised when a program file is not valid; ``problems`` holds one line per problem."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        super().__init__(
            f"{origin}: {problems[0]}" + (f" (+{len(problems) - 1} more)" * (len(problems) > 1))
        )
        self.origin = origin
        self.problems = problems


# ------------------------------------------------------------------------------ reading
def read_file(text: str, origin: str) -> pf.ProgramFile:
    """Validate a program file's text (YAML or JSON); raises :class:`ProgramFileError`."""
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProgramFileError(origin, [f"(file): not YAML or JSON{where}"]) from None
    try:
        file = pf.ProgramFile.model_validate(data)
    except ValidationError as exc:
        raise ProgramFileError(origin, [_structural(e) for e in exc.errors()]) from None
    problems = semantic_problems(file)
    if problems:
        raise ProgramFileError(origin, problems)
    return file


def _structural(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return f"{where.lstrip('.') or '(file)'}: {error['msg']}"


def semantic_problems(file: pf.ProgramFile) -> list[str]:
    """What the structure cannot check, every problem with its place."""
    problems: list[str] = []
    try:
        ZoneInfo(file.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append("timezone: unknown IANA time zone")
    starts = [v.effective_from for v in file.versions]
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            problems.append(
                f"versions[{i}].effective_from: must be after versions[{i - 1}].effective_from"
            )
    names = [v.version for v in file.versions]
    if len(set(names)) != len(names):
        problems.append("versions: version names must be unique")
    first_tiers = [t.name for t in file.versions[0].tiers]
    for i, version in enumerate(file.versions):
        at = f"versions[{i}]"
        problems += _tier_problems(at, version.tiers)
        if i and [t.name for t in version.tiers] != first_tiers:
            problems.append(
                f"{at}.tiers: must name the same tiers as versions[0] ({', '.join(first_tiers)})"
            )
        problems += _rule_problems(at, version.rules)
        problems += _partner_problems(at, version)
        tier_names = {t.name for t in version.tiers}
        for k, reward in enumerate(version.catalogue):
            if reward.min_tier is not None and reward.min_tier not in tier_names:
                problems.append(f"{at}.catalogue[{k}].min_tier: no tier {reward.min_tier!r}")
        for name, items in (("catalogue", version.catalogue), ("plans", version.plans)):
            ids = [item.id for item in items]
            if len(set(ids)) != len(ids):
                problems.append(f"{at}.{name}: ids must be unique")
        if version.qualification.basis == "goal_days" and version.activity is None:
            problems.append(f"{at}.qualification.basis: goal_days needs an activity section")
        problems += _payer_problems(at, version)
    return problems


def _payer_problems(at: str, version: pf.VersionFile) -> list[str]:
    """Payer caps need every reward to have a money value: a catalogue reward its own, a
    free-form redemption the program's point value."""
    rules = version.payer_rules
    if rules is None:
        return []
    problems = []
    if rules.year_cap < rules.item_cap:
        problems.append(f"{at}.payer_rules.year_cap: must be at least item_cap ({rules.item_cap})")
    if not version.catalogue and version.point_value is None:
        problems.append(
            f"{at}.point_value: required with payer_rules (free-form redemptions need a value)"
        )
    for k, reward in enumerate(version.catalogue):
        if reward.value is None:
            problems.append(f"{at}.catalogue[{k}].value: required with payer_rules")
    return problems


def _partner_problems(at: str, version: pf.VersionFile) -> list[str]:
    partners = [p.id for p in version.partners]
    problems = []
    if partners and sum(p.home for p in version.partners) != 1:
        problems.append(f"{at}.partners: exactly one partner must be home")
    if len(set(partners)) != len(partners):
        problems.append(f"{at}.partners: partner ids must be unique")
    for k, rule in enumerate(version.rules):
        named = rule.match.get("partner_id", [])
        for partner in [named] if isinstance(named, str) else named:
            if partner not in partners:
                problems.append(f"{at}.rules[{k}].match.partner_id: no partner {partner!r}")
    return problems


def _tier_problems(at: str, tiers: list[pf.TierFile]) -> list[str]:
    problems = []
    if tiers[0].threshold != 0:
        problems.append(f"{at}.tiers[0].threshold: the first tier must have threshold 0")
    for j in range(1, len(tiers)):
        if tiers[j].threshold <= tiers[j - 1].threshold:
            problems.append(
                f"{at}.tiers[{j}].threshold: must be above tiers[{j - 1}].threshold "
                f"({tiers[j - 1].threshold})"
            )
    seen: set[str] = set()
    for j, tier in enumerate(tiers):
        if tier.name in seen:
            problems.append(f"{at}.tiers[{j}].name: tier names must be unique")
        seen.add(tier.name)
        if (tier.downgrade == "grace") != (tier.grace_days is not None):
            problems.append(
                f"{at}.tiers[{j}].grace_days: required with downgrade: grace, only then"
            )
    return problems


def _rule_problems(at: str, rules: list[pf.RuleFile]) -> list[str]:
    problems = []
    ids = [r.id for r in rules]
    counters: dict[str, tuple[str, ...]] = {}
    for k, rule in enumerate(rules):
        where = f"{at}.rules[{k}]"
        if ids.count(rule.id) > 1:
            problems.append(f"{where}.id: rule ids must be unique in a version")
        fields = {f.name for f in dataclasses.fields(INTERACTION_CLASSES[rule.on])} - _CAUSE
        for name, values in rule.match.items():
            if name not in fields:
                problems.append(
                    f"{where}.match.{name}: not a field of {rule.on} ({', '.join(sorted(fields))})"
                )
                continue
            allowed = _literal_values(rule.on, name)
            for value in [values] if isinstance(values, str) else values:
                if allowed and value not in allowed:
                    problems.append(f"{where}.match.{name}: must be one of {', '.join(allowed)}")
        if rule.when is not None:
            problem = _condition_problem(rule.when)
            if problem:
                problems.append(f"{where}.when: {problem}")
        award = rule.award
        if isinstance(award, pf.BestOfAward):
            for name in (award.best_of.field, award.best_of.group_by):
                if name not in fields:
                    problems.append(f"{where}.award.best_of: {name} is not a field of {rule.on}")
        if isinstance(award, pf.BoostAward):
            boost = award.boost
            if boost.multiply is None and boost.add is None:
                problems.append(f"{where}.award.boost: give multiply or add")
            for target in boost.applies_to:
                if target not in ids:
                    problems.append(f"{where}.award.boost.applies_to: no rule {target!r}")
        for m, limit in enumerate(rule.limits):
            lw = f"{where}.limits[{m}]"
            if limit.awards is None and limit.points is None:
                problems.append(f"{lw}: give awards or points")
            if (limit.per == "rolling_days") != (limit.days is not None):
                problems.append(f"{lw}.days: required with per: rolling_days, only then")
            if limit.counter is not None:
                shape = (limit.per, str(limit.days), str(limit.awards), str(limit.points))
                if counters.setdefault(limit.counter, shape) != shape:
                    problems.append(
                        f"{lw}.counter: {limit.counter} is defined differently elsewhere"
                    )
    return problems


def _literal_values(kind: str, field: str) -> tuple[str, ...]:
    data = MODELS_BY_TYPE[kind].model_fields["data"].annotation
    model_fields = getattr(data, "model_fields", {})
    if field not in model_fields:
        return ()
    return tuple(str(v) for v in get_args(model_fields[field].annotation))


def _condition_problem(text: str) -> str | None:
    try:
        compiled = cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        return f"not a valid CEL expression ({str(exc).splitlines()[0]})"
    unknown = set(compiled.variables()) - CONDITION_VARIABLES
    if unknown:
        return (
            f"unknown variable {sorted(unknown)[0]} (use {', '.join(sorted(CONDITION_VARIABLES))})"
        )
    return None


# ---------------------------------------------------------------------------- compiling
def compile_program(file: pf.ProgramFile) -> Program:
    """The domain's program for a validated file."""
    return Program(
        program_id=file.program_id,
        timezone=ZoneInfo(file.timezone),
        versions=tuple(_version(v) for v in file.versions),
    )


def _version(v: pf.VersionFile) -> ProgramVersion:
    spend = v.spend
    return ProgramVersion(
        version=v.version,
        effective_from=v.effective_from,
        rules=tuple(_rule(r) for r in v.rules),
        tiers=tuple(
            Tier(
                t.name,
                t.threshold,
                t.multiplier,
                tuple(t.benefits),
                Downgrade(t.downgrade),
                timedelta(days=t.grace_days or 0),
            )
            for t in v.tiers
        ),
        qualifying_window=timedelta(days=v.qualification.window_days),
        lot_lifetime=timedelta(days=v.lot_lifetime_days),
        expiry_notice=timedelta(days=v.expiry_notice_days),
        partners=tuple(Partner(p.id, p.kind, p.home, p.redeem_only_here) for p in v.partners),
        point_value=v.point_value.value / v.point_value.points if v.point_value else None,
        activity=ActivityGoal(
            v.activity.goal_steps,
            v.activity.streak.days if v.activity.streak else 0,
            v.activity.streak.points if v.activity.streak else 0,
        )
        if v.activity
        else None,
        qualification_basis=v.qualification.basis,
        catalogue={
            r.id: CatalogueReward(
                r.id, r.points, r.value, r.min_tier, _limits(r.limits, f"reward:{r.id}")
            )
            for r in v.catalogue
        },
        plans={
            p.id: Plan(
                p.id,
                p.price,
                1 if p.term == "month" else 12,
                p.multiplier,
                p.discount_percent,
                tuple(p.benefits),
            )
            for p in v.plans
        },
        cashback=Cashback(v.cashback.percent, timedelta(days=v.cashback.expires_days))
        if v.cashback
        else None,
        prepaid=Prepaid(
            timedelta(days=v.prepaid.window_days),
            tuple(
                sorted(
                    ((d.min_total, d.percent) for d in v.prepaid.discounts),
                    reverse=True,
                )
            ),
        )
        if v.prepaid
        else None,
        payer=PayerRules(
            frozenset(v.payer_rules.federal_classes),
            v.payer_rules.item_cap,
            v.payer_rules.year_cap,
            v.payer_rules.referral_bonuses,
            frozenset(v.payer_rules.never_earn),
        )
        if v.payer_rules
        else None,
        referral=ReferralRule(
            v.referral.enabled,
            timedelta(days=v.referral.window_days),
            v.referral.referrer_bonus,
            v.referral.referee_bonus,
        ),
        spend=SpendRule(
            spend.currency,
            spend.discount_threshold,
            spend.discount_base_percent,
            spend.discount_step,
            spend.discount_step_percent,
            spend.discount_max_percent,
            spend.reward_every_payments,
            spend.reward_id,
            timedelta(days=spend.reward_valid_days) if spend.reward_valid_days else None,
        ),
    )


def _rule(r: pf.RuleFile) -> Rule:
    award = _award(r.award)
    qualifying = r.counts_toward_tier if r.counts_toward_tier is not None else not award.is_boost
    return Rule(
        rule_id=r.id,
        on=r.on,
        award=award,
        match={k: frozenset([v] if isinstance(v, str) else v) for k, v in r.match.items()},
        condition=_condition(r.when) if r.when else None,
        condition_text=r.when,
        limits=_limits(r.limits, r.id),
        window=Window(r.window.from_, r.window.until) if r.window else None,
        tier_multiplier=r.tier_multiplier,
        qualifying=qualifying,
    )


def _limits(limits: list[pf.Limit], default_counter: str) -> tuple[Limit, ...]:
    return tuple(
        Limit(
            per=Period(limit.per),
            counter=limit.counter or default_counter,
            awards=limit.awards,
            points=limit.points,
            days=limit.days or 0,
            reason=limit.reason,
        )
        for limit in limits
    )


def _award(a: pf.FixedAward | pf.PerAmountAward | pf.BestOfAward | pf.BoostAward) -> aw.Award:
    match a:
        case pf.FixedAward(points=points):
            return aw.FixedPoints(points)
        case pf.PerAmountAward(per_amount=per):
            return aw.PerAmount(per.field, per.rate)
        case pf.BestOfAward(best_of=best):
            bands = sorted(best.bands, key=lambda b: b.min, reverse=True)
            return aw.BestOfGroup(
                best.field,
                best.group_by,
                tuple(aw.Band(b.min, b.points) for b in bands),
                best.reason,
            )
        case pf.BoostAward(boost=boost):
            return aw.Boost(boost.multiply, boost.add, frozenset(boost.applies_to))
    raise TypeError(f"unknown award {type(a).__name__}")


def _condition(text: str) -> Condition:
    """A compiled CEL condition; an evaluation error (a missing field) is "does not hold"."""
    compiled = cel.compile(text)

    def holds(activation: Mapping[str, Any]) -> bool:
        try:
            return compiled.execute(dict(activation)) is True
        except (RuntimeError, ValueError, KeyError, TypeError):
            return False

    return holds


# ------------------------------------------------------------------------------ loading
def parse_program(text: str, origin: str) -> Program:
    """Validate and compile one program file's text; ``origin`` names it in errors."""
    return compile_program(read_file(text, origin))


def program_files(extra_dirs: Iterable[Path] = ()) -> dict[str, tuple[str, str]]:
    """Program id -> (origin, text) of the shipped programs and then ``extra_dirs``'s
    (which may override)."""
    found: dict[str, tuple[str, str]] = {}
    shipped = resources.files("domain") / "programs"
    sources: list[tuple[str, str]] = [
        (item.name, item.read_text(encoding="utf-8"))
        for item in sorted(shipped.iterdir(), key=lambda entry: entry.name)
        if item.name.endswith(PROGRAM_SUFFIXES)
    ]
    for folder in extra_dirs:
        sources += [
            (str(path), path.read_text(encoding="utf-8"))
            for path in sorted(folder.iterdir())
            if path.name.endswith(PROGRAM_SUFFIXES)
        ]
    for origin, text in sources:
        found[read_file(text, origin).program_id] = (origin, text)
    return found


def builtin_programs() -> dict[str, Program]:
    """The programs shipped with careledger."""
    return load_programs()


def load_programs(extra_dirs: Iterable[Path] = ()) -> dict[str, Program]:
    """The shipped programs plus every program file in ``extra_dirs`` (which may override)."""
    return {
        pid: parse_program(text, origin)
        for pid, (origin, text) in program_files(extra_dirs).items()
    }
