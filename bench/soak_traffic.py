"""The soak's traffic: a seeded stream of interactions for the ``soak-flat`` program.

Everything here is drawn from the seed alone, so one seed always offers the same bytes in the
same order (pacing only decides *when*). Each record carries its *intent* (what upstream meant:
a visit worth N points, a redemption of N, a cancellation, a void, or a poison record with the
code it must be refused with), which is all the oracle (``bench.soak_oracle``) ever reads: it
never parses a payload and never calls the domain.

Event times are fixed instants (``EPOCH`` + the record's place in the stream / the rate), so
they ascend in publish order, sit months in the past (ingest refuses the far future) and stay
far inside the program's lot lifetime: nothing expires during a soak.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

PROGRAM = "soak-flat"
SOURCE = "urn:careledger:soak"
EPOCH = datetime(2026, 6, 1, tzinfo=UTC)
VISIT_POINTS = {"in_person": 100, "telehealth": 40, "specialist": 70}
LATE_AFTER = 200  # a "late" redelivery repeats a record at least this many records back


@dataclass(frozen=True)
class Intent:
    """What a record means, in the oracle's terms.

    ``kind``: visit, redeem, cancel, void or poison. ``key``: the CloudEvents (source, id)
    (empty for poison that has none). ``points``: a visit's award or a redemption's amount.
    ``target``: the redemption a cancellation names, or the event id a void names.
    ``code``: the refusal code of a poison record.
    """

    kind: str
    patient: str
    key: str = ""
    points: int = 0
    target: str = ""
    code: str = ""


@dataclass(frozen=True)
class Offer:
    """One record to publish: the patient key, the bytes and what they mean."""

    key: str
    value: bytes | None
    intent: Intent
    redelivery: str = ""  # "", "duplicate" (soon after) or "late" (long after)


@dataclass
class _Patient:
    """What the generator believes of one patient, to offer mostly sensible requests."""

    balance: int = 0
    visits: list[tuple[str, int]] = field(default_factory=list)  # (event id, points) unvoided
    redemptions: list[tuple[str, int]] = field(default_factory=list)  # accepted, uncancelled
    counter: int = 0


def _event(kind: str, patient: str, eid: str, at: datetime, data: Mapping[str, object]) -> bytes:
    body = {
        "specversion": "1.0",
        "id": eid,
        "source": SOURCE,
        "type": kind,
        "time": at.isoformat().replace("+00:00", "Z"),
        "subject": patient,
        "programid": PROGRAM,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":")).encode()


class Traffic:
    """The seeded stream: ``offers(n)`` yields the first ``n`` records."""

    def __init__(self, seed: int, patients: int, rate: float) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.names = [f"soak-{seed}-{i:05d}" for i in range(patients)]
        self.state = {name: _Patient() for name in self.names}
        self.sent: list[Offer] = []

    def offers(self, count: int) -> Iterator[Offer]:
        for index in range(count):
            offer = self._next(index)
            self.sent.append(offer)
            yield offer

    def _next(self, index: int) -> Offer:
        at = EPOCH + timedelta(seconds=index / self.rate)
        roll = self.rng.random()
        if roll < 0.06 and len(self.sent) > 10:
            return self._redeliver(recent=True)
        if roll < 0.09 and len(self.sent) > LATE_AFTER:
            return self._redeliver(recent=False)
        if roll < 0.12:
            return self._poison(at)
        name = self.rng.choice(self.names)
        patient = self.state[name]
        patient.counter += 1
        eid = f"{name}-{patient.counter}"
        if roll < 0.13 and patient.visits:
            return self._conflict(name, patient, at)
        if roll < 0.19 and patient.visits:
            return self._void(name, patient, eid, at)
        if roll < 0.27 and patient.balance >= 50:
            return self._redeem(name, patient, eid, at)
        if roll < 0.30 and patient.redemptions:
            return self._cancel(name, patient, eid, at)
        return self._visit(name, patient, eid, at)

    def _visit(self, name: str, patient: _Patient, eid: str, at: datetime) -> Offer:
        kind = self.rng.choice(sorted(VISIT_POINTS))
        points = VISIT_POINTS[kind]
        patient.balance += points
        patient.visits.append((eid, points))
        value = _event("visit.completed", name, eid, at, {"visit_id": eid, "visit_type": kind})
        return Offer(name, value, Intent("visit", name, eid, points))

    def _redeem(self, name: str, patient: _Patient, eid: str, at: datetime) -> Offer:
        # now and then more than the patient has: a rejection, a business outcome
        most = patient.balance if self.rng.random() < 0.85 else patient.balance + 500
        points = self.rng.randint(10, max(10, most))
        if points <= patient.balance:
            patient.balance -= points
            patient.redemptions.append((eid, points))
        data = {"redemption_id": eid, "reward_id": "soak-reward", "points": points}
        value = _event("redemption.requested", name, eid, at, data)
        return Offer(name, value, Intent("redeem", name, eid, points))

    def _cancel(self, name: str, patient: _Patient, eid: str, at: datetime) -> Offer:
        target, points = patient.redemptions.pop(self.rng.randrange(len(patient.redemptions)))
        patient.balance += points
        value = _event("redemption.cancelled", name, eid, at, {"redemption_id": target})
        return Offer(name, value, Intent("cancel", name, eid, target=target))

    def _void(self, name: str, patient: _Patient, eid: str, at: datetime) -> Offer:
        affordable = [v for v in patient.visits if v[1] <= patient.balance]
        if not affordable:  # a void would leave debt: offer a visit instead
            return self._visit(name, patient, eid, at)
        target, points = self.rng.choice(affordable)
        patient.visits.remove((target, points))
        patient.balance -= points
        data = {"voided_id": target, "voided_source": SOURCE, "reason": "entered_in_error"}
        value = _event("interaction.voided", name, eid, at, data)
        return Offer(name, value, Intent("void", name, eid, target=target))

    def _conflict(self, name: str, patient: _Patient, at: datetime) -> Offer:
        """An earlier visit's id again with other content: refused as ``id_conflict``."""
        target, points = self.rng.choice(patient.visits)
        kind = next(k for k, p in sorted(VISIT_POINTS.items()) if p != points)
        value = _event("visit.completed", name, target, at, {"visit_id": "x", "visit_type": kind})
        return Offer(name, value, Intent("visit", name, target, VISIT_POINTS[kind]))

    def _redeliver(self, *, recent: bool) -> Offer:
        if recent:
            earlier = self.sent[self.rng.randrange(max(0, len(self.sent) - 10), len(self.sent))]
        else:
            earlier = self.sent[self.rng.randrange(0, len(self.sent) - LATE_AFTER)]
        kind = "duplicate" if recent else "late"
        return Offer(earlier.key, earlier.value, earlier.intent, kind)

    def _poison(self, at: datetime) -> Offer:
        name = self.rng.choice(self.names)
        patient = self.state[name]
        patient.counter += 1
        eid = f"{name}-{patient.counter}"
        code, value = self.rng.choice(_poisons(name, eid, at))
        return Offer(name, value, Intent("poison", name, code=code))


