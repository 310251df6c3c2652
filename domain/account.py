"""A patient's account in one loyalty program: the ledger mechanics every point goes through.

The account keeps lots, debt, entries, the balance, usage of rule limits and its tier
history; *what* an interaction earns is asked of the rule engine (``domain.rules.engine``)
with the account's view at the interaction's event time, and the decision is recorded as
facts. Commands check their guards first and only then trigger events, so a refused
interaction leaves no trace. ``apply`` only replays facts: rebuilding an account from its
events never re-decides anything. Decisions use event time only; nothing here reads the
clock.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import errors, payer
from domain.entries import entries_of
from domain.ids import account_id, derived_id, interaction_key
from domain.interactions import (
    Adjustment,
    ConsentChange,
    CoverageChange,
    Engagement,
    Enrolment,
    ErasureRequest,
    Interaction,
    MembershipCancellation,
    MembershipPurchase,
    Payment,
    Prepayment,
    Purchase,
    RedemptionCancellation,
    RedemptionRequest,
    Referral,
    RewardUse,
    StepsReading,
    Visit,
    Void,
)
from domain.lots import spendable, take, trim
from domain.payer import NO_CLASS, REFERRAL_NOT_PERMITTED
from domain.program import Downgrade, Program, ProgramVersion
from domain.rewards import VOUCHER_VALIDITY, Membership, MoneyLot, Voucher, add_months, cents_down
from domain.rules import streaks
from domain.rules.engine import Decision, Payout, evaluate
from domain.rules.limits import Use
from domain.values import (
    Allocation,
    Award,
    Balance,
    Credit,
    EntryKind,
    Holdings,
    LedgerEntry,
    Lot,
    Receipt,
    RedemptionRecord,
    Standing,
)

ENTRY_KINDS = tuple(kind.value for kind in EntryKind)  # iterating an Enum is slow
DUPLICATE = "duplicate"
ACCEPTED = "accepted"
# Accounts opened before the starting tier was recorded on ``Opened`` all ran clinic-default.
LEGACY_STARTING_TIER = "bronze"
NOT_VOIDABLE = frozenset(
    {
        "redemption.requested",
        "redemption.cancelled",
        "interaction.voided",
        "points.adjusted",
        "consent.changed",
        "coverage.changed",
        # the rewards side has its own undo: cancel the redemption or the membership
        "reward.used",
        "membership.purchased",
        "membership.cancelled",
        "prepayment.recorded",
    }
)
# Interactions with mechanics of their own; every other kind is decided by earning rules.
MECHANICS = frozenset(
    {
        "patient.enrolled",
        "referral.made",
        "payment.recorded",
        "redemption.requested",
        "redemption.cancelled",
        "interaction.voided",
        "points.adjusted",
        "consent.changed",
        "coverage.changed",
    }
)

__all__ = ["ACCEPTED", "DUPLICATE", "PatientAccount", "entries_of"]


class PatientAccount(Aggregate):
    """The ledger of one pseudonymous patient in one program."""

    # ----------------------------------------------------------------- events
    class Opened(Aggregate.Created):
        program_id: str
        patient_id: str
        starting_tier: str = LEGACY_STARTING_TIER

    class Accepted(Aggregate.Event):
        """Base of the events that record an interaction as accepted (its dedupe key)."""

        source: str
        source_id: str
        interaction: str
        occurred_at: datetime
        qualifying_points: int

        def receipt(self) -> Receipt:
            return Receipt(kind=self.interaction, occurred_at=self.occurred_at)

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)

    class PatientEnrolled(Accepted):
        channel: str
        referred_by: str | None
        payer_class: str | None = None  # None: not told (and before payer classes existed)

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            if self.payer_class is not None:
                aggregate._change_payer(self.occurred_at, self.payer_class)

    class CoverageChanged(Accepted):
        """The patient's payer class from now on (``other`` until the first one is told)."""

        payer_class: str

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._change_payer(self.occurred_at, self.payer_class)

    class InteractionNoted(Accepted):
        """Accepted, but no rule paid: ``outcome`` is the reason code (a cap, no rule)."""

        outcome: str
        rule_id: str | None = None  # the rule whose limit or award decided it, if one did
        program_version: str | None = None
        goal_day: date | None = None  # a reading that met the program's daily goal
        reading_day: date | None = None  # an activity reading's day (met the goal or not)
        action: str | None = None  # an engagement's action code
        explains_nothing_paid = True

    class PointsEarned(Accepted):
        """Earning rules paid: one award (a lot and an entry) per rule."""

        awards: list[Award]
        program_version: str | None = None
        goal_day: date | None = None  # a reading that met the program's daily goal
        reading_day: date | None = None  # an activity reading's day (met the goal or not)
        action: str | None = None  # an engagement's action code
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 carried one rule's award in ``rule_id``, ``base_points``, ``slot``
            and ``credit`` (a ``steps:<day>`` slot was the award's step day)."""
            slot = state.pop("slot")
            group = slot.removeprefix("steps:") if slot and slot.startswith("steps:") else None
            base = state.pop("base_points")
            rule_id = state.pop("rule_id")
            credit = state.pop("credit")
            state["awards"] = [Award(rule_id, base, base, (rule_id,), group, credit)]

        @property
        def credit(self) -> Credit:
            """The first award's credit."""
            return self.awards[0].credit

        def receipt(self) -> Receipt:
            return Receipt(
                kind=self.interaction,
                occurred_at=self.occurred_at,
                lot_ids=tuple(a.credit.lot_id for a in self.awards),
                points=sum(a.credit.points for a in self.awards),
                qualifying=sum(a.qualifying for a in self.awards),
                awards=tuple(self.awards),
            )

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            for award in self.awards:
                aggregate._credit(award.credit)
                aggregate._use(award, self.occurred_at, self.source, self.source_id)

    class PointsAdjusted(Accepted):
        """Staff corrected the balance: a credit is a new lot, a debit takes from lots."""

        adjustment_id: str
        credit: Credit | None
        taken: list[Allocation]
        debt_added: int
        entry: LedgerEntry | None

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            if self.credit is not None:
                aggregate._credit(self.credit)
            else:
                aggregate._draw(self.taken)
                aggregate.debt += self.debt_added
                assert self.entry is not None
                aggregate._count(self.entry)

    class ConsentChanged(Accepted):
        """The patient's marketing consent from now on (off until the first of these)."""

        marketing: bool

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            changes = aggregate.consent_changes
            insort(changes, (self.occurred_at, len(changes), self.marketing))

    class AccountErased(Accepted):
        """The patient was forgotten: the account is closed for good (ADR 0015).

        Available points are forfeited by ``entry`` (taken from ``taken``); the money wallets
        are owed to the patient (``owed_cashback``, ``owed_prepaid``: a settlement, never
        forfeited); issued vouchers are cancelled and memberships end. (No event per voucher
        or membership: their ids are sealed with the key this erasure destroys, so a reader
        could not match them to the ones it saw before; the read models drop those rows.)
        """

        reason: str
        taken: list[Allocation]
        entry: LedgerEntry | None
        owed_cashback: Decimal
        owed_prepaid: Decimal
        explains_nothing_paid = True  # with no points to forfeit, the statement says why

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._draw(self.taken)
            if self.entry is not None:
                aggregate._count(self.entry)
            aggregate.cashback_lots.clear()
            aggregate.cashback_balance = Decimal("0.00")
            aggregate.prepaid_balance = Decimal("0.00")
            for voucher in aggregate.vouchers.values():
                if voucher.status == "issued":
                    voucher.status = "cancelled"
            for membership in aggregate.memberships.values():
                membership.status = "lapsed"
            aggregate.closed = True

    class StreakBonusEarned(Aggregate.Event):
        """A block of consecutive goal days is complete: its bonus, dated at the reading that
        completed it (not multiplied, not qualifying, outside the rules' limits)."""

        start_day: date
        credit: Credit

        def apply(self, aggregate: Any) -> None:
            aggregate._credit(self.credit)
            aggregate.streak_paid[self.start_day] = (self.credit.lot_id, self.credit.points)
            aggregate.streak_payments[self.start_day] = (
                aggregate.streak_payments.get(self.start_day, 0) + 1
            )

    class StreakBonusReversed(Aggregate.Event):
        """A paid block is no longer a block of its run (a late reading joined two runs, or a
        void broke one): its bonus is taken back, its own lot first."""

        start_day: date
        taken: list[Allocation]
        debt_added: int
        entry: LedgerEntry

        def apply(self, aggregate: Any) -> None:
            aggregate._draw(self.taken)
            aggregate.debt += self.debt_added
            aggregate._count(self.entry)
            del aggregate.streak_paid[self.start_day]

    class VoucherIssued(Aggregate.Event):
        """A redemption of a catalogue reward (or a stamp card's Nth payment) issued a voucher."""

        voucher_id: str
        reward_id: str
        points: int
        issued_at: datetime
        expires_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.vouchers[self.voucher_id] = Voucher(
                self.voucher_id, self.reward_id, self.points, self.issued_at, self.expires_at
            )

    class VoucherUsed(Accepted):
        voucher_id: str
        location_id: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            voucher = aggregate.vouchers[self.voucher_id]
            voucher.status, voucher.used_at = "used", self.occurred_at

    class VoucherEnded(Aggregate.Event):
        """A voucher was cancelled with its redemption, or expired unused (maintenance)."""

        voucher_id: str
        status: str  # "cancelled" | "expired"
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.vouchers[self.voucher_id].status = self.status

    class MembershipStarted(Accepted):
        membership_id: str
        plan_id: str
        amount: Decimal
        started_at: datetime
        paid_through: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            membership = aggregate.memberships.get(self.membership_id)
            if membership is None:  # a lapsed membership bought again keeps its history
                membership = Membership(
                    self.membership_id, self.plan_id, self.started_at, self.paid_through
                )
                aggregate.memberships[self.membership_id] = membership
            membership.status, membership.paid_through = "active", self.paid_through
            membership.plan_id = self.plan_id
            membership.periods.append((self.started_at, self.paid_through))

    class MembershipRenewed(Accepted):
        membership_id: str
        amount: Decimal
        paid_through: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            membership = aggregate.memberships[self.membership_id]
            start, _ = membership.periods[-1]
            membership.periods[-1] = (start, self.paid_through)
            membership.paid_through = self.paid_through

    class MembershipCancelled(Accepted):
        """No refund: the membership stays active until its paid-through date."""

        membership_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            membership = aggregate.memberships[self.membership_id]
            membership.status, membership.cancelled_at = "cancelled", self.occurred_at

    class MembershipLapsed(Aggregate.Event):
        membership_id: str
        at: datetime  # its paid-through date

        def apply(self, aggregate: Any) -> None:
            aggregate.memberships[self.membership_id].status = "lapsed"

    class BenefitsChanged(Aggregate.Event):
        """The benefit codes the patient holds (from the tier and a membership) changed."""

        benefits: list[str]
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.benefits = tuple(self.benefits)

    class PrepaymentRecorded(Accepted):
        amount: Decimal
        prepaid_balance: Decimal

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate.prepaid_balance = self.prepaid_balance
            insort(aggregate.prepayments, (self.occurred_at, self.amount))

    class CashbackExpired(Aggregate.Event):
        lot_id: str
        amount: Decimal
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.cashback_lots.pop(self.lot_id)
            aggregate.cashback_balance -= self.amount

    class ExpiryNoticeDue(Aggregate.Event):
        """A lot expires within the program's notice period and the patient consents to
        hear about it: the outbound feed tells them, once per lot."""

        lot_id: UUID
        expires_at: datetime
        points: int
        as_of: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.expiry_noticed.add(self.lot_id)

    class PointsRedeemed(Accepted):
        redemption_id: str
        reward_id: str
        allocations: list[Allocation]
        entry: LedgerEntry
        partner_id: str | None = None  # where it was redeemed (None: home, or no coalition)
        counters: list[str] | None = None  # the catalogue reward's limit counters
        # Its money value (None: unknown, or recorded before rewards had one), the payer
        # class in force and the calendar year (program time zone) payer caps count it in.
        value: Decimal | None = None
        payer_class: str | None = None
        value_year: int | None = None

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._redeem(self)

    class RedemptionRejected(Accepted):
        redemption_id: str
        reward_id: str
        points: int
        reason: str
        available: int
        program_version: str | None = None  # recorded since programs became versioned
        explains_nothing_paid = True

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate.redemptions[self.redemption_id] = RedemptionRecord(
                self.redemption_id, "rejected", self.points
            )

    class RedemptionCancelled(Accepted):
        redemption_id: str
        returned: list[Allocation]
        expired: list[Allocation]
        debt_repaid: int
        entries: list[LedgerEntry]
        # the cancelled redemption's value, class and year (what it no longer counts)
        value: Decimal | None = None
        payer_class: str | None = None
        value_year: int | None = None

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._cancel(self)

    class InteractionVoided(Accepted):
        voided_key: str
        reason: str
        taken: list[Allocation]
        debt_added: int
        entry: LedgerEntry | None
        spend_total: Decimal | None  # set when a payment is voided
        discount_percent: int | None

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._void(self)

    class PaymentRecorded(Accepted):
        amount: Decimal
        currency: str
        spend_total: Decimal
        discount_percent: int
        payments: int
        reward_unlocked: str | None
        cashback_earned: Decimal | None = None  # into a cashback lot (id: the entry's cause)
        cashback_expires_at: datetime | None = None
        cashback_drawn: list[tuple[str, Decimal]] | None = None  # (lot, amount), soonest first
        prepaid_drawn: Decimal | None = None
        prepayment_discount_percent: int | None = None

        def receipt(self) -> Receipt:
            return Receipt(kind=self.interaction, occurred_at=self.occurred_at, amount=self.amount)

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate.spend_total = self.spend_total
            aggregate.payments = self.payments
            if self.reward_unlocked is not None:
                aggregate.rewards_unlocked += 1
            aggregate._apply_wallets(self)

    class ReferralMade(Accepted):
        referee: str

    class ReferralRecorded(Aggregate.Event):
        """The account's referrer is known (from its enrolment or the referrer's own event)."""

        referrer: str
        referred_at: datetime
        source: str
        source_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.referrer = self.referrer
            aggregate.referred_at = self.referred_at

    class ReferralQualified(Aggregate.Event):
        """The referee's first visit fell in the window: the referee's bonus is paid."""

        referrer: str
        qualified_at: datetime
        credit: Credit | None
        withheld: str | None = None  # why neither side is paid (payer rules), if so

        def apply(self, aggregate: Any) -> None:
            aggregate.referral_qualified = True
            if self.credit is not None:
                aggregate._credit(self.credit)

    class ReferralBonusWithheld(Aggregate.Event):
        """A referral qualified but its bonus to this side may not be paid (a federal payer
        class): a zero statement line with ``reason``, once per referral and side."""

        source: str  # careledger:referral
        source_id: str  # the other side's patient id
        occurred_at: datetime  # the qualifying visit
        rule_id: str  # referral.referee | referral.referrer
        reason: str
        program_version: str
        explains_nothing_paid = True

        def apply(self, aggregate: Any) -> None:
            if self.rule_id == "referral.referrer":
                aggregate.referees_paid.add(self.source_id)

    class ReferrerBonusEarned(Aggregate.Event):
        referee: str
        credit: Credit

        def apply(self, aggregate: Any) -> None:
            aggregate.referees_paid.add(self.referee)
            aggregate._credit(self.credit)

    class PointsExpired(Aggregate.Event):
        lot_id: UUID
        entry: LedgerEntry
        partner: str | None = None  # the partner that issued the lot

        def apply(self, aggregate: Any) -> None:
            aggregate._expire(self)

    class QualifyingPointsChanged(Aggregate.Event):
        """Maintenance moved the qualifying window past earlier points."""

        as_of: datetime
        qualifying_points: int

        def apply(self, aggregate: Any) -> None:
            aggregate.qualifying_now = self.qualifying_points
            aggregate.qualifying_as_of = self.as_of

    class TierChanged(Aggregate.Event):
        from_tier: str
        to_tier: str
        occurred_at: datetime
        reason: str
        qualifying_points: int

        def apply(self, aggregate: Any) -> None:
            aggregate._change_tier(self.to_tier, self.occurred_at)

    class TierGraceStarted(Aggregate.Event):
        """Maintenance found the account below its tier's threshold: the grace period runs."""

        tier: str
        as_of: datetime
        qualifying_points: int

        def apply(self, aggregate: Any) -> None:
            aggregate.below_since = self.as_of

    class TierGraceCleared(Aggregate.Event):
        """Maintenance found the account back at its tier's threshold within the grace."""

        tier: str
        as_of: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.below_since = None

    # ------------------------------------------------------------ construction
    @classmethod
    def open(cls, program: Program, patient_id: str, id: UUID | None = None) -> PatientAccount:
        """Open the account a patient gets on first contact with a program (``id``: the
        random id the ledger's directory gave it; else derived from the patient, ADR 0015)."""
        return cls._create(
            cls.Opened,
            id=id or account_id(program.program_id, patient_id),
            program_id=program.program_id,
            patient_id=patient_id,
            starting_tier=program.starting_tier,
        )

    def __init__(
        self, program_id: str, patient_id: str, starting_tier: str = LEGACY_STARTING_TIER
    ) -> None:
        self.program_id = program_id
        self.patient_id = patient_id
        self.tier = starting_tier
        self.starting_tier = starting_tier
        # Tier changes by event time (ties in arrival order), for the tier held at a time.
        self.tier_changes: list[tuple[datetime, int, str]] = []
        self.below_since: datetime | None = None
        self.available = 0
        self.debt = 0
        self.lots: dict[UUID, Lot] = {}
        self.receipts: dict[str, Receipt] = {}
        self.redemptions: dict[str, RedemptionRecord] = {}
        # Qualifying points by event time: times kept sorted with running totals, so a window
        # sum is two binary searches instead of a pass over the whole history.
        self.qualifying_times: list[datetime] = []
        self.qualifying_totals: list[int] = [0]
        self.usage: dict[str, list[Use]] = {}  # awards by limit counter, by event time
        self.group_paid: dict[tuple[str, str], int] = {}  # base points by (rule, group)
        self.spend_total = Decimal("0")
        self.payments = 0
        self.rewards_unlocked = 0
        self.referrer: str | None = None
        self.referred_at: datetime | None = None
        self.referral_qualified = False
        self.first_visit_at: datetime | None = None
        self.referees_paid: set[str] = set()
        self.expired_lots: set[UUID] = set()
        self.expiry_noticed: set[UUID] = set()
        self.vouchers: dict[str, Voucher] = {}
        self.memberships: dict[str, Membership] = {}
        self.benefits: tuple[str, ...] = ()
        self.cashback_lots: dict[str, MoneyLot] = {}
        self.cashback_balance = Decimal("0.00")
        self.prepaid_balance = Decimal("0.00")
        self.prepayments: list[tuple[datetime, Decimal]] = []
        # Goal days: the readings that met the goal, by day; the days, sorted; streak blocks
        # paid (first day -> bonus lot and points) and how often each was paid (entry ids).
        self.goal_readings: dict[date, set[str]] = {}
        self.goal_days: list[date] = []
        self.streak_paid: dict[date, tuple[UUID, int]] = {}
        self.streak_payments: dict[date, int] = {}
        # Marketing consent by event time (ties in arrival order); off until the first.
        self.consent_changes: list[tuple[datetime, int, bool]] = []
        # Payer classes by event time (ties in arrival order); ``other`` until the first.
        self.payer_changes: list[tuple[datetime, int, str]] = []
        # A lower bound on the next lot expiry (None: unknown), a cache kept by apply().
        self._expiry_floor: datetime | None = None
        self.lifetime = dict.fromkeys(ENTRY_KINDS, 0)
        self.latest_event_at: datetime | None = None
        self.qualifying_now = 0
        self.qualifying_as_of: datetime | None = None
        self.closed = False  # closed by erasure: nothing is accepted any more

    # ---------------------------------------------------------------- commands
    def handle(self, interaction: Interaction, program: Program) -> str:
        """Apply one interaction; returns ``"accepted"`` or ``"duplicate"``.

        Raises a :class:`~domain.errors.LedgerError` (and changes nothing) when the
        interaction must be refused.
        """
        if interaction_key(interaction.source, interaction.source_id) in self.receipts:
            return DUPLICATE
        if self.closed:
            raise errors.SubjectErased("the account was closed by an erasure request")
        version = program.at(interaction.occurred_at)
        self._check(interaction, version)
        self._expire_due(interaction.occurred_at, program)
        match interaction:
            case Enrolment():
                self._on_enrolment(interaction, program)
            case Referral():
                self._trigger_accepted(
                    program, self.ReferralMade, interaction, referee=interaction.referee
                )
            case Payment():
                self._on_payment(interaction, program, version)
            case RedemptionRequest():
                self._on_redemption(interaction, program, version)
            case RedemptionCancellation():
                self._on_cancellation(interaction, program, version)
            case Void():
                self._on_void(interaction, program, version)
            case Adjustment():
                self._on_adjustment(interaction, program, version)
            case ConsentChange():
                self._trigger_accepted(
                    program, self.ConsentChanged, interaction, marketing=interaction.marketing
                )
            case CoverageChange():
                self._trigger_accepted(
                    program,
                    self.CoverageChanged,
                    interaction,
                    payer_class=interaction.payer_class,
                )
            case RewardUse():
                self._trigger_accepted(
                    program,
                    self.VoucherUsed,
                    interaction,
                    voucher_id=interaction.redemption_id,
                    location_id=interaction.location_id,
                )
            case MembershipPurchase():
                self._on_membership_purchase(interaction, program, version)
            case MembershipCancellation():
                self._trigger_accepted(
                    program,
                    self.MembershipCancelled,
                    interaction,
                    membership_id=interaction.membership_id,
                )
            case ErasureRequest():
                self._on_erasure(interaction, program, version)
                return ACCEPTED
            case Prepayment():
                self._trigger_accepted(
                    program,
                    self.PrepaymentRecorded,
                    interaction,
                    amount=interaction.amount,
                    prepaid_balance=self.prepaid_balance + interaction.amount,
                )
            case _:
                self._on_earning(interaction, program, version)
        self._refresh_benefits(interaction.occurred_at, version)
        return ACCEPTED

    def decide(self, interaction: Interaction, program: Program) -> Decision:
        """What the rules in force at the interaction's time would pay it now (no change)."""
        version = program.at(interaction.occurred_at)
        return evaluate(version, program.timezone, self, interaction)

    def maintain(self, as_of: datetime, program: Program) -> None:
        """The close-of-day job: expire lots due by ``as_of``, then review the tier.

        Running it again for the same ``as_of`` changes nothing; a closed account is left.
        """
        if self.closed:
            return
        self._expire_due(as_of, program)
        version = program.at(as_of)
        qualifying = self._qualifying_between(as_of - version.qualifying_window, as_of)
        moved_on = self.qualifying_as_of is None or as_of >= self.qualifying_as_of
        if moved_on and qualifying != self.qualifying_now:
            self.trigger_event(
                self.QualifyingPointsChanged, as_of=as_of, qualifying_points=qualifying
            )
        measure = qualifying
        if version.qualification_basis == "goal_days":  # the window ending the day before
            yesterday = as_of.astimezone(program.timezone).date() - timedelta(days=1)
            window = version.qualifying_window.days
            measure = streaks.count_in_window(self.goal_days, yesterday, window)
        self._review_tier(as_of, version, measure)
        self._maintain_rewards(as_of)
        self._refresh_benefits(as_of, version)
        if self.consents_at(as_of):
            self._notice_expiring(as_of, version)

    def note_referral(
        self, referrer: str, referred_at: datetime, source: str, source_id: str, program: Program
    ) -> None:
        """Record who referred this patient; the first referrer recorded stands."""
        if referrer == self.patient_id:
            raise errors.SelfReferral("a patient cannot refer themselves")
        if self.referrer is not None or self.closed:
            return
        self.trigger_event(
            self.ReferralRecorded,
            referrer=referrer,
            referred_at=referred_at,
            source=source,
            source_id=source_id,
        )
        self._check_referral_qualifies(program)

    def pay_referrer_bonus(
        self,
        referee: str,
        qualified_at: datetime,
        program: Program,
        withheld: str | None = None,
    ) -> None:
        """Pay this (referring) account for a referee that qualified; once per referee.

        ``withheld``: the referee's side found the bonus not permitted (its payer class at
        the qualifying visit); this side also withholds it when its own class then is held
        to payer rules that forbid referral bonuses."""
        version = program.at(qualified_at)
        if referee in self.referees_paid or not version.referral.enabled or self.closed:
            return
        withheld = withheld or self._referral_withheld(qualified_at, version)
        if withheld is not None:
            self._withhold_referral(referee, qualified_at, "referral.referrer", version)
            return
        (credit,) = self._credits(
            version,
            [(version.referral.referrer_bonus, EntryKind.BONUS, "referral.referrer")],
            source="careledger:referral",
            source_id=referee,
            occurred_at=qualified_at,
        )
        self.trigger_event(self.ReferrerBonusEarned, referee=referee, credit=credit)

    # ----------------------------------------------------------------- queries
    def qualifying_points(self, as_of: datetime, program: Program) -> int:
        """Earning-rule points, net of reversals, with event time in (as_of - window, as_of]."""
        return self._qualifying_between(as_of - program.at(as_of).qualifying_window, as_of)

    def _qualifying_between(self, start: datetime, end: datetime) -> int:
        """The qualifying points with event time in (start, end]."""
        times, totals = self.qualifying_times, self.qualifying_totals
        return totals[bisect_right(times, end)] - totals[bisect_right(times, start)]

    def tier_at(self, at: datetime) -> str:
        """The tier the account held at ``at``, by its own tier history.

        An interaction at or after the latest change sees the current tier; a backdated one
        sees the tier in force at its event time.
        """
        changes = self.tier_changes
        if not changes or at >= changes[-1][0]:
            return self.tier
        index = bisect_right(changes, at, key=lambda change: change[0])
        return changes[index - 1][2] if index else self.starting_tier

    def consents_at(self, at: datetime) -> bool:
        """Whether the patient consented to marketing messages at ``at``."""
        index = bisect_right(self.consent_changes, at, key=lambda change: change[0])
        return self.consent_changes[index - 1][2] if index else False

    def payer_class_at(self, at: datetime) -> str:
        """The payer class in force at ``at``, by the account's coverage history."""
        index = bisect_right(self.payer_changes, at, key=lambda change: change[0])
        return self.payer_changes[index - 1][2] if index else NO_CLASS

    @property
    def payer_class(self) -> str:
        """The latest payer class by event time."""
        return self.payer_changes[-1][2] if self.payer_changes else NO_CLASS

    def standing(self) -> Standing:
        """The latest marketing consent by event time (and since when) and payer class."""
        marketing, since = False, None
        if self.consent_changes:
            since, _, marketing = self.consent_changes[-1]
        return Standing(marketing, since, self.payer_class)

    def uses(self, counter: str) -> list[Use]:
        """The awards a limit counter has paid, by event time."""
        return self.usage.get(counter, [])

    def paid_in_group(self, rule_id: str, group: str) -> int:
        """The base points ``rule_id`` has paid in ``group`` (a step day)."""
        return self.group_paid.get((rule_id, group), 0)

    def balance(self, program: Program) -> Balance:
        """The account's balance.

        Qualifying points are as of the later of the latest accepted interaction and the
        latest maintenance that changed them.
        """
        live = [lot for lot in self.lots.values() if lot.remaining > 0]
        version = program.at(self.latest_event_at) if self.latest_event_at else program.latest
        return Balance(
            patient_id=self.patient_id,
            program_id=self.program_id,
            available=self.available,
            tier=self.tier,
            qualifying_points=self.qualifying_now,
            lifetime_earned=self.lifetime["earned"] + self.lifetime["bonus"],
            lifetime_redeemed=self.lifetime["redeemed"] - self.lifetime["returned"],
            lifetime_expired=self.lifetime["expired"],
            lifetime_reversed=self.lifetime["reversed"],
            discount_percent=version.spend.discount_percent(self.spend_total),
            spend_total=self.spend_total.quantize(Decimal("0.01")),
            rewards_unlocked=self.rewards_unlocked,
            next_expiry=min((lot.expires_at for lot in live), default=None),
        )

    # ---------------------------------------------------------------- handlers
    def _check(self, interaction: Interaction, version: ProgramVersion) -> None:
        """Guards that refuse an interaction outright (before anything changes)."""
        match interaction:
            case Referral(referee=referee) | Enrolment(referred_by=referee) if (
                referee == self.patient_id
            ):
                raise errors.SelfReferral("a patient cannot refer themselves")
            case RedemptionCancellation(redemption_id=rid):
                record = self.redemptions.get(rid)
                if record is None:
                    raise errors.UnknownRedemption("no such redemption on this account")
                if record.status != "redeemed":
                    raise errors.RedemptionNotCancellable(f"the redemption is {record.status}")
            case Void(voided_source=vsource, voided_id=vid):
                receipt = self.receipts.get(interaction_key(vsource, vid))
                if receipt is None:
                    raise errors.UnknownInteraction("no such interaction on this account")
                if receipt.voided:
                    raise errors.InteractionNotVoidable("the interaction is already voided")
                if receipt.kind in NOT_VOIDABLE:
                    raise errors.InteractionNotVoidable(
                        f"{receipt.kind} cannot be voided (cancel redemptions, adjust again)"
                    )
            case Payment(currency=currency) | Purchase(currency=currency) if (
                currency != version.spend.currency
            ):
                raise errors.CurrencyMismatch(f"amounts must be in {version.spend.currency}")
            case Purchase(partner_id=partner) | RedemptionRequest(partner_id=partner) if (
                partner is not None and version.partner(partner) is None
            ):
                raise errors.UnknownPartner("partner_id: not a partner of this program")
            case _:
                pass
        self._check_rewards(interaction, version)

    def _check_rewards(self, interaction: Interaction, version: ProgramVersion) -> None:
        """Guards of the rewards side: catalogue, vouchers, memberships, money wallets."""
        at = interaction.occurred_at
        match interaction:
            case RedemptionRequest(reward_id=reward_id, points=points):
                reward = version.catalogue.get(reward_id)
                if version.catalogue and reward is None:
                    raise errors.UnknownReward("reward_id: not a reward of this catalogue")
                if reward is not None and points is not None and points != reward.points:
                    raise errors.PriceMismatch("points: not the reward's price")
                if reward is None and points is None:
                    raise errors.MissingPoints("points: required without a catalogue")
            case RedemptionCancellation(redemption_id=rid) if (
                rid in self.vouchers and self.vouchers[rid].status == "used"
            ):
                raise errors.VoucherUsed("the voucher of this redemption was used")
            case RewardUse(redemption_id=rid):
                voucher = self.vouchers.get(rid)
                if voucher is None:
                    raise errors.UnknownVoucher("redemption_id: no voucher of this account")
                if voucher.status == "used":
                    raise errors.VoucherUsed("the voucher was used already")
                if voucher.status == "cancelled":
                    raise errors.VoucherCancelled("the voucher's redemption was cancelled")
                if voucher.status == "expired" or at >= voucher.expires_at:
                    raise errors.VoucherExpired("the voucher has expired")
            case MembershipPurchase(plan_id=plan_id, amount=amount, currency=currency):
                plan = version.plans.get(plan_id)
                if plan is None:
                    raise errors.UnknownPlan("plan_id: not a plan of this program")
                if currency != version.spend.currency:
                    raise errors.CurrencyMismatch(f"amounts must be in {version.spend.currency}")
                if amount != plan.price:
                    raise errors.PriceMismatch("amount: not the plan's price")
            case MembershipCancellation(membership_id=mid):
                membership = self.memberships.get(mid)
                if membership is None:
                    raise errors.UnknownMembership("membership_id: no such membership")
                if membership.status != "active":
                    raise errors.MembershipNotActive(f"the membership is {membership.status}")
            case Prepayment(currency=currency) if currency != version.spend.currency:
                raise errors.CurrencyMismatch(f"amounts must be in {version.spend.currency}")
            case Payment(cashback_used=cashback, prepaid_used=prepaid):
                if cashback is not None and cashback > self._cashback_at(at):
                    raise errors.InsufficientCashback("cashback_used: more than the wallet holds")
                if prepaid is not None and prepaid > self.prepaid_balance:
                    raise errors.InsufficientPrepaid("prepaid_used: more than the wallet holds")
            case _:
                pass

    def _on_earning(
        self, interaction: Interaction, program: Program, version: ProgramVersion
    ) -> None:
        """Ask the rules in force at the event time what the interaction earns, and record it."""
        decision = evaluate(version, program.timezone, self, interaction)
        goal = version.activity
        goal_day = None
        if goal is not None and isinstance(interaction, StepsReading):
            goal_day = interaction.day if interaction.steps >= goal.goal_steps else None
        new_goal_day = goal_day is not None and goal_day not in self.goal_readings
        described: dict[str, Any] = {}  # what read models count (never free text: codes, days)
        if isinstance(interaction, StepsReading):
            described["reading_day"] = interaction.day
        elif isinstance(interaction, Engagement):
            described["action"] = interaction.action
        excluded = None
        if isinstance(interaction, Purchase):  # a category the payer rules never pay?
            payer_class = self.payer_class_at(interaction.occurred_at)
            excluded = payer.purchase_refusal(version.payer, payer_class, interaction.category)
        if excluded is not None:
            self._note(program, version, interaction, excluded)
        elif not decision.payouts:
            deciding = next(
                (s.rule_id for s in decision.steps if s.outcome == decision.reason), None
            )
            self._trigger_accepted(
                program,
                self.InteractionNoted,
                interaction,
                outcome=decision.reason,
                rule_id=deciding,
                program_version=version.version,
                goal_day=goal_day,
                **described,
            )
        else:
            self._pay(interaction, program, version, decision.payouts, goal_day, described)
        if new_goal_day and goal_day is not None:
            self._settle_activity(interaction, program, version, goal_day)
        if interaction.kind == Visit.kind:
            self._check_referral_qualifies(program)

    def _pay(
        self,
        interaction: Interaction,
        program: Program,
        version: ProgramVersion,
        payouts: tuple[Payout, ...],
        goal_day: date | None = None,
        described: dict[str, Any] | None = None,
    ) -> None:
        """Credit each payout as its own lot and entry, then upgrade if a threshold was crossed."""
        at = interaction.occurred_at
        credits = self._credits(
            version,
            [(p.points, EntryKind.EARNED, p.rule_id) for p in payouts],
            source=interaction.source,
            source_id=interaction.source_id,
            occurred_at=at,
            partner=getattr(interaction, "partner_id", None),
        )
        awards = [
            Award(
                p.rule_id,
                p.base_points,
                p.qualifying,
                tuple(dict.fromkeys((p.rule_id, *p.counters))),
                p.group,
                c,
                p.limit,
            )
            for p, c in zip(payouts, credits, strict=True)
        ]
        qualifying = sum(a.qualifying for a in awards)
        self._trigger_accepted(
            program,
            self.PointsEarned,
            interaction,
            qualifying_delta=(at, qualifying) if qualifying else None,
            awards=awards,
            program_version=version.version,
            goal_day=goal_day,
            **(described or {}),
        )
        self._upgrade_if_reached(at, program)

    def _on_enrolment(self, enrolment: Enrolment, program: Program) -> None:
        self._trigger_accepted(
            program,
            self.PatientEnrolled,
            enrolment,
            channel=enrolment.channel,
            referred_by=enrolment.referred_by,
            payer_class=enrolment.payer_class,
        )
        if enrolment.referred_by is not None:
            self.note_referral(
                enrolment.referred_by,
                enrolment.occurred_at,
                enrolment.source,
                enrolment.source_id,
                program,
            )

    def _on_payment(self, payment: Payment, program: Program, version: ProgramVersion) -> None:
        spend = version.spend
        spend_total = self.spend_total + payment.amount
        payments = self.payments + 1
        unlocks = payments // spend.reward_every_payments > self.rewards_unlocked
        at = payment.occurred_at
        self._expire_cashback(at)
        self._trigger_accepted(
            program,
            self.PaymentRecorded,
            payment,
            amount=payment.amount,
            currency=payment.currency,
            spend_total=spend_total,
            discount_percent=spend.discount_percent(spend_total),
            payments=payments,
            reward_unlocked=spend.reward_id if unlocks else None,
            **self._wallet_facts(payment, version),
        )
        if unlocks and spend.reward_validity is not None:  # a stamp card's voucher
            self.trigger_event(
                self.VoucherIssued,
                voucher_id=f"{spend.reward_id}:{self.rewards_unlocked}",
                reward_id=spend.reward_id,
                points=0,
                issued_at=at,
                expires_at=at + spend.reward_validity,
            )

    def _on_redemption(
        self, request: RedemptionRequest, program: Program, version: ProgramVersion
    ) -> None:
        if request.redemption_id in self.redemptions:
            self._note(program, version, request, "redemption_id_repeated")
            return
        partner = request.partner_id or version.home_partner
        elsewhere = version.exclusive_partners - {partner}  # sub-ledgers spent only at home
        available = min(self.available, spendable(self.lots, elsewhere))
        reward = version.catalogue.get(request.reward_id)
        points = reward.points if reward is not None else request.points
        assert points is not None  # checked: a free-form redemption names its points
        refusal = None
        if reward is not None:
            refusal = self._reward_refusal(request, reward, version, program)
        valued = self._valued(request, reward, points, program)
        if refusal is None:
            refusal = payer.cap_refusal(version.payer, valued, self.redemptions.values())
        if refusal is None and available < points:
            refusal = "insufficient_points"
        if refusal is not None:
            self._trigger_accepted(
                program,
                self.RedemptionRejected,
                request,
                redemption_id=request.redemption_id,
                reward_id=request.reward_id,
                points=points,
                reason=refusal,
                available=available,
                program_version=version.version,
            )
            return
        allocations = list(take(self.lots, points, skip_partners=elsewhere))
        entry = self._entry(request, version, EntryKind.REDEEMED, -points, "redemption", "redeemed")
        self._trigger_accepted(
            program,
            self.PointsRedeemed,
            request,
            redemption_id=request.redemption_id,
            reward_id=request.reward_id,
            allocations=allocations,
            entry=entry,
            partner_id=partner,
            counters=[limit.counter for limit in reward.limits] if reward else None,
            value=valued.value,
            payer_class=valued.payer_class,
            value_year=valued.year,
        )
        if reward is not None:
            self.trigger_event(
                self.VoucherIssued,
                voucher_id=request.redemption_id,
                reward_id=reward.reward_id,
                points=points,
                issued_at=request.occurred_at,
                expires_at=request.occurred_at + VOUCHER_VALIDITY,
            )

    def _on_cancellation(
        self, cancel: RedemptionCancellation, program: Program, version: ProgramVersion
    ) -> None:
        record = self.redemptions[cancel.redemption_id]
        at = cancel.occurred_at
        # A lot is dead for returns if it is due by the cancellation's time or has already
        # been expired (a late cancellation must not bring an expired lot back to life).
        live = [
            a for a in record.allocations if a.expires_at > at and a.lot_id not in self.expired_lots
        ]
        dead = [a for a in record.allocations if a not in live]
        returning = sum(a.points for a in live)
        debt_repaid = min(self.debt, returning)
        returned = list(trim(live, debt_repaid))
        entries = [
            self._entry(
                cancel,
                version,
                EntryKind.RETURNED,
                record.points,
                "redemption.cancel",
                "returned",
                balance_after=self.available + record.points,
            )
        ]
        expired_points = sum(a.points for a in dead)
        if expired_points:
            entries.append(
                self._entry(
                    cancel,
                    version,
                    EntryKind.EXPIRED,
                    -expired_points,
                    "expiry",
                    "expired",
                    balance_after=self.available + returning,
                )
            )
        self._trigger_accepted(
            program,
            self.RedemptionCancelled,
            cancel,
            redemption_id=cancel.redemption_id,
            returned=returned,
            expired=dead,
            debt_repaid=debt_repaid,
            entries=entries,
            value=record.value,
            payer_class=record.payer_class,
            value_year=record.value_year,
        )
        voucher = self.vouchers.get(cancel.redemption_id)
        if voucher is not None and voucher.status == "issued":
            self.trigger_event(
                self.VoucherEnded, voucher_id=voucher.voucher_id, status="cancelled", at=at
            )

    def _on_void(self, void: Void, program: Program, version: ProgramVersion) -> None:
        key = interaction_key(void.voided_source, void.voided_id)
        receipt = self.receipts[key]
        points = receipt.points
        taken: list[Allocation] = []
        debt_added = 0
        entry = None
        if points:
            taken, debt_added = self._debit(points, prefer=receipt.lot_ids)
            entry = self._entry(void, version, EntryKind.REVERSED, -points, "void", "reversed")
        spend_total = discount = None
        if receipt.amount is not None:
            spend_total = self.spend_total - receipt.amount
            discount = version.spend.discount_percent(spend_total)
        reversal = (receipt.occurred_at, -receipt.qualifying) if receipt.qualifying else None
        self._trigger_accepted(
            program,
            self.InteractionVoided,
            void,
            qualifying_delta=reversal,
            voided_key=key,
            reason=void.reason,
            taken=taken,
            debt_added=debt_added,
            entry=entry,
            spend_total=spend_total,
            discount_percent=discount,
        )
        day = receipt.goal_day
        if day is not None and day not in self.goal_readings and version.activity is not None:
            self._settle_activity(void, program, version, day)

    def _on_adjustment(
        self, adjustment: Adjustment, program: Program, version: ProgramVersion
    ) -> None:
        """A goodwill credit becomes a lot; a debit takes from lots like a void (may go
        negative). Adjustments never count toward tiers."""
        reason, operator = adjustment.reason, adjustment.operator
        credit = entry = None
        taken: list[Allocation] = []
        debt_added = 0
        if adjustment.points > 0:
            (credit,) = self._credits(
                version,
                [(adjustment.points, EntryKind.ADJUSTED, "adjustment")],
                source=adjustment.source,
                source_id=adjustment.source_id,
                occurred_at=adjustment.occurred_at,
                reason=reason,
                operator=operator,
            )
        else:
            taken, debt_added = self._debit(-adjustment.points, prefer=())
            entry = replace(
                self._entry(
                    adjustment,
                    version,
                    EntryKind.ADJUSTED,
                    adjustment.points,
                    "adjustment",
                    "adjusted",
                ),
                reason=reason,
                operator=operator,
            )
        self._trigger_accepted(
            program,
            self.PointsAdjusted,
            adjustment,
            adjustment_id=adjustment.adjustment_id,
            credit=credit,
            taken=taken,
            debt_added=debt_added,
            entry=entry,
        )

    def _on_erasure(
        self, erasure: ErasureRequest, program: Program, version: ProgramVersion
    ) -> None:
        """Close the account: forfeit the available points by one entry (liability falls by
        exactly that), report the money wallets as owed; vouchers and memberships end."""
        forfeited = max(0, self.available)
        taken, _ = self._debit(forfeited, prefer=())
        entry = None
        if forfeited:
            entry = replace(
                self._entry(
                    erasure, version, EntryKind.ADJUSTED, -forfeited, "erasure", "forfeited"
                ),
                reason=erasure.reason,
            )
        self._trigger_accepted(
            program,
            self.AccountErased,
            erasure,
            reason=erasure.reason,
            taken=taken,
            entry=entry,
            owed_cashback=self.cashback_balance,
            owed_prepaid=self.prepaid_balance,
        )

    # ----------------------------------------------------------------- helpers
    def _review_tier(self, as_of: datetime, version: ProgramVersion, qualifying: int) -> None:
        """Maintenance's tier review: up at once; down by the current tier's policy."""
        target, current = version.tier_for(qualifying), version.tier(self.tier)
        if target.threshold == current.threshold:
            if self.below_since is not None:
                self.trigger_event(self.TierGraceCleared, tier=self.tier, as_of=as_of)
            return
        reason = "maintenance"
        if target.threshold < current.threshold:
            if current.downgrade is Downgrade.NEVER:
                return
            if current.downgrade is Downgrade.GRACE:
                if self.below_since is None:
                    self.trigger_event(
                        self.TierGraceStarted,
                        tier=self.tier,
                        as_of=as_of,
                        qualifying_points=qualifying,
                    )
                    return
                if as_of < self.below_since + current.grace:
                    return
                reason = "grace_ended"
        self.trigger_event(
            self.TierChanged,
            from_tier=self.tier,
            to_tier=target.name,
            occurred_at=as_of,
            reason=reason,
            qualifying_points=qualifying,
        )

    # ------------------------------------------------------------- rewards side
    def _reward_refusal(
        self,
        request: RedemptionRequest,
        reward: Any,
        version: ProgramVersion,
        program: Program,
    ) -> str | None:
        """Why a catalogue reward cannot be had now (a business outcome, recorded), or None."""
        at = request.occurred_at
        if reward.min_tier is not None and version.rank(self.tier_at(at)) < version.rank(
            reward.min_tier
        ):
            return "reward_not_available"
        for limit in reward.limits:
            allowed, _ = limit.room(self.uses(limit.counter), at, program.timezone)
            if not allowed:
                return "reward_limit_reached"
        return None

    # ------------------------------------------------------------- payer rules
    def _valued(
        self, request: RedemptionRequest, reward: Any, points: int, program: Program
    ) -> payer.Valued:
        """A redemption's value, the payer class at its event time and its calendar year."""
        own = reward.value if reward is not None else None
        at, zone = request.occurred_at, program.timezone
        version = program.at(at)
        value = payer.reward_value(own, points, version.point_value)
        return payer.Valued(value, self.payer_class_at(at), at.astimezone(zone).year)

    def _referral_withheld(self, at: datetime, version: ProgramVersion) -> str | None:
        """Why this side's referral bonus may not be paid at ``at`` (None: it may)."""
        return payer.referral_refusal(
            version.payer, self.payer_class_at(at), version.referral.enabled
        )

    def _withhold_referral(
        self, other: str, at: datetime, rule_id: str, version: ProgramVersion
    ) -> None:
        self.trigger_event(
            self.ReferralBonusWithheld,
            source="careledger:referral",
            source_id=other,
            occurred_at=at,
            rule_id=rule_id,
            reason=REFERRAL_NOT_PERMITTED,
            program_version=version.version,
        )

    def _on_membership_purchase(
        self, purchase: MembershipPurchase, program: Program, version: ProgramVersion
    ) -> None:
        """With no membership active at its time it starts one; with one active it renews it."""
        at, plan = purchase.occurred_at, version.plans[purchase.plan_id]
        active = self._membership_at(at)
        if active is not None:
            self._trigger_accepted(
                program,
                self.MembershipRenewed,
                purchase,
                membership_id=active.membership_id,
                amount=purchase.amount,
                paid_through=add_months(active.paid_through, plan.term_months),
            )
            return
        self._trigger_accepted(
            program,
            self.MembershipStarted,
            purchase,
            membership_id=purchase.membership_id,
            plan_id=plan.plan_id,
            amount=purchase.amount,
            started_at=at,
            paid_through=add_months(at, plan.term_months),
        )

    def _membership_at(self, at: datetime) -> Membership | None:
        if not self.memberships:
            return None
        return next((m for m in self.memberships.values() if m.active_at(at)), None)

    def membership_plan_at(self, at: datetime) -> str | None:
        """The plan of the membership active at ``at``, if any (for the earning multiplier)."""
        membership = self._membership_at(at)
        return membership.plan_id if membership is not None else None

    def _maintain_rewards(self, as_of: datetime) -> None:
        """Lapse memberships paid through by ``as_of``, expire vouchers and cashback due."""
        for membership in sorted(self.memberships.values(), key=lambda m: m.paid_through):
            if membership.status != "lapsed" and membership.paid_through <= as_of:
                self.trigger_event(
                    self.MembershipLapsed,
                    membership_id=membership.membership_id,
                    at=membership.paid_through,
                )
        for voucher in sorted(self.vouchers.values(), key=lambda v: (v.expires_at, v.voucher_id)):
            if voucher.status == "issued" and voucher.expires_at <= as_of:
                self.trigger_event(
                    self.VoucherEnded,
                    voucher_id=voucher.voucher_id,
                    status="expired",
                    at=voucher.expires_at,
                )
        self._expire_cashback(as_of)

    def _refresh_benefits(self, at: datetime, version: ProgramVersion) -> None:
        """Record the benefit codes held now (the tier's and an active membership's)."""
        if not version.grants_benefits and not self.benefits:
            return  # nothing held, nothing to hold
        now = max(at, self.latest_event_at or at)
        held = set(version.tier(self.tier).benefits) if self.tier in version.tier_names else set()
        plan_id = self.membership_plan_at(now)
        if plan_id is not None and plan_id in version.plans:
            held |= set(version.plans[plan_id].benefits)
        benefits = sorted(held)
        if tuple(benefits) != self.benefits:
            self.trigger_event(self.BenefitsChanged, benefits=benefits, at=now)

    def _cashback_at(self, at: datetime) -> Decimal:
        return sum(
            (lot.remaining for lot in self.cashback_lots.values() if lot.expires_at > at),
            Decimal("0.00"),
        )

    def _expire_cashback(self, at: datetime) -> None:
        due = sorted(
            (lot for lot in self.cashback_lots.values() if lot.expires_at <= at),
            key=lambda lot: (lot.expires_at, lot.lot_id),
        )
        for lot in due:
            self.trigger_event(
                self.CashbackExpired, lot_id=lot.lot_id, amount=lot.remaining, at=lot.expires_at
            )

    def _wallet_facts(self, payment: Payment, version: ProgramVersion) -> dict[str, Any]:
        """What a payment does to the money wallets (nothing in programs without them)."""
        facts: dict[str, Any] = {}
        at = payment.occurred_at
        if version.cashback is not None:
            earned = cents_down(payment.amount * version.cashback.percent / 100)
            if earned > 0:
                facts["cashback_earned"] = earned
                facts["cashback_expires_at"] = at + version.cashback.lifetime
        if payment.cashback_used:
            drawn, left = [], payment.cashback_used
            for lot in sorted(self.cashback_lots.values(), key=lambda m: (m.expires_at, m.lot_id)):
                take_now = min(left, lot.remaining)
                if take_now > 0:
                    drawn.append((lot.lot_id, take_now))
                    left -= take_now
            facts["cashback_drawn"] = drawn
        if payment.prepaid_used:
            facts["prepaid_drawn"] = payment.prepaid_used
        if version.prepaid is not None:
            facts["prepayment_discount_percent"] = self._prepayment_discount(at, version)
        return facts

    def _prepayment_discount(self, at: datetime, version: ProgramVersion) -> int:
        prepaid = version.prepaid
        if prepaid is None:
            return 0
        start = at - prepaid.window
        total = sum((amount for when, amount in self.prepayments if start < when <= at), Decimal(0))
        return prepaid.discount_percent(total)

    def _apply_wallets(self, event: PatientAccount.PaymentRecorded) -> None:
        for lot_id, amount in event.cashback_drawn or ():
            lot = self.cashback_lots[lot_id]
            lot.remaining -= amount
            self.cashback_balance -= amount
            if not lot.remaining:
                del self.cashback_lots[lot_id]
        if event.cashback_earned:
            assert event.cashback_expires_at is not None
            lot_id = interaction_key(event.source, event.source_id)
            self.cashback_lots[lot_id] = MoneyLot(
                lot_id, event.cashback_earned, event.cashback_expires_at
            )
            self.cashback_balance += event.cashback_earned
        if event.prepaid_drawn:
            self.prepaid_balance -= event.prepaid_drawn

    def holdings(self, program: Program) -> Holdings:
        """Benefits, memberships, vouchers and money wallets, as of the latest interaction."""
        known = [t for t in (self.latest_event_at, self.qualifying_as_of) if t is not None]
        now = max(known) if known else datetime.min.replace(tzinfo=UTC)
        version = program.at(now)
        held = self._membership_at(now)  # a lapse (at maintenance) ends it whatever "now" is
        plan_id = held.plan_id if held is not None and held.status != "lapsed" else None
        plan = version.plans.get(plan_id) if plan_id else None
        return Holdings(
            benefits=tuple(sorted(self.benefits)),
            membership=plan_id,
            membership_discount_percent=plan.discount_percent if plan else 0,
            vouchers=tuple(
                (v.voucher_id, v.reward_id, v.status)
                for v in sorted(self.vouchers.values(), key=lambda v: v.voucher_id)
            ),
            cashback_balance=self.cashback_balance.quantize(Decimal("0.01")),
            prepaid_balance=self.prepaid_balance.quantize(Decimal("0.01")),
            prepayment_discount_percent=self._prepayment_discount(now, version),
        )

    def _settle_activity(
        self, cause: Interaction, program: Program, version: ProgramVersion, day: date
    ) -> None:
        """After ``day`` became (or stopped being) a goal day: pay the streak blocks now owed
        around it, take back those no longer owed, and upgrade on goal days."""
        goal = version.activity
        assert goal is not None
        if goal.streak_days:
            days = set(self.goal_days)
            low, high = streaks.region(days | {day}, day)
            owed = streaks.blocks_owed(days, low, high, goal.streak_days)
            paid = {start for start in self.streak_paid if low <= start <= high}
            for start in sorted(paid - owed):
                self._reverse_streak(cause, version, start)
            for start in sorted(owed - paid):
                self._pay_streak(cause, version, start, goal.streak_points)
        if version.qualification_basis == "goal_days" and day in self.goal_readings:
            window = version.qualifying_window.days
            best = streaks.best_window(self.goal_days, day, window)
            reached = version.tier_for(best)
            if version.rank(reached.name) > version.rank(self.tier):
                self.trigger_event(
                    self.TierChanged,
                    from_tier=self.tier,
                    to_tier=reached.name,
                    occurred_at=cause.occurred_at,
                    reason="goal_days",
                    qualifying_points=best,
                )

    def _pay_streak(
        self, cause: Interaction, version: ProgramVersion, start: date, points: int
    ) -> None:
        nth = self.streak_payments.get(start, 0)
        (credit,) = self._credits(
            version,
            [(points, EntryKind.BONUS, "streak")],
            source=cause.source,
            source_id=cause.source_id,
            occurred_at=cause.occurred_at,
            entry_key=f"streak:{start.isoformat()}:{nth}",
        )
        self.trigger_event(self.StreakBonusEarned, start_day=start, credit=credit)

    def _reverse_streak(self, cause: Interaction, version: ProgramVersion, start: date) -> None:
        lot_id, points = self.streak_paid[start]
        taken, debt_added = self._debit(points, prefer=(lot_id,))
        nth = self.streak_payments.get(start, 0)
        entry = LedgerEntry(
            entry_id=derived_id(str(self.id), "streak-reversed", f"{start.isoformat()}:{nth}"),
            kind=EntryKind.REVERSED.value,
            points=-points,
            balance_after=self.available - points,
            rule_id="streak",
            program_version=version.version,
            source=cause.source,
            source_id=cause.source_id,
            occurred_at=cause.occurred_at,
        )
        self.trigger_event(
            self.StreakBonusReversed,
            start_day=start,
            taken=taken,
            debt_added=debt_added,
            entry=entry,
        )

    def _forget_goal_reading(self, day: date, key: str) -> None:
        readings = self.goal_readings[day]
        readings.discard(key)
        if not readings:
            del self.goal_readings[day]
            self.goal_days.remove(day)

    def _notice_expiring(self, as_of: datetime, version: ProgramVersion) -> None:
        """A notice for every live lot expiring within the notice period, once per lot."""
        horizon = as_of + version.expiry_notice
        due = sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.remaining > 0
                and as_of < lot.expires_at <= horizon
                and lot.lot_id not in self.expiry_noticed
            ),
            key=lambda lot: (lot.expires_at, lot.lot_id),
        )
        for lot in due:
            self.trigger_event(
                self.ExpiryNoticeDue,
                lot_id=lot.lot_id,
                expires_at=lot.expires_at,
                points=lot.remaining,
                as_of=as_of,
            )

    def _upgrade_if_reached(self, at: datetime, program: Program) -> None:
        version = program.at(at)
        qualifying = self._qualifying_between(at - version.qualifying_window, at)
        reached = version.tier_for(qualifying)
        if version.rank(reached.name) > version.rank(self.tier):
            self.trigger_event(
                self.TierChanged,
                from_tier=self.tier,
                to_tier=reached.name,
                occurred_at=at,
                reason="qualifying_points",
                qualifying_points=qualifying,
            )

    def _check_referral_qualifies(self, program: Program) -> None:
        if self.referral_qualified or self.referrer is None or self.referred_at is None:
            return
        first_visit = self.first_visit_at
        if first_visit is None:
            return
        version = program.at(first_visit)
        referral = version.referral
        if not timedelta(0) <= first_visit - self.referred_at <= referral.window:
            return
        credit = None
        withheld = self._referral_withheld(first_visit, version)
        if referral.enabled and withheld is None:
            (credit,) = self._credits(
                version,
                [(referral.referee_bonus, EntryKind.BONUS, "referral.referee")],
                source="careledger:referral",
                source_id=self.referrer,
                occurred_at=first_visit,
            )
        self.trigger_event(
            self.ReferralQualified,
            referrer=self.referrer,
            qualified_at=first_visit,
            credit=credit,
            withheld=withheld,
        )
        if withheld is not None:
            self._withhold_referral(self.referrer, first_visit, "referral.referee", version)

    def _note(
        self, program: Program, version: ProgramVersion, interaction: Interaction, outcome: str
    ) -> None:
        self._trigger_accepted(
            program,
            self.InteractionNoted,
            interaction,
            outcome=outcome,
            program_version=version.version,
        )

    def _trigger_accepted(
        self,
        program: Program,
        event_class: type[PatientAccount.Accepted],
        interaction: Interaction,
        qualifying_delta: tuple[datetime, int] | None = None,
        **facts: Any,
    ) -> None:
        """Record an accepted interaction with the qualifying points it leaves the account at.

        Qualifying points are reported as of the account's latest event time; carrying the
        figure on the event keeps every reader (balances, read models) in step with the rule.
        """
        at = interaction.occurred_at
        as_of = max(self.qualifying_as_of or at, at)
        start = as_of - program.at(as_of).qualifying_window
        qualifying = self._qualifying_between(start, as_of)
        if qualifying_delta is not None and start < qualifying_delta[0] <= as_of:
            qualifying += qualifying_delta[1]
        self.trigger_event(
            event_class,
            source=interaction.source,
            source_id=interaction.source_id,
            interaction=interaction.kind,
            occurred_at=at,
            qualifying_points=qualifying,
            **facts,
        )

    def _credits(
        self,
        version: ProgramVersion,
        payments: list[tuple[int, EntryKind, str]],
        *,
        source: str,
        source_id: str,
        occurred_at: datetime,
        partner: str | None = None,
        entry_key: str | None = None,
        **notes: str | None,
    ) -> list[Credit]:
        """New lots for ``(points, kind, rule id)`` paid in this order; each first repays debt.

        ``partner`` issued them (default the home partner, in a coalition program)."""
        issuer = partner or version.home_partner
        credits = []
        available, debt = self.available, self.debt
        for points, kind, rule_id in payments:
            entry_id = (
                derived_id(str(self.id), entry_key)
                if entry_key
                else derived_id(str(self.id), source, source_id, kind.value, rule_id)
            )
            available += points
            entry = LedgerEntry(
                entry_id=entry_id,
                kind=kind.value,
                points=points,
                balance_after=available,
                rule_id=rule_id,
                program_version=version.version,
                source=source,
                source_id=source_id,
                occurred_at=occurred_at,
                **notes,
            )
            repaid = min(debt, points)
            debt -= repaid
            expires_at = occurred_at + version.lot_lifetime
            credits.append(Credit(entry_id, expires_at, points, repaid, entry, issuer))
        return credits

    def _entry(
        self,
        interaction: Interaction,
        version: ProgramVersion,
        kind: EntryKind,
        points: int,
        rule_id: str,
        qualifier: str,
        balance_after: int | None = None,
    ) -> LedgerEntry:
        return LedgerEntry(
            entry_id=derived_id(str(self.id), interaction.source, interaction.source_id, qualifier),
            kind=kind.value,
            points=points,
            balance_after=self.available + points if balance_after is None else balance_after,
            rule_id=rule_id,
            program_version=version.version,
            source=interaction.source,
            source_id=interaction.source_id,
            occurred_at=interaction.occurred_at,
        )

    def _debit(self, points: int, prefer: tuple[UUID, ...]) -> tuple[list[Allocation], int]:
        """Take ``points`` from lots (``prefer``-red first); what is missing becomes debt."""
        payable = max(0, min(points, self.available))
        return list(take(self.lots, payable, prefer)), points - payable

    def _expire_due(self, as_of: datetime, program: Program) -> None:
        if self._expiry_floor is not None and as_of < self._expiry_floor:
            return  # nothing can be due yet: skip scanning every lot on every interaction
        due = sorted(
            (lot for lot in self.lots.values() if lot.expires_at <= as_of and lot.remaining > 0),
            key=lambda lot: (lot.expires_at, lot.lot_id),
        )
        for lot in due:
            entry = LedgerEntry(
                entry_id=derived_id(str(self.id), "expiry", lot.lot_id.hex),
                kind=EntryKind.EXPIRED.value,
                points=-lot.remaining,
                balance_after=self.available - lot.remaining,
                rule_id="expiry",
                program_version=program.at(lot.expires_at).version,
                source=lot.source,
                source_id=lot.source_id,
                occurred_at=lot.expires_at,
            )
            self.trigger_event(
                self.PointsExpired, lot_id=lot.lot_id, entry=entry, partner=lot.partner
            )
        live = [lot.expires_at for lot in self.lots.values() if lot.remaining > 0]
        self._expiry_floor = min(live) if live else datetime.max.replace(tzinfo=as_of.tzinfo)

    # ------------------------------------------------------ state transitions
    def _accept(self, event: PatientAccount.Accepted) -> None:
        key = interaction_key(event.source, event.source_id)
        receipt = self.receipts[key] = event.receipt()
        goal_day = getattr(event, "goal_day", None)
        if goal_day is not None:
            receipt.goal_day = goal_day
            if goal_day not in self.goal_readings:
                self.goal_readings[goal_day] = set()
                insort(self.goal_days, goal_day)
            self.goal_readings[goal_day].add(key)
        at = event.occurred_at
        if self.latest_event_at is None or at > self.latest_event_at:
            self.latest_event_at = at
        self.qualifying_now = event.qualifying_points
        if self.qualifying_as_of is None or at > self.qualifying_as_of:
            self.qualifying_as_of = at
        if event.interaction == Visit.kind and (
            self.first_visit_at is None or at < self.first_visit_at
        ):
            self.first_visit_at = at

    def _count(self, entry: LedgerEntry) -> None:
        self.available += entry.points
        self.lifetime[entry.kind] += abs(entry.points)

    def _credit(self, credit: Credit) -> None:
        self._count(credit.entry)
        self.debt -= credit.debt_repaid
        remaining = credit.points - credit.debt_repaid
        self._lower_expiry_floor(credit.expires_at)
        if remaining > 0:
            self.lots[credit.lot_id] = Lot(
                credit.lot_id,
                credit.expires_at,
                remaining,
                credit.entry.source,
                credit.entry.source_id,
                credit.partner,
            )

    def _use(self, award: Award, at: datetime, source: str, source_id: str) -> None:
        """An award fills its limit counters, its group and the qualifying points."""
        if award.qualifying:
            self._add_qualifying(at, award.qualifying)
        use = Use(at, interaction_key(source, source_id), award.credit.points)
        for counter in award.counters:
            uses = self.usage.setdefault(counter, [])
            if uses and uses[-1].at >= at:  # a late award: keep the list in time order
                insort(uses, use)
            else:  # the usual case: later than every award so far
                uses.append(use)
        if award.group is not None:
            key = (award.rule_id, award.group)
            self.group_paid[key] = self.group_paid.get(key, 0) + award.base_points

    def _release(self, award: Award, at: datetime, key: str) -> None:
        """A voided award frees what it filled (its qualifying points are reversed apart)."""
        for counter in award.counters:
            self.usage[counter].remove(Use(at, key, award.credit.points))
        if award.group is not None:
            self.group_paid[(award.rule_id, award.group)] -= award.base_points

    def _add_qualifying(self, at: datetime, points: int) -> None:
        times, totals = self.qualifying_times, self.qualifying_totals
        index = bisect_right(times, at)
        times.insert(index, at)
        totals.insert(index + 1, totals[index] + points)
        for later in range(index + 2, len(totals)):  # only for late events
            totals[later] += points

    def _lower_expiry_floor(self, expires_at: datetime) -> None:
        if self._expiry_floor is not None and expires_at < self._expiry_floor:
            self._expiry_floor = expires_at

    def _change_payer(self, at: datetime, payer_class: str) -> None:
        insort(self.payer_changes, (at, len(self.payer_changes), payer_class))

    def _change_tier(self, tier: str, at: datetime) -> None:
        self.tier = tier
        self.below_since = None
        insort(self.tier_changes, (at, len(self.tier_changes), tier))

    def _draw(self, allocations: list[Allocation]) -> None:
        # Empty lots stay until their expiry passes, so a cancelled redemption can refill them.
        for allocation in allocations:
            self.lots[allocation.lot_id].remaining -= allocation.points

    def _redeem(self, event: PatientAccount.PointsRedeemed) -> None:
        self._draw(event.allocations)
        self._count(event.entry)
        key = interaction_key(event.source, event.source_id)
        counters = tuple(event.counters or ())
        self.redemptions[event.redemption_id] = RedemptionRecord(
            event.redemption_id,
            "redeemed",
            -event.entry.points,
            tuple(event.allocations),
            counters,
            key,
            event.occurred_at,
            event.value,
            event.payer_class,
            event.value_year,
        )
        for counter in counters:  # a catalogue reward's limits count its redemptions
            insort(self.usage.setdefault(counter, []), Use(event.occurred_at, key, 1))

    def _cancel(self, event: PatientAccount.RedemptionCancelled) -> None:
        for entry in event.entries:
            self._count(entry)
        self.debt -= event.debt_repaid
        for allocation in event.returned:
            self._lower_expiry_floor(allocation.expires_at)
            lot = self.lots.get(allocation.lot_id)
            if lot is None:
                source, source_id = "careledger:redemption", event.redemption_id
                self.lots[allocation.lot_id] = Lot(
                    allocation.lot_id,
                    allocation.expires_at,
                    allocation.points,
                    source,
                    source_id,
                    allocation.partner,
                )
            else:
                lot.remaining += allocation.points
        record = self.redemptions[event.redemption_id]
        self.redemptions[event.redemption_id] = replace(record, status="cancelled")
        if record.at is not None:
            for counter in record.counters:  # a cancelled redemption frees its reward's limit
                self.usage[counter].remove(Use(record.at, record.key, 1))

    def _void(self, event: PatientAccount.InteractionVoided) -> None:
        receipt = self.receipts[event.voided_key]
        receipt.voided = True
        self._draw(event.taken)
        self.debt += event.debt_added
        if event.entry is not None:
            self._count(event.entry)
        if receipt.qualifying:
            self._add_qualifying(receipt.occurred_at, -receipt.qualifying)
        for award in receipt.awards:
            self._release(award, receipt.occurred_at, event.voided_key)
        if receipt.goal_day is not None:
            self._forget_goal_reading(receipt.goal_day, event.voided_key)
        if event.spend_total is not None:
            self.spend_total = event.spend_total
            self.payments -= 1

    def _expire(self, event: PatientAccount.PointsExpired) -> None:
        self._count(event.entry)
        del self.lots[event.lot_id]
        self.expired_lots.add(event.lot_id)
        passed = event.entry.occurred_at
        for lot_id in [
            i for i, lot in self.lots.items() if not lot.remaining and lot.expires_at <= passed
        ]:
            del self.lots[lot_id]
