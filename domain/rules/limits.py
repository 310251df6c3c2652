"""Limits on a rule: at most N awards and/or P points per period.

Periods are calendar ones in the program's time zone (day, ISO week, month, quarter, year),
rolling (any N consecutive days) or the account's lifetime. Usage is the list of awards a
counter has paid, by event time, so a late interaction is judged against the awards around
its own time, not the latest ones.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Period(StrEnum):
    """What a limit counts over."""

    DAY = "day"
    ISO_WEEK = "iso_week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    ROLLING_DAYS = "rolling_days"
    LIFETIME = "lifetime"


@dataclass(frozen=True, order=True)
class Use:
    """One award a counter paid: when (event time), how many points, and for which cause."""

    at: datetime
    key: str
    points: int


@dataclass(frozen=True)
class Limit:
    """At most ``awards`` awards and/or ``points`` points per period, on one counter.

    ``counter`` is the rule's id unless rules share a named counter ("2 visits a week, any
    type"). An award that would pass ``points`` is trimmed to what is left; one that would
    pass ``awards`` is refused with ``reason``.
    """

    per: Period
    counter: str
    awards: int | None = None
    points: int | None = None
    days: int = 0  # for Period.ROLLING_DAYS
    reason: str = "capped"

    def room(self, uses: list[Use], at: datetime, zone: ZoneInfo) -> tuple[bool, int | None]:
        """Whether one more award at ``at`` is allowed, and the points left (None: no cap)."""
        count, points = self._used(uses, at, zone)
        if self.awards is not None and count + 1 > self.awards:
            return False, 0
        if self.points is None:
            return True, None
        left = self.points - points
        return left > 0, max(left, 0)

    def _used(self, uses: list[Use], at: datetime, zone: ZoneInfo) -> tuple[int, int]:
        if self.per is Period.LIFETIME:
            return len(uses), sum(u.points for u in uses)
        if self.per is Period.ROLLING_DAYS:
            return self._used_rolling(uses, at)
        start, end = calendar_bounds(self.per, at, zone)
        window = uses[_index(uses, start) : _index(uses, end)]
        return len(window), sum(u.points for u in window)

    def _used_rolling(self, uses: list[Use], at: datetime) -> tuple[int, int]:
        """The most any window of ``days`` days that would hold ``at`` already holds.

        Windows are (e - days, e]; those holding ``at`` end at ``at`` or at a later award
        before ``at + days``, so only those ends need checking (with out-of-order arrivals a
        later window can be the fuller one).
        """
        span = timedelta(days=self.days)
        ends = [at, *(u.at for u in uses[_index(uses, at, after=True) : _index(uses, at + span)])]
        best = (0, 0)
        for end in ends:
            window = uses[_index(uses, end - span, after=True) : _index(uses, end, after=True)]
            used = (len(window), sum(u.points for u in window))
            best = (max(best[0], used[0]), max(best[1], used[1]))
        return best


def _index(uses: list[Use], at: datetime, *, after: bool = False) -> int:
    """Where ``at`` falls in ``uses`` (sorted by time): before equal times, or after them."""
    find = bisect_right if after else bisect_left
    return find(uses, at, key=lambda use: use.at)


def calendar_bounds(per: Period, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The [start, end) instants of the calendar period holding ``at``, in ``zone``'s calendar."""
    local = at.astimezone(zone).date()
    if per is Period.DAY:
        first, last = local, local + timedelta(days=1)
    elif per is Period.ISO_WEEK:
        first = local - timedelta(days=local.weekday())
        last = first + timedelta(days=7)
    elif per is Period.MONTH:
        first = local.replace(day=1)
        last = _add_months(first, 1)
    elif per is Period.QUARTER:
        first = local.replace(month=(local.month - 1) // 3 * 3 + 1, day=1)
        last = _add_months(first, 3)
    elif per is Period.YEAR:
        first, last = (
            local.replace(month=1, day=1),
            local.replace(year=local.year + 1, month=1, day=1),
        )
    else:
        raise ValueError(f"{per} is not a calendar period")
    return _midnight(first, zone), _midnight(last, zone)


def _add_months(first: date, months: int) -> date:
    month = first.month - 1 + months
    return first.replace(year=first.year + month // 12, month=month % 12 + 1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)
