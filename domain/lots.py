"""Lots: points earned together and expiring together, and how points are taken from them.

Pure functions over the account's lots, so redemption, void and adjustment all take points
the same way: preferred lots first, then soonest expiry (ties by lot id).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from uuid import UUID

from domain.values import Allocation, Lot


def take(
    lots: dict[UUID, Lot],
    points: int,
    prefer: Iterable[UUID] = (),
    skip_partners: frozenset[str] = frozenset(),
) -> Iterator[Allocation]:
    """Choose lots to take ``points`` from: ``prefer``-red lots, then soonest-expiring;
    lots issued by ``skip_partners`` are left alone (their points are spent elsewhere)."""
    preferred_ids = list(prefer)
    preferred = [lots[i] for i in preferred_ids if i in lots]
    skip = set(preferred_ids)
    others = sorted(
        (lot for lot in lots.values() if lot.lot_id not in skip),
        key=lambda lot: (lot.expires_at, lot.lot_id),
    )
    for lot in [*preferred, *others]:
        if points <= 0:
            return
        if lot.partner in skip_partners:
            continue
        n = min(points, lot.remaining)
        if n > 0:
            yield Allocation(lot.lot_id, lot.expires_at, n, lot.partner)
            points -= n


def spendable(lots: dict[UUID, Lot], skip_partners: frozenset[str]) -> int:
    """The points in lots not issued by ``skip_partners``."""
    return sum(lot.remaining for lot in lots.values() if lot.partner not in skip_partners)


def trim(allocations: list[Allocation], points: int) -> Iterator[Allocation]:
    """Drop ``points`` from the front of ``allocations`` (they repay a negative balance)."""
    for allocation in allocations:
        cut = min(points, allocation.points)
        points -= cut
        if allocation.points - cut > 0:
            yield replace(allocation, points=allocation.points - cut)
