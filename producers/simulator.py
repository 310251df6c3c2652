"""Deterministic program traffic for demos, load tests and the ledger's dead-letter path.

``simulate`` streams a program's valid events (``producers.clinic``, shaped by the program's
traffic profile in ``producers.profiles``: clinic-default's unless told) as exact JSON bytes and
mixes in what real upstream traffic also carries: a small share of malformed records and exact
re-sends of earlier valid ones (a producer retrying after a lost acknowledgement).

The noise has its own random generator, seeded from the same seed, so changing the malformed or
duplicate share never changes the valid traffic of a seed, only what is mixed into it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from random import Random
from typing import Final, Literal

from producers.clinic import Clinic
from producers.habits import Population
from producers.malformed import Flaw, corrupt
from producers.profiles import CLINIC_DEFAULT, TrafficProfile

__all__ = ["Kind", "SimulatedEvent", "simulate"]

Kind = Literal["valid", "malformed", "duplicate"]

_MAX_RESEND_DELAY: Final = 300  # a re-send arrives up to this many records after the original


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One record as it would travel on the interactions topic.

    ``key`` is the patient id (None only for some malformed records); ``payload`` is the
    exact value bytes; ``flaw`` says how a malformed record is broken.
    """

    key: str | None
    payload: bytes
    kind: Kind
    event_type: str
    flaw: Flaw | None = None


def simulate(
    patients: int,
    days: int,
    seed: int,
    start: date,
    malformed_share: float = 0.005,
    duplicate_share: float = 0.01,
    population: Population | None = None,
    profile: TrafficProfile = CLINIC_DEFAULT,
) -> Iterator[SimulatedEvent]:
    """Stream ``days`` days of ``profile``'s traffic (``producers.profiles.PROFILES`` by
    program) from ``patients`` patients, starting on ``start`` (``population``: who they are,
    by default the profile's own; its ``heavy`` population for a failing programme).

    Valid events come in event-time order; a duplicate repeats an earlier valid record byte
    for byte, and a malformed record comes just before the valid event it was derived from.
    """
    if patients < 1 or days < 1:
        raise ValueError("patients and days must be at least 1")
    for name, share in (("malformed_share", malformed_share), ("duplicate_share", duplicate_share)):
        if not 0.0 <= share <= 0.5:
            raise ValueError(f"{name} must be between 0 and 0.5")
    clinic = Clinic(patients, days, seed, start, population, profile)
    noise = Random(f"careledger-simulator-noise-{seed}")
    return _mix(clinic, noise, malformed_share, duplicate_share)


def _mix(
    clinic: Clinic, noise: Random, malformed_share: float, duplicate_share: float
) -> Iterator[SimulatedEvent]:
    resends: list[tuple[int, int, SimulatedEvent]] = []  # (due at record n, tie-break, record)
    sent = 0
    for events in clinic.days():
        for payload, subject, kind in events:
            if noise.random() < malformed_share:
                bad = corrupt(payload, noise)
                yield SimulatedEvent(bad.key, bad.payload, "malformed", bad.event_type, bad.flaw)
            yield SimulatedEvent(subject, payload, "valid", kind)
            sent += 1
            if noise.random() < duplicate_share:
                twin = SimulatedEvent(subject, payload, "duplicate", kind)
                due = sent + noise.randrange(_MAX_RESEND_DELAY)
                heapq.heappush(resends, (due, sent, twin))
            while resends and resends[0][0] <= sent:
                yield heapq.heappop(resends)[2]
    while resends:
        yield heapq.heappop(resends)[2]