def _poisons(name: str, eid: str, at: datetime) -> list[tuple[str, bytes | None]]:
    """Every way a record is refused, with its code (the reasons of docs/rules.md)."""
    visit = json.loads(
        _event("visit.completed", name, eid, at, {"visit_id": eid, "visit_type": "in_person"})
    )

    def edited(**changes: object) -> bytes:
        return json.dumps({**visit, **changes}).encode()

    return [
        ("not_json", b"{not json"),
        ("not_json", None),  # a tombstone
        ("bad_encoding", b"\xff\xfe\xfa"),
        ("not_object", b"[1, 2, 3]"),
        ("duplicate_key", b'{"id": "a", "id": "b"}'),
        ("unsupported_specversion", edited(specversion="0.3")),
        ("unknown_type", edited(type="visit.cancelled")),
        ("invalid_field", edited(data={"visit_id": eid, "visit_type": "teleport"})),
        ("time_in_future", edited(time="2031-01-01T00:00:00Z")),
        ("unknown_program", edited(programid="no-such-program")),
        ("too_large", b"x" * 70_000),
        (
            "unknown_redemption",
            _event("redemption.cancelled", name, eid, at, {"redemption_id": f"never-{eid}"}),
        ),
        (
            "unknown_interaction",
            _event(
                "interaction.voided",
                name,
                eid,
                at,
                {"voided_id": f"never-{eid}", "voided_source": SOURCE, "reason": "error"},
            ),
        ),
    ]
