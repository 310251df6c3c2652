"""The projection handlers, pure: folding an account's events gives the account's balance."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.account import PatientAccount, entries_of
from domain.entries import statement_lines_of
from domain.errors import LedgerError
from domain.rejection import RejectedInput
from projections.bulk import Upsert
from projections.changes import BatchChanges, month_index, month_start
from projections.handlers import DuplicateEntry, Fold, UnknownAccount
from projections.tables import balances, program_kpis_daily
from tests.unit.dsl import (
    DEFAULT,
    Ledger,
    adjust,
    at,
    cancel,
    checkup,
    enrol,
    pay,
    redeem,
    steps,
    visit,
    void,
)
from tests.unit.stored_events import as_stored


def fold(events: list[Any], changes: BatchChanges | None = None) -> BatchChanges:
    changes = changes or BatchChanges()
    folding = Fold(changes)
    for position, event in enumerate(events, start=1):
        folding.apply(as_stored(position, event))
    return changes


def balance_fields(changes: BatchChanges, ledger: Ledger) -> tuple[dict[str, Any], dict[str, Any]]:
    (row,) = changes.accounts.values()
    expected = dataclasses.asdict(ledger.account.balance(DEFAULT))
    del expected["next_expiry"]
    return {name: getattr(row, name) for name in expected}, expected


def test_a_mixed_history_folds_to_the_aggregate_balance() -> None:
    first = visit(at(1))
    ledger = Ledger().given(
        enrol(at(0)),
        first,
        *[visit(at(2 + d)) for d in range(10)],
        redeem(300, "r-1", at(20)),
        cancel("r-1", at(21)),
        redeem(200, "r-2", at(22)),
        void(first, at(23)),
        pay("150.00", at(24)),
    )
    ledger.maintain(at(400))
    changes = fold(ledger.account.pending_events)
    row, expected = balance_fields(changes, ledger)
    assert row == expected
    (account,) = changes.accounts.values()
    assert account.first_activity_at == at(0)
    assert account.last_activity_at == at(24)
    assert account.updated_at == ledger.account.pending_events[-1].timestamp
    assert list(changes.entries) == [e.entry_id for e in ledger.entries()]
    assert [(r[2], r[3], r[5]) for r in changes.tier_changes] == [
        ("bronze", "silver", "qualifying_points"),
        ("silver", "bronze", "maintenance"),
    ]


def statement_rows(ledger: Ledger) -> list[tuple[Any, ...]]:
    """The account's statement lines (as ``careledger statement`` makes them), as rows."""
    lines: list[Any] = []
    for event in ledger.account.pending_events:
        lines.extend(statement_lines_of(event, lines[-1].balance_after if lines else 0))
    account = ledger.account
    return [
        (
            line.entry_id,
            account.program_id,
            account.patient_id,
            line.kind,
            line.points,
            line.balance_after,
            line.rule_id,
            line.program_version,
            line.source,
            line.source_id,
            line.occurred_at,
            line.reason,
            line.operator,
        )
        for line in lines
    ]


def entry_rows(changes: BatchChanges) -> list[tuple[Any, ...]]:
    """``ledger_entries`` rows without ``recorded_at`` (which a statement line lacks)."""
    return [(*row[:11], *row[12:]) for row in changes.entries.values()]


def test_interactions_that_paid_nothing_are_zero_point_rows_with_their_reason() -> None:
    ledger = Ledger().given(
        visit(at(0)),
        checkup(at(1), "annual_wellness"),
        checkup(at(2), "annual_wellness"),  # once a year: noted
        steps(at(3).date(), 10, at(3)),  # below the daily threshold: noted
        redeem(10**6, "r-1", at(4)),  # more than available: rejected
        redeem(50, "r-2", at(5)),
        redeem(50, "r-2", at(6), id="again"),  # the same redemption id again: noted
    )
    changes = fold(ledger.account.pending_events)
    assert entry_rows(changes) == statement_rows(ledger)
    noted = [row for row in changes.entries.values() if row[3] == "noted"]
    # (reason, balance_after, rule_id, program_version): the balance when it happened
    assert [(r[12], r[5], r[6], r[7]) for r in noted] == [
        ("already_awarded_this_year", 600, "checkup.annual_wellness", "2026.1"),
        ("no_steps_top_up", 600, "activity.steps", "2026.1"),
        ("insufficient_points", 600, "", "2026.1"),
        ("redemption_id_repeated", 550, "", "2026.1"),
    ]
    events = ledger.account.pending_events
    recorded = {getattr(e, "source_id", None): e.timestamp for e in events}
    assert [r[11] for r in noted] == [recorded[r[9]] for r in noted]
    assert {r[4] for r in noted} == {0} and all(r[13] is None for r in noted)
    # they change no balance and no point KPI, but are accepted interactions of their day
    row, expected = balance_fields(changes, ledger)
    assert row == expected
    day2 = changes.kpis[("clinic-default", at(2).date())]
    assert (day2.interactions, day2.points_earned) == (1, 0)


