"""An earning rule as the program manager wrote it: on, condition, award, limits, window.

The condition is compiled once per program version by the loader (CEL, a sandboxed
expression language) and handed to the domain as a plain callable, so ``domain`` never
imports an expression engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.rules.awards import Award
from domain.rules.limits import Limit

Condition = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Window:
    """A campaign window: the rule applies to interactions with event time in [start, end)."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)


@dataclass(frozen=True)
class Rule:
    """One earning (or boosting) rule; its id is recorded on every entry it produces."""

    rule_id: str
    on: str  # the interaction type, e.g. "visit.completed"
    award: Award
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)  # field -> values
    condition: Condition | None = None
    condition_text: str | None = None
    limits: tuple[Limit, ...] = ()
    window: Window | None = None
    tier_multiplier: bool = True
    qualifying: bool = True  # whether its points count toward tier qualification

    def matches(self, interaction: Any) -> bool:
        """Whether the interaction's data has the values ``match`` names (exact, cheap)."""
        for name, values in self.match.items():
            if str(getattr(interaction, name, None)) not in values:
                return False
        return True
