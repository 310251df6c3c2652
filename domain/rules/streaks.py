"""Goal days and streak blocks, as pure functions of the set of goal days.

A streak bonus is owed for every complete block of N consecutive goal days, counted from the
first day of each run (days N, 2N, ... of a run; a day that is not a goal day ends the run).
Readings arrive in any order, late or not, and voids take goal days away, so the blocks owed
are recomputed from the goal days around the day that changed and reconciled with the blocks
paid: the blocks paid always equal those of the same goal days taken in day order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date, timedelta

DAY = timedelta(days=1)


def region(goal_days: set[date], changed: date) -> tuple[date, date]:
    """The days whose blocks ``changed`` can affect: its run, before or after the change."""
    low = high = changed
    while low - DAY in goal_days:
        low -= DAY
    while high + DAY in goal_days:
        high += DAY
    return low, high


def blocks_owed(goal_days: set[date], low: date, high: date, length: int) -> set[date]:
    """The first days of the complete blocks of ``length`` goal days in runs within
    [low, high] (a run is a maximal stretch of consecutive goal days)."""
    owed: set[date] = set()
    day = low
    while day <= high:
        if day not in goal_days:
            day += DAY
            continue
        start = day
        while day + DAY in goal_days and day + DAY <= high:
            day += DAY
        run = (day - start).days + 1
        owed.update(start + timedelta(days=k * length) for k in range(run // length))
        day += DAY
    return owed


def count_in_window(ordered: list[date], end: date, days: int) -> int:
    """Goal days (``ordered``: sorted) in the ``days`` days ending with ``end`` (inclusive)."""
    return bisect_right(ordered, end) - bisect_left(ordered, end - timedelta(days=days - 1))


def best_window(ordered: list[date], changed: date, days: int) -> int:
    """The most goal days any window of ``days`` days holding ``changed`` holds: windows
    ending at a goal day from ``changed`` on (a window's count only grows at goal days)."""
    first, last = (
        bisect_left(ordered, changed),
        bisect_right(ordered, changed + timedelta(days=days - 1)),
    )
    return max((count_in_window(ordered, end, days) for end in ordered[first:last]), default=0)
