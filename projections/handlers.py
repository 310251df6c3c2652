"""One handler per ledger event type, folding events into a batch's row changes.

Handlers copy the facts the ledger decided (entries, tiers, qualifying points, spend); they
never re-decide anything, and they never read the clock: every time they write comes from
the event (``occurred_at``, or ``timestamp`` for when the ledger recorded it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.account import PatientAccount
from domain.entries import NOTED
from domain.ids import derived_id
from domain.interactions import NOT_ENGAGEMENT, Engagement
from domain.payer import NO_CLASS
from domain.values import EntryKind
from projections.changes import (
    CENT,
    BalanceRow,
    BatchChanges,
    BenefitChange,
    Cancellation,
    Erasure,
    MembershipChange,
    Redemption,
    TierBenefits,
    VoucherChange,
    VoucherRow,
    WalletDelta,
    month_index,
    month_of,
    utc_day,
)
from projections.erasure import ERASED, ERASED_INTERACTION
from projections.stored import (
    AcceptedFacts,
    AccountFacts,
    Allocation,
    BenefitsFacts,
    CashbackExpiredFacts,
    ConsentFacts,
    Entry,
    ErasedFacts,
    Facts,
    MembershipFacts,
    MembershipLapsedFacts,
    NotedFacts,
    OpenedFacts,
    PrepaymentFacts,
    QualifyingFacts,
    Recorded,
    RejectedFacts,
    TierFacts,
    VoucherEndedFacts,
    VoucherFacts,
    VoucherUsedFacts,
    WithheldFacts,
    Wrapped,
)

log = logging.getLogger(__name__)

# Accepted interactions that do not make a patient "active" (retention, active_patients).
NOT_ACTIVITY = NOT_ENGAGEMENT
ENGAGEMENT = Engagement.kind
ENGAGEMENT_RULES = "engagement."  # engagement_monthly's action: the rule id after this
KEY_SEPARATOR = "\x1f"  # of an interaction key (domain.ids.interaction_key)
ZERO = Decimal("0.00")
SEALED = "~s1."  # a sealed value's prefix (careledger.adapters.shredding.TOKEN)
REFERRAL_SOURCE = "careledger:referral"  # the source of referral bonuses' entries


class UnknownAccount(LookupError):
    """Raised when an account event arrives for an account whose ``Opened`` was never seen."""


class DuplicateEntry(ValueError):
    """Raised when the ledger repeats an entry id: entry ids are unique by construction."""


class Fold:
    """Applies decoded events, in ledger order, to ``changes``.

    ``changes.accounts`` must already hold the ``balances`` rows of every account the batch
    touches that was opened in an earlier batch (the runner loads them first).
    ``tier_benefits``: each program's tiers' benefit codes (its latest version), which tell
    a benefit held from the tier from one held from a membership.
    """

    def __init__(self, changes: BatchChanges, tier_benefits: TierBenefits | None = None) -> None:
        self.changes = changes
        self.tier_benefits: TierBenefits = tier_benefits or {}
        # by the kind of facts (projections.stored decides which an event class has)
        self._handlers: dict[type[Facts], Callable[[Recorded], object]] = {
            OpenedFacts: self._opened,
            AcceptedFacts: self._accept,
            NotedFacts: self._noted,
            QualifyingFacts: self._qualifying_changed,
            TierFacts: self._tier_changed,
            AccountFacts: self._account,  # referrals, bonuses, expiry: their entries, if any
            RejectedFacts: self._rejected,
            VoucherFacts: self._voucher_issued,
            VoucherUsedFacts: self._voucher_used,
            VoucherEndedFacts: self._voucher_ended,
            MembershipFacts: self._membership,
            MembershipLapsedFacts: self._membership_lapsed,
            BenefitsFacts: self._benefits,
            PrepaymentFacts: self._prepayment,
            CashbackExpiredFacts: self._cashback_expired,
            ConsentFacts: self._consent,
            WithheldFacts: self._withheld,
            ErasedFacts: self._erased,
        }

    def apply(self, recorded: Recorded) -> None:
        handle = self._handlers.get(type(recorded.facts))
        if handle is None:
            log.debug("no read model for %s", recorded.cls.__name__)
        else:
            handle(recorded)
        self.changes.position = recorded.position
        self.changes.last_event_at = recorded.facts.timestamp.value

    # ---------------------------------------------------------------- handlers
    def _opened(self, recorded: Recorded) -> None:
        facts = recorded.facts
        assert isinstance(facts, OpenedFacts)
        self.changes.accounts[recorded.originator_id] = BalanceRow(
            program_id=facts.program_id,
            patient_id=facts.patient_id,
            account_id=recorded.originator_id,
            updated_at=facts.timestamp.value,
            tier=facts.starting_tier,
        )

    def _qualifying_changed(self, recorded: Recorded) -> None:
        facts = recorded.facts
        assert isinstance(facts, QualifyingFacts)
        self._account(recorded).qualifying_points = facts.qualifying_points

    def _tier_changed(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, TierFacts)
        row.tier = facts.to_tier
        self.changes.tier_changes.append(
            (
                row.program_id,
                row.patient_id,
                facts.from_tier,
                facts.to_tier,
                facts.occurred_at.value,
                facts.reason,
            )
        )

    def _noted(self, recorded: Recorded) -> None:
        """An interaction that paid nothing: a zero-point ``noted`` row saying why, at the
        balance it left, exactly as ``domain.entries.statement_lines_of`` makes the line."""
        row = self._accept(recorded)
        facts = recorded.facts
        assert isinstance(facts, NotedFacts)
        reason = facts.outcome or facts.reason
        if facts.ledger_entries() or reason is None:
            return
        self._put_noted(recorded, row, reason)

    def _withheld(self, recorded: Recorded) -> None:
        """A referral bonus the payer rules forbid: its zero line, at the qualifying visit."""
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, WithheldFacts)
        self._put_noted(recorded, row, facts.reason)

    def _put_noted(self, recorded: Recorded, row: BalanceRow, reason: str) -> None:
        """The zero-point ``noted`` row of an event that paid nothing, counted by reason."""
        facts = recorded.facts
        assert isinstance(facts, NotedFacts | WithheldFacts)
        at = facts.occurred_at.value
        entry_id = derived_id(str(recorded.originator_id), facts.source, facts.source_id, NOTED)
        self._put(
            (
                entry_id,
                row.program_id,
                row.patient_id,
                NOTED,
                0,
                row.available,  # the balance at this point, in ledger order
                facts.rule_id or "",
                facts.program_version or "",
                facts.source,
                facts.source_id,
                at,
                row.updated_at,
                reason,
                None,
            )
        )
        self.changes.sums.refused(row.program_id, month_of(at), reason)

    def _consent(self, recorded: Recorded) -> None:
        row = self._accept(recorded)
        facts = recorded.facts
        assert isinstance(facts, ConsentFacts)
        key, at = (row.program_id, row.patient_id), facts.occurred_at.value
        latest = self.changes.consents.get(key)
        if latest is None or at >= latest[1]:  # ties: the later in ledger order, as the account
            self.changes.consents[key] = (facts.marketing, at)

    def _rejected(self, recorded: Recorded) -> None:
        facts = recorded.facts
        assert isinstance(facts, RejectedFacts)
        # A dead letter of a known patient has its id sealed (ADR 0015): the read model keeps
        # no id for it, so an erasure has nothing to find here and a rebuild reads the same.
        sealed = facts.source_id is not None and facts.source_id.startswith(SEALED)
        self.changes.dead_letters.append(
            (
                facts.origin,
                facts.source,
                None if sealed else facts.source_id,
                facts.code,
                f"{facts.code}: {facts.reason}",
                facts.received_at.value,
            )
        )

    def _erased(self, recorded: Recorded) -> None:
        """An account closed by erasure: its forfeiture entry (as any entry), its wallets
        emptied, and the erasure noted for the writer's re-keying pass."""
        self._noted(recorded)
        facts = recorded.facts
        assert isinstance(facts, ErasedFacts)
        row = self.changes.accounts[recorded.originator_id]
        cashback, prepaid = facts.owed_cashback.value, facts.owed_prepaid.value
        if cashback or prepaid:
            wallet = self._wallet(row)
            wallet.cashback -= cashback
            wallet.prepaid -= prepaid
        self.changes.erasures.append(
            Erasure(
                recorded.originator_id,
                row.program_id,
                facts.occurred_at.value,
                facts.reason or "",
                -sum(entry.points for entry in facts.ledger_entries()),
                cashback.quantize(CENT),
                prepaid.quantize(CENT),
            )
        )

    # ---------------------------------------------------------- rewards side
    def _voucher_issued(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, VoucherFacts)
        key = (row.program_id, row.patient_id, facts.voucher_id)
        self.changes.vouchers[key] = VoucherRow(
            *key, facts.reward_id, facts.points, facts.issued_at.value, facts.expires_at.value
        )

    def _voucher_used(self, recorded: Recorded) -> None:
        row = self._accept(recorded)
        facts = recorded.facts
        assert isinstance(facts, VoucherUsedFacts)
        key = (row.program_id, row.patient_id, facts.voucher_id)
        self._voucher_change(key, VoucherChange("used", facts.occurred_at.value))

    def _voucher_ended(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, VoucherEndedFacts)
        key = (row.program_id, row.patient_id, facts.voucher_id)
        self._voucher_change(key, VoucherChange(facts.status, facts.at.value))

    def _voucher_change(self, key: tuple[str, str, str], change: VoucherChange) -> None:
        voucher = self.changes.vouchers.get(key)
        if voucher is None:  # issued in an earlier batch: the writer loads it
            self.changes.voucher_changes.setdefault(key, []).append(change)
        else:
            change.apply(voucher)

    def _membership(self, recorded: Recorded) -> None:
        row = self._accept(recorded)
        facts = recorded.facts
        assert isinstance(facts, MembershipFacts)
        at = facts.occurred_at.value
        amount = facts.amount.value.quantize(CENT) if facts.amount is not None else ZERO
        paid_through = facts.paid_through.value if facts.paid_through is not None else None
        if recorded.cls is PatientAccount.MembershipStarted:
            change = MembershipChange("started", at, facts.plan_id or "", amount, paid_through)
        elif recorded.cls is PatientAccount.MembershipRenewed:
            change = MembershipChange("renewed", at, amount=amount, paid_through=paid_through)
        else:
            change = MembershipChange("cancelled", at)
        self._membership_change((row.program_id, row.patient_id, facts.membership_id), change)

    def _membership_lapsed(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, MembershipLapsedFacts)
        key = (row.program_id, row.patient_id, facts.membership_id)
        self._membership_change(key, MembershipChange("lapsed", facts.at.value))

    def _membership_change(self, key: tuple[str, str, str], change: MembershipChange) -> None:
        """In ledger order; the writer applies them to the stored row, if any (a membership
        bought again after a lapse keeps its row), and counts the month's KPIs."""
        self.changes.membership_changes.setdefault(key, []).append(change)

    def _benefits(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, BenefitsFacts)
        tiers = self.tier_benefits.get(row.program_id, {})
        self.changes.benefit_changes.append(
            BenefitChange(
                row.program_id,
                row.patient_id,
                facts.at.value,
                tuple(facts.benefits),
                tiers.get(row.tier, frozenset()),
            )
        )

    def _prepayment(self, recorded: Recorded) -> None:
        row = self._accept(recorded)
        facts = recorded.facts
        assert isinstance(facts, PrepaymentFacts)
        self._wallet(row).prepaid += facts.amount.value

    def _cashback_expired(self, recorded: Recorded) -> None:
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, CashbackExpiredFacts)
        self._wallet(row).cashback -= facts.amount.value

    def _payment_wallets(self, row: BalanceRow, facts: AcceptedFacts) -> None:
        """A payment in a program with money wallets: cashback earned and drawn, prepaid
        drawn, and the prepayment discount it was made at."""
        if (
            facts.cashback_earned is None
            and facts.cashback_drawn is None
            and facts.prepaid_drawn is None
            and facts.prepayment_discount_percent is None
        ):
            return
        wallet = self._wallet(row)
        if facts.cashback_earned is not None:
            wallet.cashback += facts.cashback_earned.value
        for _, drawn in facts.cashback_drawn or ():
            wallet.cashback -= drawn.value
        if facts.prepaid_drawn is not None:
            wallet.prepaid -= facts.prepaid_drawn.value
        if facts.prepayment_discount_percent is not None:
            wallet.discount_percent = facts.prepayment_discount_percent

    def _wallet(self, row: BalanceRow) -> WalletDelta:
        key = (row.program_id, row.patient_id)
        wallet = self.changes.wallets.get(key)
        if wallet is None:
            wallet = self.changes.wallets[key] = WalletDelta(row.updated_at)
        wallet.updated_at = row.updated_at  # (moved on by _account first)
        return wallet

    # ----------------------------------------------------------------- helpers
    def _account(self, recorded: Recorded) -> BalanceRow:
        """The event's account row, moved on by the event's entries and timestamp."""
        row = self.changes.accounts.get(recorded.originator_id)
        if row is None:
            raise UnknownAccount(f"no balances row for account {recorded.originator_id}")
        facts = recorded.facts
        assert isinstance(facts, AccountFacts)
        recorded_at = row.updated_at = facts.timestamp.value
        entries = facts.ledger_entries()
        for entry in entries:
            self._entry(row, entry, recorded_at)
        self._partners(row, recorded, entries)
        return row

    def _partners(self, row: BalanceRow, recorded: Recorded, entries: list[Entry]) -> None:
        """Points moving in and out of the issuing partners' lots (partner_liability), and
        redemptions by who issued and who redeemed them (partner_settlement)."""
        facts = recorded.facts
        assert isinstance(facts, AccountFacts)
        sums, program_id = self.changes.sums, row.program_id
        for credit in facts.credits():
            issuer = sums.partner(program_id, credit.partner)
            issuer.issued += credit.points
            issuer.reversed += credit.debt_repaid  # never reached the lot: it repaid a debt
        for taken in _allocations(facts.taken):
            sums.partner(program_id, taken.partner).reversed += taken.points
        if recorded.cls is PatientAccount.PointsExpired:
            sums.partner(program_id, facts.partner).expired -= sum(e.points for e in entries)
        if facts.allocations is not None and facts.redemption_id is not None:
            self._redeemed(row, facts, entries)
        if facts.returned is not None and facts.redemption_id is not None:
            month = month_of(entries[0].occurred_at.value)  # the cancellation's
            cancellation = Cancellation(
                program_id,
                row.patient_id,
                facts.redemption_id,
                month,
                _by_issuer(_allocations(facts.returned)),
                _by_issuer(_allocations(facts.expired)),
            )
            key = (program_id, row.patient_id, facts.redemption_id)
            redemption = self.changes.redemptions.get(key)
            if redemption is None:  # in an earlier batch: the writer looks it up
                self.changes.cancellations.append(cancellation)
            else:
                sums.cancel(redemption, cancellation)

    def _redeemed(self, row: BalanceRow, facts: AccountFacts, entries: list[Entry]) -> None:
        assert facts.redemption_id is not None
        sums, program_id = self.changes.sums, row.program_id
        redeemer = facts.partner_id or ""
        month = month_of(entries[0].occurred_at.value)
        by_issuer = _by_issuer(_allocations(facts.allocations))
        for issuer, points in by_issuer.items():
            sums.partner(program_id, issuer).redeemed += points
            sums.settle(program_id, issuer, redeemer, month, points)
        key = (program_id, row.patient_id, facts.redemption_id)
        self.changes.redemptions[key] = Redemption(*key, redeemer, by_issuer)

    def _goal_days(self, row: BalanceRow, facts: AcceptedFacts) -> None:
        """A reading that met the goal adds its day; a void may take one away."""
        changes, account = self.changes, (row.program_id, row.patient_id)
        if facts.goal_day is not None:
            changes.goal_readings[(*account, facts.source, facts.source_id)] = facts.goal_day.value
            changes.goal_accounts.add(account)
        if facts.voided_key is not None:
            source, _, source_id = facts.voided_key.partition(KEY_SEPARATOR)
            key = (*account, source, source_id)
            if changes.goal_readings.pop(key, None) is None:
                changes.goal_voids.add(key)  # perhaps a goal reading of an earlier batch
            changes.goal_accounts.add(account)

    def _engagement(self, row: BalanceRow, facts: AcceptedFacts, month: date) -> None:
        """Counted by the rule that decided it: ``engagement.<action>`` gives the action."""
        entries = facts.ledger_entries()
        rule = entries[0].rule_id if entries else getattr(facts, "rule_id", None) or ""
        action = rule.removeprefix(ENGAGEMENT_RULES)
        delta = self.changes.sums.engaged(row.program_id, month, action)
        delta.interactions += 1
        if entries:
            delta.awarded += 1
            delta.points += sum(entry.points for entry in entries)

    def _accept(self, recorded: Recorded) -> BalanceRow:
        """What every accepted interaction does: activity, KPIs, qualifying points, spend."""
        row = self._account(recorded)
        facts = recorded.facts
        assert isinstance(facts, AcceptedFacts)
        changes, at = self.changes, facts.occurred_at.value
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
        row.qualifying_points = facts.qualifying_points
        if facts.spend_total is not None and facts.discount_percent is not None:
            # a payment, or the void of one: the spend and discount they leave
            row.spend_total = facts.spend_total.value.quantize(CENT)
            row.discount_percent = facts.discount_percent
        if facts.reward_unlocked is not None:  # a payment that unlocked a reward
            row.rewards_unlocked += 1
        active = facts.interaction not in NOT_ACTIVITY
        key = (program_id, patient_id, month_index(utc))
        changes.months[key] = changes.months.get(key, False) or active
        if active:
            changes.days.add((program_id, utc.date(), patient_id))
        if facts.goal_day is not None or facts.voided_key is not None:
            self._goal_days(row, facts)
        if facts.interaction == ENGAGEMENT:
            self._engagement(row, facts, month_of(utc))
        self._payment_wallets(row, facts)
        if facts.value_year is not None and facts.value is not None:  # a valued redemption
            back = recorded.cls is PatientAccount.RedemptionCancelled
            valued = (program_id, patient_id, facts.value_year, facts.payer_class or NO_CLASS)
            value = facts.value.value
            changes.sums.reward_value(valued, -1 if back else 1, -value if back else value)
        return row

    def _entry(self, row: BalanceRow, entry: Entry, recorded_at: datetime) -> None:
        size = abs(entry.points)
        row.available += entry.points
        occurred_at = entry.occurred_at.value
        kpi = self.changes.kpi(row.program_id, utc_day(occurred_at))
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
            case EntryKind.ADJUSTED:  # in available only: Balance has no lifetime for it
                kpi.points_adjusted += entry.points
        self._put(
            (
                entry.entry_id.value,
                row.program_id,
                row.patient_id,
                entry.kind,
                entry.points,
                entry.balance_after,
                entry.rule_id,
                entry.program_version,
                entry.source,
                _referenced(entry),
                occurred_at,
                recorded_at,
                entry.reason,
                entry.operator,
            )
        )

    def _put(self, record: tuple[Any, ...]) -> None:
        """One ``ledger_entries`` row, its values in the table's column order."""
        entry_id = record[0]
        if entry_id in self.changes.entries:
            raise DuplicateEntry(f"entry {entry_id} recorded twice")
        self.changes.entries[entry_id] = record


