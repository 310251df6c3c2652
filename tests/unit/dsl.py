"""A small Given/When/Then vocabulary so ledger tests read like the rules they check."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from careledger.application.programs import builtin_programs
from domain import interactions as di
from domain.account import PatientAccount, entries_of
from domain.program import Program
from domain.values import LedgerEntry

DEFAULT: Program = builtin_programs()["clinic-default"]


def with_version(program: Program, **changes: Any) -> Program:
    """``program`` with its (only) version's fields changed, e.g. ``referral=...``."""
    (version,) = program.versions
    return replace(program, versions=(replace(version, **changes),))


T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def at(days: float = 0, hours: float = 0) -> datetime:
    """A time ``days`` after T0."""
    return T0 + timedelta(days=days, hours=hours)


def _cause(when: datetime | None, source: str, source_id: str | None) -> dict[str, Any]:
    return {
        "source": source,
        "source_id": source_id or f"evt-{next(_ids)}",
        "occurred_at": when or T0,
    }


def visit(
    when: datetime | None = None,
    visit_type: str = "in_person",
    *,
    source: str = "emr",
    id: str | None = None,
) -> di.Visit:
    return di.Visit(**_cause(when, source, id), visit_id=f"v-{next(_ids)}", visit_type=visit_type)


def checkup(
    when: datetime | None = None, checkup_type: str = "screening", *, id: str | None = None
) -> di.Checkup:
    return di.Checkup(**_cause(when, "emr", id), checkup_type=checkup_type)


def assessment(when: datetime | None = None, *, id: str | None = None) -> di.Assessment:
    return di.Assessment(**_cause(when, "portal", id), assessment_id=f"a-{next(_ids)}")


def review(when: datetime | None = None, rating: int = 5, *, id: str | None = None) -> di.Review:
    return di.Review(**_cause(when, "portal", id), rating=rating)


def steps(
    day: date, value: int, when: datetime | None = None, *, id: str | None = None
) -> di.StepsReading:
    return di.StepsReading(**_cause(when, "wearables", id), day=day, steps=value)


def enrol(
    when: datetime | None = None,
    referred_by: str | None = None,
    *,
    id: str | None = None,
    payer_class: str | None = None,
) -> di.Enrolment:
    return di.Enrolment(
        **_cause(when, "portal", id),
        channel="web",
        referred_by=referred_by,
        payer_class=payer_class,
    )


def coverage(
    payer_class: str, when: datetime | None = None, *, id: str | None = None
) -> di.CoverageChange:
    return di.CoverageChange(**_cause(when, "registration", id), payer_class=payer_class)


def refer(referee: str, when: datetime | None = None, *, id: str | None = None) -> di.Referral:
    return di.Referral(**_cause(when, "portal", id), referee=referee)


def pay(
    amount: str, when: datetime | None = None, currency: str = "USD", *, id: str | None = None
) -> di.Payment:
    return di.Payment(**_cause(when, "pos", id), amount=Decimal(amount), currency=currency)


def redeem(
    points: int, redemption_id: str = "r-1", when: datetime | None = None, *, id: str | None = None
) -> di.RedemptionRequest:
    return di.RedemptionRequest(
        **_cause(when, "portal", id),
        redemption_id=redemption_id,
        reward_id="gift-card",
        points=points,
    )


def cancel(
    redemption_id: str = "r-1", when: datetime | None = None, *, id: str | None = None
) -> di.RedemptionCancellation:
    return di.RedemptionCancellation(**_cause(when, "portal", id), redemption_id=redemption_id)


def adjust(
    points: int,
    when: datetime | None = None,
    reason: str = "goodwill",
    operator: str = "staff-7",
    *,
    id: str | None = None,
) -> di.Adjustment:
    return di.Adjustment(
        **_cause(when, "crm", id),
        adjustment_id=f"adj-{next(_ids)}",
        points=points,
        reason=reason,
        operator=operator,
    )


def consent(
    marketing: bool, when: datetime | None = None, *, id: str | None = None
) -> di.ConsentChange:
    return di.ConsentChange(**_cause(when, "portal", id), marketing=marketing)


def void(target: di.Interaction, when: datetime | None = None, *, id: str | None = None) -> di.Void:
    return di.Void(
        **_cause(when, "emr", id),
        voided_source=target.source,
        voided_id=target.source_id,
        reason="entered_in_error",
    )


@dataclass
class Ledger:
    """One account under test: ``given(...)`` history, ``when(...)`` one interaction."""

    program: Program = DEFAULT
    patient_id: str = "patient-1"
    account: PatientAccount = field(init=False)

    def __post_init__(self) -> None:
        self.account = PatientAccount.open(self.program, self.patient_id)

    def given(self, *interactions: di.Interaction) -> Ledger:
        for interaction in interactions:
            self.account.handle(interaction, self.program)
        return self

    def when(self, interaction: di.Interaction) -> list[Any]:
        """Apply one interaction; returns the events it produced."""
        before = len(self.account.pending_events)
        self.account.handle(interaction, self.program)
        return self.account.pending_events[before:]

    def maintain(self, as_of: datetime) -> list[Any]:
        before = len(self.account.pending_events)
        self.account.maintain(as_of, self.program)
        return self.account.pending_events[before:]

    @property
    def available(self) -> int:
        return self.account.available

    @property
    def tier(self) -> str:
        return self.account.tier

    def entries(self) -> list[LedgerEntry]:
        return [e for event in self.account.pending_events for e in entries_of(event)]

    def replayed(self) -> PatientAccount:
        """The account rebuilt from its own events."""
        account: PatientAccount | None = None
        for event in self.account.pending_events:
            account = event.mutate(account)
        assert account is not None
        return account
