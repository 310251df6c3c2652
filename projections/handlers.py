"""One handler per ledger event type, folding events into a batch's row changes.

Handlers copy the facts the ledger decided (entries, tiers, qualifying points, spend); they
never re-decide anything, and they never read the clock: every time they write comes from
the event (``occurred_at``, or ``timestamp`` for when the ledger recorded it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC
from typing import Any
from uuid import UUID

from domain.account import PatientAccount, entries_of
from domain.rejection import RejectedInput
from domain.values import EntryKind, LedgerEntry
from projections.changes import CENT, BalanceRow, BatchChanges, month_index, utc_day
from projections.source import Recorded

log = logging.getLogger(__name__)

# Accepted interactions that do not make a patient "active" (retention, active_patients).
NOT_ACTIVITY = frozenset(
    {"redemption.requested", "redemption.cancelled", "payment.recorded", "interaction.voided"}
)


class UnknownAccount(LookupError):
    """Raised when an account event arrives for an account whose ``Opened`` was never seen."""


class DuplicateEntry(ValueError):
    """Raised when the ledger repeats an entry id: entry ids are unique by construction."""


class Fold:
    """Applies decoded events, in ledger order, to ``changes``.

    ``changes.accounts`` must already hold the ``balances`` rows of every account the batch
    touches that was opened in an earlier batch (the runner loads them first).
    """

    def __init__(self, changes: BatchChanges) -> None:
        self.changes = changes

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        match event:  # most specific first: every account event is a PatientAccount.Event
            case PatientAccount.Opened():
                self._opened(event)
            case PatientAccount.PaymentRecorded():
                self._payment(event)
            case PatientAccount.InteractionVoided():
                self._voided(event)
            case PatientAccount.Accepted():
                self._accept(event)
            case PatientAccount.QualifyingPointsChanged():
                self._qualifying_changed(event)
            case PatientAccount.TierChanged():
                self._tier_changed(event)
            case PatientAccount.Event():
                self._account(event)  # referrals, bonuses, expiry: their entries, if any
            case RejectedInput.Recorded():
                self._rejected(event)
            case _:
                log.debug("no read model for %s", type(event).__name__)
        self.changes.position = recorded.position
        self.changes.last_event_at = event.timestamp

    # ---------------------------------------------------------------- handlers
    def _opened(self, event: PatientAccount.Opened) -> None:
        self.changes.accounts[event.originator_id] = BalanceRow(
            program_id=event.program_id,
            patient_id=event.patient_id,
            account_id=event.originator_id,
            updated_at=event.timestamp,
        )

    def _payment(self, event: PatientAccount.PaymentRecorded) -> None:
        row = self._accept(event)
        row.spend_total = event.spend_total.quantize(CENT)
        row.discount_percent = event.discount_percent
        if event.reward_unlocked is not None:
            row.rewards_unlocked += 1

    def _voided(self, event: PatientAccount.InteractionVoided) -> None:
        row = self._accept(event)
        if event.spend_total is not None and event.discount_percent is not None:
            row.spend_total = event.spend_total.quantize(CENT)
            row.discount_percent = event.discount_percent

    def _qualifying_changed(self, event: PatientAccount.QualifyingPointsChanged) -> None:
        self._account(event).qualifying_points = event.qualifying_points

    def _tier_changed(self, event: PatientAccount.TierChanged) -> None:
        row = self._account(event)
        row.tier = event.to_tier
        self.changes.tier_changes.append(
            (
                row.program_id,
                row.patient_id,
                event.from_tier,
                event.to_tier,
                event.occurred_at,
                event.reason,
            )
        )

    def _rejected(self, event: RejectedInput.Recorded) -> None:
        self.changes.dead_letters.append(
            (
                event.origin,
                event.source,
                event.source_id,
                event.code,
                f"{event.code}: {event.reason}",
                event.received_at,
            )
        )

    # ----------------------------------------------------------------- helpers
    def _account(self, event: Any) -> BalanceRow:
        """The event's account row, moved on by the event's entries and timestamp."""
        row = self.changes.accounts.get(event.originator_id)
        if row is None:
            raise UnknownAccount(f"no balances row for account {event.originator_id}")
        row.updated_at = event.timestamp
        for entry in entries_of(event):
            self._entry(row, entry, event)
        return row

    def _accept(self, event: PatientAccount.Accepted) -> BalanceRow:
        """What every accepted interaction does: activity, KPIs, qualifying points."""
        row = self._account(event)
        changes, at = self.changes, event.occurred_at
        program_id, patient_id = row.program_id, row.patient_id
        utc = at.astimezone(UTC)
        kpis = changes.kpi(program_id, utc.date())
        kpis.interactions += 1
        first = row.first_activity_at
        if first is None or at < first:
            if first is not None:
                changes.kpi(program_id, utc_day(first)).new_patients -= 1
            kpis.new_patients += 1
            row.first_activity_at = at
        if row.last_activity_at is None or at > row.last_activity_at:
            row.last_activity_at = at
        row.qualifying_points = event.qualifying_points
        active = event.interaction not in NOT_ACTIVITY
        key = (program_id, patient_id, month_index(utc))
        changes.months[key] = changes.months.get(key, False) or active
        if active:
            changes.days.add((program_id, utc.date(), patient_id))
        return row

    def _entry(self, row: BalanceRow, entry: LedgerEntry, event: Any) -> None:
        if entry.entry_id in self.changes.entries:
            raise DuplicateEntry(f"entry {entry.entry_id} recorded twice")
        size = abs(entry.points)
        row.available += entry.points
        kpi = self.changes.kpi(row.program_id, utc_day(entry.occurred_at))
        match entry.kind:
            case EntryKind.EARNED | EntryKind.BONUS:
                row.lifetime_earned += size
                kpi.points_earned += size
            case EntryKind.REDEEMED:
                row.lifetime_redeemed += size
                kpi.points_redeemed += size
            case EntryKind.RETURNED:
                row.lifetime_redeemed -= size
                kpi.points_redeemed -= size
            case EntryKind.EXPIRED:
                row.lifetime_expired += size
                kpi.points_expired += size
            case EntryKind.REVERSED:
                row.lifetime_reversed += size
                kpi.points_reversed += size
        self.changes.entries[entry.entry_id] = (
            entry.entry_id,
            row.program_id,
            row.patient_id,
            entry.kind,
            entry.points,
            entry.balance_after,
            entry.rule_id,
            entry.program_version,
            entry.source,
            entry.source_id,
            entry.occurred_at,
            event.timestamp,  # recorded_at
        )


def accounts_to_load(batch: Iterable[Recorded]) -> set[UUID]:
    """Accounts the batch touches whose ``Opened`` is in an earlier batch (rows to load)."""
    touched: set[UUID] = set()
    opened: set[UUID] = set()
    for recorded in batch:
        event = recorded.event
        if isinstance(event, PatientAccount.Opened):
            opened.add(event.originator_id)
        elif isinstance(event, PatientAccount.Event):
            touched.add(event.originator_id)
    return touched - opened
