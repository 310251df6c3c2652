"""Properties of the account over random histories.

Given a random mix of interactions (every kind, event times over ~2 years, in or out of time
order, redeliveries, voids and cancellations aimed at earlier events, referral relay calls and
maintenance runs), the ledger's invariants hold after every step.

Foreign-currency payments are in the mix: they are refused and must leave no trace.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import errors
from domain import interactions as di
from domain.account import PatientAccount, entries_of
from domain.program import Program
from domain.rules.limits import Period, calendar_bounds
from domain.values import LedgerEntry
from tests.unit.dsl import (
    DEFAULT,
    T0,
    adjust,
    assessment,
    cancel,
    checkup,
    enrol,
    pay,
    redeem,
    refer,
    review,
    steps,
    visit,
)

PATIENT = "patient-1"
HOURS = 730 * 24
FIRST_STEP_DAY = date(2026, 1, 5)
PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------- the generated steps
hours = st.integers(0, HOURS)
pick = st.integers(0, 10**6)  # an index into earlier interactions, taken modulo their number
redemption_ids = st.sampled_from(["r0", "r1", "r2", "r3", "r4"])

earning_ops = st.one_of(
    st.tuples(
        st.just("visit"),
        hours,
        st.sampled_from(["in_person", "specialist", "telehealth", "urgent_care"]),
    ),
    st.tuples(
        st.just("checkup"),
        hours,
        st.sampled_from(["annual_wellness", "screening", "vaccination", "dental_cleaning"]),
    ),
    st.tuples(st.just("assessment"), hours),
    st.tuples(st.just("review"), hours),
    st.tuples(
        st.just("steps"),
        hours,
        st.integers(0, 4),
        st.sampled_from([3000, 5000, 7500, 10000, 15000]),
    ),
)
other_ops = st.one_of(
    st.tuples(st.just("enrol"), hours, st.sampled_from([None, "patient-2", PATIENT])),
    st.tuples(st.just("refer"), hours, st.sampled_from(["patient-3", PATIENT])),
    st.tuples(st.just("pay"), hours, st.integers(1, 30_000), st.sampled_from(["USD", "EUR"])),
    st.tuples(st.just("redeem"), hours, st.integers(1, 400), redemption_ids),
    st.tuples(st.just("cancel"), hours, st.sampled_from(["r0", "r1", "r2", "r3", "r4", "r9"])),
    st.tuples(st.just("void"), hours, pick),
    st.tuples(st.just("resend"), hours, pick),
    st.tuples(st.just("maintain"), hours),
    st.tuples(st.just("adjust"), hours, st.integers(-300, 300).filter(bool)),
    st.tuples(
        st.just("note_referral"), hours, st.sampled_from(["patient-2", "patient-3", PATIENT])
    ),
    st.tuples(st.just("pay_referrer"), hours, st.sampled_from(["patient-4", "patient-5"])),
)
steps_lists = st.lists(st.one_of(earning_ops, earning_ops, other_ops), min_size=20, max_size=80)


def in_time_order(ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same steps with their times handed out in ascending order."""
    times = sorted(op[1] for op in ops)
    return [(op[0], when, *op[2:]) for op, when in zip(ops, times, strict=True)]


ordered_histories = steps_lists.map(in_time_order)
histories = st.one_of(steps_lists, ordered_histories)  # arrival order may differ from time


