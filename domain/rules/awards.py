"""What an earning rule pays, before tier multipliers and limits.

Each kind of award is one small class with ``base(interaction, already)``: the base points
an interaction is worth (``already`` is what the rule already paid in the award's group, for
awards that top up). Boosts (campaigns) pay a share of what other rules paid instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, ClassVar


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class FixedPoints:
    """A fixed number of points per interaction."""

    points: int
    is_boost: ClassVar[bool] = False
    no_award_reason: ClassVar[str] = "no_points"

    def group(self, interaction: Any) -> str | None:
        return None

    def base(self, interaction: Any, already: int) -> int:
        return self.points


@dataclass(frozen=True)
class PerAmount:
    """Points per currency unit of a data field, rounded down (``rate`` 10: 10 per 1.00)."""

    field: str
    rate: Decimal
    is_boost: ClassVar[bool] = False
    no_award_reason: ClassVar[str] = "below_one_point"

    def group(self, interaction: Any) -> str | None:
        return None

    def base(self, interaction: Any, already: int) -> int:
        amount: Decimal = getattr(interaction, self.field)
        return _floor(amount * self.rate)


@dataclass(frozen=True)
class Band:
    """Readings of at least ``minimum`` are worth ``points``."""

    minimum: int
    points: int


@dataclass(frozen=True)
class BestOfGroup:
    """The best band a reading reaches, once per group (a day): later better readings top up.

    ``group_by`` names the data field that makes the group (the reading's ``day``), so
    readings of one day, in any order and however late, pay that day's best band once.
    """

    field: str
    group_by: str
    bands: tuple[Band, ...]  # highest minimum first
    reason: str = "no_top_up"
    is_boost: ClassVar[bool] = False

    @property
    def no_award_reason(self) -> str:
        return self.reason

    def group(self, interaction: Any) -> str | None:
        return str(getattr(interaction, self.group_by))

    def base(self, interaction: Any, already: int) -> int:
        value: int = getattr(interaction, self.field)
        best = next((band.points for band in self.bands if value >= band.minimum), 0)
        return max(best - already, 0)


@dataclass(frozen=True)
class Boost:
    """A campaign: multiply (``multiply`` 2.00 doubles) or add to what other rules paid.

    ``applies_to`` names the rules it boosts (empty: every earning rule the interaction
    triggered). The extra is computed on those rules' base points.
    """

    multiply: Decimal | None = None
    add: int | None = None
    applies_to: frozenset[str] = frozenset()
    is_boost: ClassVar[bool] = True
    no_award_reason: ClassVar[str] = "nothing_to_boost"

    def group(self, interaction: Any) -> str | None:
        return None

    def extra(self, boosted_base: int) -> int:
        """The extra base points for awards worth ``boosted_base`` base points together."""
        if boosted_base <= 0:
            return 0
        extra = 0
        if self.multiply is not None:
            extra += _floor(Decimal(boosted_base) * (self.multiply - 1))
        if self.add is not None:
            extra += self.add
        return extra

    def boosts(self, rule_id: str) -> bool:
        return not self.applies_to or rule_id in self.applies_to

    def base(self, interaction: Any, already: int) -> int:  # pragma: no cover - not earned
        raise TypeError("a boost pays a share of other rules' awards")


Award = FixedPoints | PerAmount | BestOfGroup | Boost
