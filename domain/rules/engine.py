"""Evaluation: (program version, account view at event time, interaction) -> decision.

A pure function of its inputs, table-testable without an event store. The account applies
the decision as facts (entries, lots, usage); a replay applies the same facts and never
evaluates again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from domain.program import ProgramVersion
from domain.rules.awards import Boost
from domain.rules.limits import Use
from domain.rules.rule import Rule

CAUSE_FIELDS = frozenset({"source", "source_id", "occurred_at"})
NO_RULE = "no_rule"


class AccountView(Protocol):
    """What a rule may know of the account, as it stood at the interaction's event time."""

    def tier_at(self, at: datetime) -> str: ...
    def membership_plan_at(self, at: datetime) -> str | None: ...
    def uses(self, counter: str) -> list[Use]: ...
    def paid_in_group(self, rule_id: str, group: str) -> int: ...


@dataclass(frozen=True)
class Payout:
    """One rule's award for one interaction, as decided."""

    rule_id: str
    base_points: int  # before the tier multiplier
    points: int  # credited
    qualifying: int  # counts toward tier qualification
    counters: tuple[str, ...]  # the limits' counters it uses
    group: str | None = None  # for awards that top up (a step day)
    limit: str | None = None  # the limit that trimmed it, if any


@dataclass(frozen=True)
class Step:
    """Why one rule did or did not pay: for ``careledger explain``."""

    rule_id: str
    outcome: str  # "paid", "trimmed", "no_match", "outside_window", "condition_false", a reason
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """What a version decided for an interaction."""

    version: str
    tier: str
    payouts: tuple[Payout, ...]
    reason: str | None  # why nothing was paid (None when something was)
    steps: tuple[Step, ...]


def evaluate(
    version: ProgramVersion, zone: ZoneInfo, view: AccountView, interaction: Any
) -> Decision:
    """Decide what the rules of ``version`` pay for ``interaction``."""
    at: datetime = interaction.occurred_at
    tier = view.tier_at(at)
    context = _Context(version, zone, view, interaction, tier)
    payouts: list[Payout] = []
    steps: list[Step] = []
    refusals: list[str] = []
    earning, boosting = _plans(version, interaction.kind)
    for plan in earning:
        payout = context.decide(plan, steps, refusals)
        if payout is not None:
            payouts.append(payout)
    for plan in boosting:
        boost = plan.rule.award
        assert isinstance(boost, Boost)
        extra = boost.extra(sum(p.base_points for p in payouts if boost.boosts(p.rule_id)))
        payout = context.decide(plan, steps, refusals, boost_extra=extra)
        if payout is not None:
            payouts.append(payout)
    reason = None if payouts else (refusals[0] if refusals else NO_RULE)
    return Decision(version.version, tier, tuple(payouts), reason, tuple(steps))


@dataclass(frozen=True)
class _Plan:
    """A rule with what deciding it needs worked out once per version and interaction type."""

    rule: Rule
    counters: tuple[str, ...]  # its limits' counters, each once
    fills: tuple[str, ...]  # the counters an award fills: the rule's own id, then ``counters``
    shared: bool  # a later rule on the same interaction type limits a counter this one fills


Plans = tuple[tuple[_Plan, ...], tuple[_Plan, ...]]  # earning rules, then boosts
# Per version (by identity; the version is held so its id cannot be reused) and interaction
# type. Deriving it is pure, so the cache only saves the work; it is cleared when it grows
# past what any set of loaded programs needs (tests build many versions).
_PLANS: dict[int, tuple[ProgramVersion, dict[str, Plans]]] = {}
_PLANS_MAX = 512


def _plans(version: ProgramVersion, kind: str) -> Plans:
    cached = _PLANS.get(id(version))
    if cached is None or cached[0] is not version:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        cached = _PLANS[id(version)] = (version, {})
    plans = cached[1].get(kind)
    if plans is None:
        plans = cached[1][kind] = _plan(
            version.earning_rules.get(kind, ()), version.boosts.get(kind, ())
        )
    return plans


def _plan(earning: tuple[Rule, ...], boosts: tuple[Rule, ...]) -> Plans:
    rules = (*earning, *boosts)
    plans = []
    for index, rule in enumerate(rules):
        counters = tuple(dict.fromkeys(limit.counter for limit in rule.limits))
        fills = tuple(dict.fromkeys((rule.rule_id, *counters)))
        read_later = {limit.counter for later in rules[index + 1 :] for limit in later.limits}
        plans.append(_Plan(rule, counters, fills, not read_later.isdisjoint(fills)))
    return tuple(plans[: len(earning)]), tuple(plans[len(earning) :])


