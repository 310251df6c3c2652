"""Broken variants of valid events, the mistakes upstream systems really make.

Each flaw maps to the rejection code ``schemas.validation.parse_interaction`` must give it, so
tests (and anyone reading the dead letters of a simulated run) know what to expect.
"""

from __future__ import annotations

from random import Random
from typing import Any, Final, Literal, NamedTuple

import orjson

from schemas.codes import Code

Flaw = Literal["not_json", "unknown_field", "out_of_range", "unknown_type", "future_time"]

FLAW_CODES: Final[dict[Flaw, Code]] = {
    "not_json": "not_json",
    "unknown_field": "unknown_field",
    "out_of_range": "invalid_field",
    "unknown_type": "unknown_type",
    "future_time": "time_in_future",
}
_FLAWS: Final[tuple[Flaw, ...]] = tuple(FLAW_CODES)
_FREE_TEXT: Final = ("great staff, thank you", "please call me back", "parking was hard")
_UNKNOWN_TYPES: Final = ("visit.scheduled", "appointment.booked", "patient.updated")
_CLOCK_SKEW_YEARS: Final = 8  # a multiple of 4 keeps 29 February a real date


class Malformed(NamedTuple):
    """One broken record: the key it would travel under and the exact bytes."""

    key: str | None
    payload: bytes
    event_type: str
    flaw: Flaw


def corrupt(payload: bytes, rng: Random) -> Malformed:
    """A broken copy of the valid event in ``payload``, under a new id."""
    flaw = rng.choice(_FLAWS)
    event: dict[str, Any] = orjson.loads(payload)
    broken = {**event, "id": f"{event['id']}-bad", "data": dict(event["data"])}
    if flaw == "unknown_field":  # free text is exactly what the contract keeps out (PHI)
        broken["data"]["comment"] = rng.choice(_FREE_TEXT)
    elif flaw == "out_of_range":
        broken["type"] = "review.submitted"
        broken["data"] = {"rating": rng.choice((0, 6, 10))}
    elif flaw == "unknown_type":
        broken["type"] = rng.choice(_UNKNOWN_TYPES)
    elif flaw == "future_time":  # a device whose clock is years ahead
        time = broken["time"]
        broken["time"] = f"{int(time[:4]) + _CLOCK_SKEW_YEARS}{time[4:]}"
    raw = orjson.dumps(broken)
    key: str | None = event["subject"]
    if flaw == "not_json":  # cut off mid-write: an object that never closes
        raw = raw[: len(raw) // 2]
        key = key if rng.random() < 0.5 else None
    return Malformed(key, raw, str(broken["type"]), flaw)
