"""FHIR R4 dateTime values as aware datetimes, and back out as RFC 3339 in UTC."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from producers.fhir.outcomes import Refused
from producers.fhir.resources import Period

_DATETIME = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?"
)


def instant(value: str | None, zone: ZoneInfo) -> tuple[datetime, bool]:
    """A FHIR dateTime as an aware datetime, and whether it had a time of day.

    A full date without a time is the start of that day in the program's time zone; a year
    or a year and month alone is too imprecise to earn anything by.
    """
    if value is None:
        raise Refused("missing_time")
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise Refused("invalid_time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if day is None:
        raise Refused("imprecise_time")
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day), tzinfo=zone), False
        micros = int((fraction or "0").ljust(6, "0")[:6])
        tz = UTC if offset == "Z" else _offset(offset)
        at = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        raise Refused("invalid_time") from None
    return at, True


def _offset(text: str) -> timezone:
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def rfc3339(at: datetime) -> str:
    utc = at.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"


def period_end_day(period: Period | None, zone: ZoneInfo) -> tuple[datetime, date]:
    """The day a period's total belongs to: its end's local day, or the day before when it
    ends at exactly local midnight (a day's total is often written [00:00, next 00:00))."""
    if period is None or period.end is None:
        raise Refused("missing_time")
    at, has_time = instant(period.end, zone)
    local = at.astimezone(zone)
    if has_time and local.time() == time(0, 0):
        return at, local.date() - timedelta(days=1)
    return at, local.date()