def test_adjustments_move_available_and_their_own_kpi_never_lifetime_earned() -> None:
    ledger = Ledger().given(
        visit(at(0)),
        adjust(40, at(1), reason="goodwill", operator="staff-7"),
        adjust(-500, at(2), reason="fraud", operator="staff-9"),  # into a negative balance
        visit(at(3)),  # repays the debt first
    )
    changes = fold(ledger.account.pending_events)
    row, expected = balance_fields(changes, ledger)
    assert row == expected
    assert (row["available"], row["lifetime_earned"]) == (-260, 200)
    assert entry_rows(changes) == statement_rows(ledger)
    adjusted = [r for r in changes.entries.values() if r[3] == "adjusted"]
    assert [(r[4], r[5], r[6], r[12], r[13]) for r in adjusted] == [
        (40, 140, "adjustment", "goodwill", "staff-7"),
        (-500, -360, "adjustment", "fraud", "staff-9"),
    ]
    kpis = {day: changes.kpis[("clinic-default", at(day).date())] for day in range(4)}
    assert [k.points_adjusted for k in kpis.values()] == [0, 40, -500, 0]
    assert [k.points_earned for k in kpis.values()] == [100, 0, 0, 100]
    # staff corrections are accepted interactions, but not patient activity
    assert {day for _, day, _ in changes.days} == {at(0).date(), at(3).date()}
    assert kpis[1].interactions == 1


def test_kpis_count_days_of_event_time_and_activity_excludes_money_moves() -> None:
    ledger = Ledger().given(
        visit(at(0)), redeem(50, "r-1", at(1)), pay("20.00", at(1, hours=1)), visit(at(40))
    )
    changes = fold(ledger.account.pending_events)
    day0, day1, day40 = (at(d).date() for d in (0, 1, 40))
    kpi = {day: changes.kpis[("clinic-default", day)] for day in (day0, day1, day40)}
    assert (kpi[day0].interactions, kpi[day0].new_patients, kpi[day0].points_earned) == (1, 1, 100)
    assert (kpi[day1].interactions, kpi[day1].points_redeemed) == (2, 50)
    assert {day for _, day, _ in changes.days} == {day0, day40}  # redeeming/paying: not active
    assert set(changes.months.values()) == {True}


def test_an_earlier_first_interaction_moves_the_new_patient_to_its_day() -> None:
    ledger = Ledger().given(visit(at(10)), visit(at(3)))
    changes = fold(ledger.account.pending_events)
    new = {day: delta.new_patients for (_, day), delta in changes.kpis.items()}
    assert new == {at(10).date(): 0, at(3).date(): 1}
    assert changes.accounts[ledger.account.id].first_activity_at == at(3)


def test_a_later_batch_continues_from_the_loaded_row() -> None:
    ledger = Ledger().given(visit(at(0)), visit(at(1)))
    events = ledger.account.pending_events
    first = fold(events[:2])
    second = BatchChanges(accounts=dict(first.accounts))
    fold(events[2:], second)
    assert second.accounts[ledger.account.id].available == 200
    assert len(second.entries) == 1


def test_dead_letters_keep_where_and_why_never_the_payload() -> None:
    received = datetime(2026, 6, 1, tzinfo=UTC)
    letter = RejectedInput.record(
        origin="file:x:3",
        code="unknown_field",
        reason="data.text: not allowed",
        source="urn:s",
        source_id="e-1",
        received_at=received,
    )
    changes = fold(letter.collect_events())
    assert changes.dead_letters == [
        (
            "file:x:3",
            "urn:s",
            "e-1",
            "unknown_field",
            "unknown_field: data.text: not allowed",
            received,
        )
    ]
    assert not changes.accounts and not changes.kpis


