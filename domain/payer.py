"""Payer classes and a program's payer rules: what federal health-care programs allow.

In the US, rewards to Medicare and Medicaid beneficiaries must stay within the OIG's
nominal-value policy (at most 15.00 an item and 75.00 a year in aggregate), and rewarding the
referral of a federally insured patient risks the Anti-Kickback Statute. A program lists
these limits as data (``payer_rules`` in its file); the account asks the functions here,
with the payer class in force at the interaction's event time, and records the outcome.
Pure values and functions: no clock, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from domain.values import RedemptionRecord

PAYER_CLASSES: Final = ("commercial", "medicare", "medicaid", "tricare", "self_pay", "other")
NO_CLASS: Final = "other"  # the class of an account that was never told one
FEDERAL_CLASSES: Final = frozenset({"medicare", "medicaid", "tricare"})
ITEM_CAP: Final = Decimal("15.00")
YEAR_CAP: Final = Decimal("75.00")

# Reason codes (statement lines, noted rows, the refusals KPI).
PAYER_CAP: Final = "payer_cap"
REFERRAL_NOT_PERMITTED: Final = "referral_not_permitted"
PAYER_CATEGORY: Final = "payer_category_excluded"


@dataclass(frozen=True)
class PayerRules:
    """A program version's limits for patients of its federal classes."""

    federal_classes: frozenset[str] = FEDERAL_CLASSES
    item_cap: Decimal = ITEM_CAP  # the most one reward may be worth
    year_cap: Decimal = YEAR_CAP  # the most a calendar year's rewards may be worth together
    referral_bonuses: bool = False  # whether referral bonuses may be paid at all
    never_earn: frozenset[str] = frozenset({"prescription"})  # purchase categories

    def applies_to(self, payer_class: str) -> bool:
        """Whether a patient of ``payer_class`` is held to these rules."""
        return payer_class in self.federal_classes

    def redemption_refusal(self, value: Decimal, year_total: Decimal) -> str | None:
        """Why a reward worth ``value`` cannot be had when the patient's rewards of the
        same calendar year are already worth ``year_total`` (None: it may)."""
        if value > self.item_cap or year_total + value > self.year_cap:
            return PAYER_CAP
        return None


def applicable(rules: PayerRules | None, payer_class: str) -> PayerRules | None:
    """The rules a patient of ``payer_class`` is held to under a version, if any."""
    return rules if rules is not None and rules.applies_to(payer_class) else None


@dataclass(frozen=True)
class Valued:
    """A redemption's money value, the payer class in force at its event time and the
    calendar year (program time zone) the caps count it in: what ``PointsRedeemed`` records."""

    value: Decimal | None
    payer_class: str
    year: int


def cap_refusal(
    rules: PayerRules | None, valued: Valued, redemptions: Iterable[RedemptionRecord]
) -> str | None:
    """``payer_cap`` when the patient's class is held to caps the reward would break.

    The year's total counts every redemption of that calendar year still standing, earlier
    or later in event time and whatever class it was made under: the cap is the patient's,
    and a late redemption must not slip under it."""
    held = applicable(rules, valued.payer_class)
    if held is None:
        return None
    if valued.value is None:  # the loader requires values with payer rules: be safe anyway
        return PAYER_CAP
    total = sum(
        (
            r.value
            for r in redemptions
            if r.status == "redeemed" and r.value_year == valued.year and r.value is not None
        ),
        Decimal("0.00"),
    )
    return held.redemption_refusal(valued.value, total)


def purchase_refusal(rules: PayerRules | None, payer_class: str, category: str) -> str | None:
    """``payer_category_excluded`` for a category that never earns for the patient's class."""
    held = applicable(rules, payer_class)
    return PAYER_CATEGORY if held is not None and category in held.never_earn else None


def referral_refusal(
    rules: PayerRules | None, payer_class: str, referral_enabled: bool
) -> str | None:
    """``referral_not_permitted`` when a bonus would be paid but the class forbids it."""
    held = applicable(rules, payer_class)
    if held is None or held.referral_bonuses or not referral_enabled:
        return None
    return REFERRAL_NOT_PERMITTED


def reward_value(
    own_value: Decimal | None, points: int, point_value: Decimal | None
) -> Decimal | None:
    """The money value of a reward: a catalogue reward's own value, or the points at the
    program's point value (free-form redemptions), to the cent; None when neither is known."""
    if own_value is not None:
        return own_value
    if point_value is None:
        return None
    return (points * point_value).quantize(Decimal("0.01"))