class _Context:
    def __init__(
        self, version: ProgramVersion, zone: ZoneInfo, view: AccountView, item: Any, tier: str
    ) -> None:
        self.version, self.zone, self.view, self.item, self.tier = version, zone, view, item, tier
        self._activation: dict[str, Any] | None = None
        # The tier's multiplier times an active paid membership's, worked out when a rule
        # first needs it; whether it is 1 (then points are the base).
        self._multiplier: Decimal | None = None
        self._unit = False
        # Awards already decided for this interaction, by counter: a second rule sharing a
        # counter must see the first one's award.
        self._pending: dict[str, list[Use]] = {}

    def uses(self, counter: str) -> list[Use]:
        pending = self._pending.get(counter)
        known = self.view.uses(counter)
        return sorted([*known, *pending]) if pending else known

    def multiplied(self, base: int) -> int:
        """floor(base x tier multiplier x membership multiplier), rounded once."""
        multiplier = self._multiplier
        if multiplier is None:
            multiplier = self.version.tier(self.tier).multiplier
            if self.version.plans:
                plan_id = self.view.membership_plan_at(self.item.occurred_at)
                plan = self.version.plans.get(plan_id) if plan_id else None
                if plan is not None:
                    multiplier *= plan.multiplier
            self._multiplier, self._unit = multiplier, multiplier == 1
        if self._unit:
            return base
        return int((base * multiplier).to_integral_value(rounding=ROUND_FLOOR))

    def decide(
        self,
        plan: _Plan,
        steps: list[Step],
        refusals: list[str],
        boost_extra: int | None = None,
    ) -> Payout | None:
        rule, item, at = plan.rule, self.item, self.item.occurred_at
        if rule.match and not rule.matches(item):
            steps.append(Step(rule.rule_id, "no_match"))
            return None
        if rule.window is not None and not rule.window.holds(at):
            steps.append(Step(rule.rule_id, "outside_window"))
            return None
        if rule.condition is not None and not rule.condition(self.activation()):
            steps.append(Step(rule.rule_id, "condition_false", rule.condition_text or ""))
            return None
        group = rule.award.group(item)
        already = self.view.paid_in_group(rule.rule_id, group) if group is not None else 0
        base = rule.award.base(item, already) if boost_extra is None else boost_extra
        if base <= 0:
            reason = rule.award.no_award_reason
            steps.append(Step(rule.rule_id, reason))
            refusals.append(reason)
            return None
        points = base
        if rule.tier_multiplier:
            points = self.multiplied(base)
        trimmed_by = None
        for limit in rule.limits:
            allowed, left = limit.room(self.uses(limit.counter), at, self.zone)
            if not allowed:
                steps.append(Step(rule.rule_id, limit.reason, _describe(limit)))
                refusals.append(limit.reason)
                return None
            if left is not None and left < points:
                points, trimmed_by = left, _describe(limit)
        qualifying = (min(base, points) if trimmed_by else base) if rule.qualifying else 0
        steps.append(Step(rule.rule_id, "trimmed" if trimmed_by else "paid", trimmed_by or ""))
        if plan.shared:  # only a later rule's limit ever reads what is pending
            use = Use(at, f"pending:{rule.rule_id}", points)
            for counter in plan.fills:
                self._pending.setdefault(counter, []).append(use)
        return Payout(rule.rule_id, base, points, qualifying, plan.counters, group, trimmed_by)

    def activation(self) -> Mapping[str, Any]:
        """The variables a condition sees (built once per interaction, only when needed)."""
        if self._activation is None:
            item, at = self.item, self.item.occurred_at
            local = at.astimezone(self.zone)
            self._activation = {
                "data": {
                    f.name: _plain(getattr(item, f.name))
                    for f in fields(item)
                    if f.name not in CAUSE_FIELDS
                },
                "event": {"type": item.kind, "source": item.source},
                "time": at,
                "local": {
                    "year": local.year,
                    "month": local.month,
                    "day": local.day,
                    "weekday": local.isoweekday(),
                    "hour": local.hour,
                    "date": local.date().isoformat(),
                },
                "account": {"tier": self.tier, "tier_rank": self.version.rank(self.tier)},
            }
        return self._activation


def _plain(value: Any) -> Any:
    """A data value as a condition sees it (amounts as numbers for comparison only)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _describe(limit: Any) -> str:
    parts = []
    if limit.awards is not None:
        parts.append(f"{limit.awards} awards")
    if limit.points is not None:
        parts.append(f"{limit.points} points")
    per = f"{limit.days} days" if limit.per == "rolling_days" else limit.per.value
    return f"{' and '.join(parts)} per {per} (counter {limit.counter})"