# ----------------------------------------------------------------------- the driver
@dataclass
class Run:
    """One account driven through generated steps, checking invariants as it goes."""

    program: Program = DEFAULT
    account: PatientAccount = field(init=False)
    sent: list[di.Interaction] = field(default_factory=list)
    accepted: list[di.Interaction] = field(default_factory=list)
    serial: int = 0

    def __post_init__(self) -> None:
        self.account = PatientAccount.open(self.program, PATIENT)

    def next_id(self) -> str:
        self.serial += 1
        return f"i-{self.serial}"

    def interaction(self, op: tuple[Any, ...]) -> di.Interaction | None:
        kind, hour, *args = op
        when = T0 + timedelta(hours=hour)
        made: di.Interaction
        match kind:
            case "visit":
                made = visit(when, args[0], id=self.next_id())
            case "checkup":
                made = checkup(when, args[0], id=self.next_id())
            case "assessment":
                made = assessment(when, id=self.next_id())
            case "review":
                made = review(when, id=self.next_id())
            case "steps":
                day = FIRST_STEP_DAY + timedelta(days=args[0])
                made = steps(day, args[1], when, id=self.next_id())
            case "enrol":
                made = enrol(when, referred_by=args[0], id=self.next_id())
            case "refer":
                made = refer(args[0], when, id=self.next_id())
            case "pay":
                amount = f"{args[0] // 100}.{args[0] % 100:02d}"
                made = pay(amount, when, args[1], id=self.next_id())
            case "redeem":
                made = redeem(args[0], args[1], when, id=self.next_id())
            case "cancel":
                made = cancel(args[0], when, id=self.next_id())
            case "void":
                made = self._void(when, args[0])
            case "adjust":
                made = adjust(args[0], when, id=self.next_id())
            case "resend":
                if not self.accepted:
                    return None
                made = self.accepted[args[0] % len(self.accepted)]
            case _:
                return None
        return made

    def _void(self, when: datetime, index: int) -> di.Void:
        if not self.sent or index % 7 == 6:
            target_source, target_id = "emr", "never-sent"
        else:
            target = self.sent[index % len(self.sent)]
            target_source, target_id = target.source, target.source_id
        return di.Void(
            source="emr",
            source_id=self.next_id(),
            occurred_at=when,
            voided_source=target_source,
            voided_id=target_id,
            reason="entered_in_error",
        )

    def step(self, op: tuple[Any, ...]) -> None:
        kind, hour, *args = op
        when = T0 + timedelta(hours=hour)
        events = self.account.pending_events
        before, fingerprint = len(events), self.fingerprint()
        try:
            if kind == "maintain":
                self.account.maintain(when, self.program)
                after_first = len(events)
                self.account.maintain(when, self.program)
                assert len(events) == after_first, "maintenance twice for one as_of"
            elif kind == "note_referral":
                self.account.note_referral(args[0], when, "portal", self.next_id(), self.program)
            elif kind == "pay_referrer":
                self.account.pay_referrer_bonus(args[0], when, self.program)
            else:
                interaction = self.interaction(op)
                if interaction is None:
                    return
                already = interaction in self.accepted
                if not already:
                    self.sent.append(interaction)
                outcome = self.account.handle(interaction, self.program)
                if already:
                    assert outcome == "duplicate"
                    assert len(events) == before, "a redelivery produced events"
                elif outcome == "accepted":
                    self.accepted.append(interaction)
        except errors.LedgerError:
            assert len(events) == before, "a refusal left events behind"
            assert self.fingerprint() == fingerprint, "a refusal changed the account"
        self.check_invariants()

    # ------------------------------------------------------------------ invariants
    def fingerprint(self) -> tuple[Any, ...]:
        a = self.account
        return (a.available, a.debt, a.tier, len(a.receipts), a.spend_total, a.referrer)

    def entries(self) -> list[LedgerEntry]:
        return [e for event in self.account.pending_events for e in entries_of(event)]

    def check_invariants(self) -> None:
        account, entries = self.account, self.entries()
        running = 0
        for entry in entries:
            running += entry.points
            assert entry.balance_after == running, "balance_after is not the running sum"
        assert account.available == running, "available is not the sum of the entries"
        lots = list(account.lots.values())
        assert all(lot.remaining >= 0 for lot in lots), "a lot went below zero"
        assert account.debt >= 0
        if account.debt > 0:
            assert all(lot.remaining == 0 for lot in lots), "debt while a lot holds points"
        assert account.available == sum(lot.remaining for lot in lots) - account.debt
        for event in account.pending_events:
            if isinstance(event, PatientAccount.PointsRedeemed):
                assert event.entry.balance_after >= 0, "a redemption drove available negative"
        balance = account.balance(self.program)
        adjusted = sum(e.points for e in entries if e.kind == "adjusted")
        assert (
            balance.lifetime_earned
            - balance.lifetime_redeemed
            - balance.lifetime_expired
            - balance.lifetime_reversed
            + adjusted
            == balance.available
        )
        self.check_limits()

    def check_limits(self) -> None:
        """No calendar or lifetime limit holds more awards or points than it allows."""
        zone = self.program.timezone
        for version in self.program.versions:
            for rule in version.rules:
                for limit in rule.limits:
                    if limit.per is Period.ROLLING_DAYS:
                        continue
                    for use in self.account.uses(limit.counter):
                        if limit.per is Period.LIFETIME:
                            window = self.account.uses(limit.counter)
                        else:
                            start, end = calendar_bounds(limit.per, use.at, zone)
                            window = [
                                u for u in self.account.uses(limit.counter) if start <= u.at < end
                            ]
                        awards_cap = max(
                            (lim.awards or 10**9)
                            for r in self.rules_on(limit.counter)
                            for lim in r.limits
                            if lim.per is limit.per
                        )
                        assert len(window) <= awards_cap, f"{limit.counter} over its awards"
                        points_cap = max(
                            (lim.points or 10**9)
                            for r in self.rules_on(limit.counter)
                            for lim in r.limits
                            if lim.per is limit.per
                        )
                        assert sum(u.points for u in window) <= points_cap, (
                            f"{limit.counter} over its points"
                        )

    def rules_on(self, counter: str) -> list[Any]:
        """Rules, in any version, with a limit on ``counter`` (versions may differ)."""
        return [
            rule
            for version in self.program.versions
            for rule in version.rules
            if any(lim.counter == counter for lim in rule.limits)
        ]

    def state(self, account: PatientAccount | None = None) -> dict[str, Any]:
        """Everything the aggregate holds, except unsaved events and derived caches."""
        held = vars(account or self.account)
        skip = {"_pending_events", "_expiry_floor"}  # the floor is a cache, rebuilt on demand
        return copy.deepcopy({k: v for k, v in held.items() if k not in skip})

    def replayed(self) -> PatientAccount:
        account: Any = None
        for event in self.account.pending_events:
            account = event.mutate(account)
        assert isinstance(account, PatientAccount)
        return account