def _referenced(entry: Entry) -> str:
    """An entry's ``source_id``; a referral bonus naming an erased patient (whose key is
    gone) names nobody, as the erasure pass leaves it (projections.erasure)."""
    if entry.source == REFERRAL_SOURCE and entry.source_id.startswith(ERASED):
        return ERASED_INTERACTION
    return entry.source_id


def _allocations(wrapped: list[Wrapped[Allocation]] | None) -> list[Allocation]:
    return [allocation.value for allocation in wrapped or ()]


def _by_issuer(allocations: Iterable[Allocation]) -> dict[str, int]:
    """Points by issuing partner ('' for lots without one)."""
    points: dict[str, int] = {}
    for allocation in allocations:
        issuer = allocation.partner or ""
        points[issuer] = points.get(issuer, 0) + allocation.points
    return points


def accounts_to_load(batch: Iterable[Recorded]) -> set[UUID]:
    """Accounts the batch touches whose ``Opened`` is in an earlier batch (rows to load)."""
    touched: set[UUID] = set()
    opened: set[UUID] = set()
    for recorded in batch:
        facts = recorded.facts
        if type(facts) is OpenedFacts:
            opened.add(recorded.originator_id)
        elif isinstance(facts, AccountFacts):
            touched.add(recorded.originator_id)
    return touched - opened
