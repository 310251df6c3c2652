"""Constrained wire field types shared by the v1 models.

Every type is strict (no bool-for-int, no number-for-string coercion) because upstream
producers must not be able to smuggle a different shape through a lenient parser. Each
type has a matching rule sentence; the models put it in the field description, so the
published JSON Schema and the rejection reasons use the same words and cannot drift.
Regexes use ``[0-9]`` rather than ``\\d``: pydantic's Rust regex engine treats ``\\d`` as
any Unicode digit.
"""

import contextlib
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

EVENT_ID_RULE = (
    "must be 1 to {n} printable ASCII characters with no whitespace or control characters"
)
ID_RULE = "must be 1 to 64 characters from A-Z a-z 0-9 . _ : -"
PATIENT_ID_RULE = "must be a pseudonymous patient id: 1 to 64 characters from A-Z a-z 0-9 . _ : -"
STAFF_ID_RULE = "must be a pseudonymous staff id: 1 to 64 characters from A-Z a-z 0-9 . _ : -"
ADJUSTMENT_POINTS_RULE = "must be a non-zero integer from -1000000 to 1000000"
PROGRAM_ID_RULE = (
    "must be a program id: a lower-case letter or digit, then up to 63 lower-case letters, "
    "digits or hyphens"
)
CHANNEL_RULE = "must be a channel code: 1 to 32 characters from a-z 0-9 _ -"
REASON_CODE_RULE = "must be a reason code: 1 to 64 characters from a-z 0-9 _ (never free text)"
CURRENCY_RULE = "must be an ISO 4217 code of 3 upper-case letters"
TIME_RULE = "must be an RFC 3339 timestamp with a UTC offset, such as 2024-01-31T09:30:00Z"
DAY_RULE = "must be an ISO calendar date written YYYY-MM-DD"
AMOUNT_RULE = (
    "must be a JSON string holding a decimal greater than 0 and at most 1000000.00, "
    "with at most 2 decimal places and no sign, exponent or spaces"
)

_PRINTABLE = r"^[\x21-\x7e]+$"
_ID = r"^[A-Za-z0-9._:-]{1,64}$"

EventId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=_PRINTABLE)
]
EventSource = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=256, pattern=_PRINTABLE)
]
Id = Annotated[str, StringConstraints(strict=True, pattern=_ID)]
PatientId = Id
StaffId = Id
ProgramId = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Channel = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9_-]{1,32}$")]
ReasonCode = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9_]{1,64}$")]
Currency = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z]{3}$")]


def _int_rule(low: int, high: int) -> str:
    return f"must be an integer from {low} to {high}"


def bounded_int(low: int, high: int) -> Any:
    """A strict int field in [low, high] whose description states the rule."""
    return Field(strict=True, ge=low, le=high, description=_int_rule(low, high))


def adjustment_points() -> Any:
    """A strict, non-zero int field in [-1000000, 1000000]: an adjustment of 0 adjusts nothing."""
    return Field(
        strict=True,
        ge=-1_000_000,
        le=1_000_000,
        description=ADJUSTMENT_POINTS_RULE,
        json_schema_extra={"not": {"const": 0}},
    )


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?")
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")
_CENT = Decimal("0.01")
_MAX_AMOUNT = Decimal("1000000.00")


def _fail(kind: str) -> PydanticCustomError:
    # The message is a fixed sentence: reasons are built from the error *type* and the
    # field rule, never from pydantic's message, but keep it value-free all the same.
    return PydanticCustomError(kind, "value breaks the field rule ({kind})", {"kind": kind})


def _parse_time(value: object) -> object:
    """Parse RFC 3339 ourselves: pydantic's parser also takes dates, unix numbers, naive."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise _fail("timestamp_naive")
        return value
    if not isinstance(value, str):
        raise _fail("json_type")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _fail("timestamp_naive" if _NAIVE.fullmatch(value) else "timestamp_format")
    offset_minutes = match.group(11)
    if value[10] == "T" and value[-1] != "z" and (offset_minutes or "00") < "60":
        # the usual spelling, which the C parser reads alike; out of range, the parse below
        # says which rule it breaks
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        if offset >= timedelta(hours=24) or int(off_m or 0) > 59:
            raise ValueError("offset out of range")
        tz = UTC if zulu else timezone(-offset if sign == "-" else offset)
        micros = int((frac or "0").ljust(6, "0")[:6])
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        raise _fail("timestamp_range") from None


def _parse_day(value: object) -> object:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise _fail("json_type")
    match = _DAY.fullmatch(value)
    if match is None:
        raise _fail("date_format")
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        raise _fail("date_range") from None


def _parse_amount(value: object) -> object:
    """Amounts travel as strings so no producer can round them through a float."""
    if isinstance(value, str):
        if _AMOUNT.fullmatch(value) is None:
            raise _fail("amount_format")
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.quantize(_CENT):
            raise _fail("amount_format")
        amount = value
    else:
        raise _fail("json_type")
    if not Decimal(0) < amount <= _MAX_AMOUNT:
        raise _fail("amount_range")
    return amount


# The patterns make schema-only validators (which treat "format" as a hint) enforce the offset.
Rfc3339Time = Annotated[
    AwareDatetime,
    BeforeValidator(_parse_time),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": f"^{_RFC3339.pattern}$"}),
]
IsoDay = Annotated[
    date,
    BeforeValidator(_parse_day),
    WithJsonSchema({"type": "string", "format": "date", "pattern": f"^{_DAY.pattern}$"}),
]
Amount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    # "f" keeps Decimal("1E+3") as "1000", so a dumped event always parses again.
    PlainSerializer(lambda amount: format(amount, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$"}),
]


def _non_zero(value: int) -> int:
    if value == 0:
        raise _fail("points_zero")
    return value


# The range is on the field (adjustment_points); zero is refused here with its own kind.
NonZeroPoints = Annotated[int, AfterValidator(_non_zero)]