def run(ops: list[tuple[Any, ...]], program: Program = DEFAULT) -> Run:
    driven = Run(program)
    for op in ops:
        driven.step(op)
    return driven


# ------------------------------------------------------------------------ properties
@PROPERTY_SETTINGS
@given(ops=histories)
def test_invariants_hold_after_every_step_of_any_history(ops: list[tuple[Any, ...]]) -> None:
    run(ops)


@PROPERTY_SETTINGS
@given(ops=histories)
def test_replaying_the_events_rebuilds_the_same_account(ops: list[tuple[Any, ...]]) -> None:
    driven = run(ops)

    assert driven.state(driven.replayed()) == driven.state()


@PROPERTY_SETTINGS
@given(ops=histories, data=st.data())
def test_redelivering_applied_interactions_in_any_order_changes_nothing(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    driven = run(ops)
    before_events, before_state = len(driven.account.pending_events), driven.state()

    again = data.draw(st.permutations(driven.accepted * 2))
    outcomes = [driven.account.handle(interaction, DEFAULT) for interaction in again]

    assert set(outcomes) <= {"duplicate"}
    assert len(driven.account.pending_events) == before_events
    assert driven.state() == before_state


@PROPERTY_SETTINGS
@given(ops=ordered_histories)
def test_entry_ids_are_unique_when_events_arrive_in_time_order(
    ops: list[tuple[Any, ...]],
) -> None:
    driven = run(ops)

    ids = [entry.entry_id for entry in driven.entries()]
    assert len(ids) == len(set(ids))