def test_events_for_an_unseen_account_or_a_repeated_entry_stop_the_projection() -> None:
    events = Ledger().given(visit(at(0))).account.pending_events
    with pytest.raises(UnknownAccount):
        fold(events[1:])
    with pytest.raises(DuplicateEntry):
        fold([*events, events[-1]])


def test_months_are_consecutive_integers() -> None:
    assert month_index(datetime(2026, 1, 31, 23, tzinfo=UTC)) + 1 == month_index(
        datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert month_start(month_index(datetime(2025, 12, 9, tzinfo=UTC))) == date(2025, 12, 1)
    # a time just after midnight in UTC+2 is still the previous UTC day and month
    plus_two = datetime.fromisoformat("2026-03-01T01:00:00+02:00")
    assert month_start(month_index(plus_two)) == date(2026, 2, 1)


def test_upserts_render_one_conflict_rule_for_both_stores() -> None:
    assert Upsert(balances).conflict_sql() == ""
    kpis = Upsert(program_kpis_daily, keys=("program_id", "day"), merge={"interactions": "add"})
    assert kpis.conflict_sql() == (
        " ON CONFLICT (program_id, day) DO UPDATE SET "
        "interactions = program_kpis_daily.interactions + EXCLUDED.interactions"
    )


# ------------------------------------------------------------------ properties
step = st.one_of(
    st.tuples(st.just("visit"), st.sampled_from(["in_person", "telehealth", "specialist"])),
    st.tuples(st.just("checkup"), st.sampled_from(["annual_wellness", "screening"])),
    st.tuples(st.just("redeem"), st.integers(1, 1500)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("void"), st.integers(0, 20)),
    st.tuples(st.just("pay"), st.integers(1, 30000)),
    st.tuples(st.just("maintain"), st.integers(0, 400)),
    st.tuples(st.just("adjust"), st.integers(-2000, 2000).filter(bool)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(step, st.integers(0, 90)), min_size=1, max_size=40),
)
def test_any_history_folds_to_the_aggregate_balance(
    steps: list[tuple[tuple[str, int | str], int]],
) -> None:
    ledger = Ledger(patient_id=f"p-{uuid4().hex[:6]}")
    when = at(0)
    done: list[Any] = []
    redemptions = 0
    for (kind, arg), gap in steps:
        when += timedelta(days=gap)
        interaction: Any = None
        if kind == "visit":
            interaction = visit(when, str(arg))
        elif kind == "checkup":
            interaction = checkup(when, str(arg))
        elif kind == "redeem":
            redemptions += 1
            interaction = redeem(int(arg), f"r-{redemptions}", when)
        elif kind == "cancel":
            interaction = cancel(f"r-{int(arg)}", when)
        elif kind == "void" and done:
            interaction = void(done[int(arg) % len(done)], when)
        elif kind == "pay":
            interaction = pay(f"{int(arg) / 100:.2f}", when)
        elif kind == "adjust":
            interaction = adjust(int(arg), when)
        elif kind == "maintain":
            ledger.maintain(when + timedelta(days=int(arg)))
        if interaction is not None:
            try:
                ledger.given(interaction)
            except LedgerError:
                continue  # refused: no events, nothing to project
            done.append(interaction)
    changes = fold(ledger.account.pending_events)
    row, expected = balance_fields(changes, ledger)
    assert row == expected
    entries = [e for event in ledger.account.pending_events for e in entries_of(event)]
    assert sum(e.points for e in entries) == row["available"]
    earned = sum(k.points_earned for k in changes.kpis.values())
    assert earned == row["lifetime_earned"]
    assert sum(k.points_redeemed for k in changes.kpis.values()) == row["lifetime_redeemed"]
    assert sum(k.points_expired for k in changes.kpis.values()) == row["lifetime_expired"]
    assert sum(k.points_reversed for k in changes.kpis.values()) == row["lifetime_reversed"]
    adjusted = sum(k.points_adjusted for k in changes.kpis.values())
    assert adjusted == sum(e.points for e in entries if e.kind == "adjusted")
    liability = earned + adjusted - row["lifetime_redeemed"] - row["lifetime_expired"]
    assert liability - row["lifetime_reversed"] == row["available"]
    assert entry_rows(changes) == statement_rows(ledger)  # noted rows included
    tiers = [e for e in ledger.account.pending_events if isinstance(e, PatientAccount.TierChanged)]
    assert len(changes.tier_changes) == len(tiers)
