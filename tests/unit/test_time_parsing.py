"""The RFC 3339 reader's fast path (the C ``fromisoformat``) reads what the rule-by-rule parse
reads: the same instant, offset and microseconds for every accepted spelling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from schemas.fields import _parse_time


def by_fields(text: str) -> datetime:
    """The long way round, as the reader did before its fast path."""
    date_part, _, rest = text.replace("t", "T").partition("T")
    year, month, day = (int(p) for p in date_part.split("-"))
    clock, zone = (rest[:-1], "Z") if rest[-1] in "Zz" else (rest[:-6], rest[-6:])
    hms, _, frac = clock.partition(".")
    hour, minute, second = (int(p) for p in hms.split(":"))
    micros = int(frac.ljust(6, "0")[:6]) if frac else 0
    if zone == "Z":
        tz = UTC
    else:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(-offset if zone[0] == "-" else offset)
    return datetime(year, month, day, hour, minute, second, micros, tz)


# hypothesis draws naive wall times between naive bounds; the offset is drawn apart
FIRST, LAST = datetime(1970, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001


@given(
    when=st.datetimes(min_value=FIRST, max_value=LAST),
    digits=st.integers(0, 9),
    zone=st.one_of(
        st.sampled_from(["Z", "z"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)).map(
            lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
        ),
    ),
    separator=st.sampled_from("Tt"),
)
def test_fast_path_reads_like_the_field_by_field_parse(
    when: datetime, digits: int, zone: str, separator: str
) -> None:
    fraction = f".{when.microsecond:06d}987"[: digits + 1] if digits else ""
    text = when.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + zone
    parsed = _parse_time(text)
    expected = by_fields(text)
    assert parsed == expected
    assert isinstance(parsed, datetime)
    assert parsed.utcoffset() == expected.utcoffset()
    assert parsed.microsecond == expected.microsecond
