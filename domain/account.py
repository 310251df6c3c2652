"""A patient's account in one loyalty program: the aggregate every point is decided by.

Commands (``handle``, ``maintain``, ``note_referral``, ``pay_referrer_bonus``) check their
guards first and only then trigger events, so a refused interaction leaves no trace on the
account. Events carry the facts decided (points, lots, balance after), and ``apply`` only
replays those facts: rebuilding an account from its events never re-decides anything.
Decisions use event time only; nothing here reads the clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import errors
from domain.ids import account_id, derived_id, interaction_key
from domain.interactions import (
    Assessment,
    Checkup,
    Enrolment,
    Interaction,
    Payment,
    RedemptionCancellation,
    RedemptionRequest,
    Referral,
    Review,
    StepsReading,
    Visit,
    Void,
)
from domain.program import Program
from domain.values import (
    Allocation,
    Balance,
    Credit,
    EntryKind,
    LedgerEntry,
    Lot,
    Receipt,
    RedemptionRecord,
)

ENTRY_KINDS = tuple(kind.value for kind in EntryKind)  # iterating an Enum is slow
DUPLICATE = "duplicate"
ACCEPTED = "accepted"


class PatientAccount(Aggregate):
    """The ledger of one pseudonymous patient in one program."""

    # ----------------------------------------------------------------- events
    class Opened(Aggregate.Created):
        program_id: str
        patient_id: str

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

    class InteractionNoted(Accepted):
        """Accepted, but no rule paid: ``outcome`` says why (a cap, a threshold)."""

        outcome: str

    class PointsEarned(Accepted):
        rule_id: str
        base_points: int
        slot: str | None
        credit: Credit

        def receipt(self) -> Receipt:
            return Receipt(
                kind=self.interaction,
                occurred_at=self.occurred_at,
                lot_ids=(self.credit.lot_id,),
                points=self.credit.points,
                base_points=self.base_points,
                slot=self.slot,
            )

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._credit(self.credit, self.interaction)
            aggregate._earn_rule(self)

    class PointsRedeemed(Accepted):
        redemption_id: str
        reward_id: str
        allocations: list[Allocation]
        entry: LedgerEntry

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate._redeem(self)

    class RedemptionRejected(Accepted):
        redemption_id: str
        reward_id: str
        points: int
        reason: str
        available: int

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

        def receipt(self) -> Receipt:
            return Receipt(kind=self.interaction, occurred_at=self.occurred_at, amount=self.amount)

        def apply(self, aggregate: Any) -> None:
            aggregate._accept(self)
            aggregate.spend_total = self.spend_total
            aggregate.payments = self.payments
            if self.reward_unlocked is not None:
                aggregate.rewards_unlocked += 1

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

        def apply(self, aggregate: Any) -> None:
            aggregate.referral_qualified = True
            if self.credit is not None:
                aggregate._credit(self.credit, "referral")

    class ReferrerBonusEarned(Aggregate.Event):
        referee: str
        credit: Credit

        def apply(self, aggregate: Any) -> None:
            aggregate.referees_paid.add(self.referee)
            aggregate._credit(self.credit, "referral")

    class PointsExpired(Aggregate.Event):
        lot_id: UUID
        entry: LedgerEntry

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
            aggregate.tier = self.to_tier

    # ------------------------------------------------------------ construction
    @classmethod
    def open(cls, program: Program, patient_id: str) -> PatientAccount:
        """Open the account a patient gets on first contact with a program."""
        return cls._create(
            cls.Opened,
            id=account_id(program.program_id, patient_id),
            program_id=program.program_id,
            patient_id=patient_id,
        )

    def __init__(self, program_id: str, patient_id: str) -> None:
        self.program_id = program_id
        self.patient_id = patient_id
        self.tier = "bronze"
        self.available = 0
        self.debt = 0
        self.lots: dict[UUID, Lot] = {}
        self.receipts: dict[str, Receipt] = {}
        self.redemptions: dict[str, RedemptionRecord] = {}
        # Qualifying points by event time: times kept sorted with running totals, so a window
        # sum is two binary searches instead of a pass over the whole history.
        self.qualifying_times: list[datetime] = []
        self.qualifying_totals: list[int] = [0]
        self.slots: set[str] = set()
        self.review_times: list[datetime] = []
        self.step_days: dict[str, int] = {}
        self.spend_total = Decimal("0")
        self.payments = 0
        self.rewards_unlocked = 0
        self.referrer: str | None = None
        self.referred_at: datetime | None = None
        self.referral_qualified = False
        self.first_visit_at: datetime | None = None
        self.referees_paid: set[str] = set()
        self.expired_lots: set[UUID] = set()
        # A lower bound on the next lot expiry (None: unknown), a cache kept by apply().
        self._expiry_floor: datetime | None = None
        self.lifetime = dict.fromkeys(ENTRY_KINDS, 0)
        self.latest_event_at: datetime | None = None
        self.qualifying_now = 0
        self.qualifying_as_of: datetime | None = None

    # ---------------------------------------------------------------- commands
    def handle(self, interaction: Interaction, program: Program) -> str:
        """Apply one interaction; returns ``"accepted"`` or ``"duplicate"``.

        Raises a :class:`~domain.errors.LedgerError` (and changes nothing) when the
        interaction must be refused.
        """
        if interaction_key(interaction.source, interaction.source_id) in self.receipts:
            return DUPLICATE
        self._check(interaction, program)
        self._expire_due(interaction.occurred_at, program)
        match interaction:
            case Visit():
                self._on_visit(interaction, program)
            case Checkup():
                self._on_checkup(interaction, program)
            case Assessment():
                self._on_assessment(interaction, program)
            case Review():
                self._on_review(interaction, program)
            case StepsReading():
                self._on_steps(interaction, program)
            case Enrolment():
                self._on_enrolment(interaction, program)
            case Referral():
                self._trigger_accepted(
                    program, self.ReferralMade, interaction, referee=interaction.referee
                )
            case Payment():
                self._on_payment(interaction, program)
            case RedemptionRequest():
                self._on_redemption(interaction, program)
            case RedemptionCancellation():
                self._on_cancellation(interaction, program)
            case Void():
                self._on_void(interaction, program)
            case _:
                raise TypeError(f"unsupported interaction {type(interaction).__name__}")
        return ACCEPTED

    def maintain(self, as_of: datetime, program: Program) -> None:
        """The close-of-day job: expire lots due by ``as_of``, then set the tier.

        Running it again for the same ``as_of`` changes nothing.
        """
        self._expire_due(as_of, program)
        qualifying = self.qualifying_points(as_of, program)
        moved_on = self.qualifying_as_of is None or as_of >= self.qualifying_as_of
        if moved_on and qualifying != self.qualifying_now:
            self.trigger_event(
                self.QualifyingPointsChanged, as_of=as_of, qualifying_points=qualifying
            )
        target = program.tier_for(qualifying).name
        if target != self.tier:
            self.trigger_event(
                self.TierChanged,
                from_tier=self.tier,
                to_tier=target,
                occurred_at=as_of,
                reason="maintenance",
                qualifying_points=qualifying,
            )

    def note_referral(
        self, referrer: str, referred_at: datetime, source: str, source_id: str, program: Program
    ) -> None:
        """Record who referred this patient; the first referrer recorded stands."""
        if referrer == self.patient_id:
            raise errors.SelfReferral("a patient cannot refer themselves")
        if self.referrer is not None:
            return
        self.trigger_event(
            self.ReferralRecorded,
            referrer=referrer,
            referred_at=referred_at,
            source=source,
            source_id=source_id,
        )
        self._check_referral_qualifies(program)

    def pay_referrer_bonus(self, referee: str, qualified_at: datetime, program: Program) -> None:
        """Pay this (referring) account for a referee that qualified; once per referee."""
        if referee in self.referees_paid or not program.referral.enabled:
            return
        credit = self._new_credit(
            program,
            points=program.referral.referrer_bonus,
            kind=EntryKind.BONUS,
            rule_id="referral.referrer",
            source="careledger:referral",
            source_id=referee,
            occurred_at=qualified_at,
        )
        self.trigger_event(self.ReferrerBonusEarned, referee=referee, credit=credit)

    # ----------------------------------------------------------------- queries
    def qualifying_points(self, as_of: datetime, program: Program) -> int:
        """Earning-rule points, net of reversals, with event time in (as_of - window, as_of]."""
        return self._qualifying_between(as_of - program.qualifying_window, as_of)

    def _qualifying_between(self, start: datetime, end: datetime) -> int:
        """The qualifying points with event time in (start, end]."""
        times, totals = self.qualifying_times, self.qualifying_totals
        return totals[bisect_right(times, end)] - totals[bisect_right(times, start)]

    def balance(self, program: Program) -> Balance:
        """The account's balance.

        Qualifying points are as of the later of the latest accepted interaction and the
        latest maintenance that changed them.
        """
        live = [lot for lot in self.lots.values() if lot.remaining > 0]
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
            discount_percent=program.spend.discount_percent(self.spend_total),
            spend_total=self.spend_total.quantize(Decimal("0.01")),
            rewards_unlocked=self.rewards_unlocked,
            next_expiry=min((lot.expires_at for lot in live), default=None),
        )

    # ---------------------------------------------------------------- handlers
    def _check(self, interaction: Interaction, program: Program) -> None:
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
                        f"{receipt.kind} cannot be voided (cancel redemptions instead)"
                    )
            case Payment(currency=currency) if currency != program.spend.currency:
                raise errors.CurrencyMismatch(f"payments must be in {program.spend.currency}")
            case _:
                pass

    def _on_visit(self, visit: Visit, program: Program) -> None:
        points = program.visit_points[visit.visit_type]
        self._earn(visit, program, f"visit.{visit.visit_type}", points)
        self._check_referral_qualifies(program)

    def _on_checkup(self, checkup: Checkup, program: Program) -> None:
        slot = None
        if checkup.checkup_type in program.checkups_once_per_year:
            year = checkup.occurred_at.astimezone(program.timezone).year
            slot = f"checkup.{checkup.checkup_type}:{year}"
            if slot in self.slots:
                self._note(program, checkup, "already_awarded_this_year")
                return
        points = program.checkup_points[checkup.checkup_type]
        self._earn(checkup, program, f"checkup.{checkup.checkup_type}", points, slot=slot)

    def _on_assessment(self, assessment: Assessment, program: Program) -> None:
        local = assessment.occurred_at.astimezone(program.timezone)
        slot = f"assessment:{local.year}Q{(local.month - 1) // 3 + 1}"
        if slot in self.slots:
            self._note(program, assessment, "already_awarded_this_quarter")
            return
        self._earn(assessment, program, "assessment", program.assessment_points, slot=slot)

    def _on_review(self, review: Review, program: Program) -> None:
        cooldown = program.review_cooldown
        if any(abs(review.occurred_at - at) < cooldown for at in self.review_times):
            self._note(program, review, "review_cooldown")
            return
        slot = f"review:{review.occurred_at.isoformat()}"
        self._earn(review, program, "review", program.review_points, slot=slot)

    def _on_steps(self, reading: StepsReading, program: Program) -> None:
        day = reading.day.isoformat()
        top_up = program.steps.base_points(reading.steps) - self.step_days.get(day, 0)
        if top_up <= 0:
            self._note(program, reading, "no_steps_top_up")
            return
        self._earn(reading, program, "activity.steps", top_up, slot=f"steps:{day}")

    def _on_enrolment(self, enrolment: Enrolment, program: Program) -> None:
        self._trigger_accepted(
            program,
            self.PatientEnrolled,
            enrolment,
            channel=enrolment.channel,
            referred_by=enrolment.referred_by,
        )
        if enrolment.referred_by is not None:
            self.note_referral(
                enrolment.referred_by,
                enrolment.occurred_at,
                enrolment.source,
                enrolment.source_id,
                program,
            )

    def _on_payment(self, payment: Payment, program: Program) -> None:
        spend_total = self.spend_total + payment.amount
        payments = self.payments + 1
        every = program.spend.reward_every_payments
        unlocks = payments // every > self.rewards_unlocked
        self._trigger_accepted(
            program,
            self.PaymentRecorded,
            payment,
            amount=payment.amount,
            currency=payment.currency,
            spend_total=spend_total,
            discount_percent=program.spend.discount_percent(spend_total),
            payments=payments,
            reward_unlocked=program.spend.reward_id if unlocks else None,
        )

    def _on_redemption(self, request: RedemptionRequest, program: Program) -> None:
        if request.redemption_id in self.redemptions:
            self._note(program, request, "redemption_id_repeated")
            return
        if self.available < request.points:
            self._trigger_accepted(
                program,
                self.RedemptionRejected,
                request,
                redemption_id=request.redemption_id,
                reward_id=request.reward_id,
                points=request.points,
                reason="insufficient_points",
                available=self.available,
            )
            return
        allocations = list(self._take(request.points, prefer=()))
        entry = self._entry(
            request, program, EntryKind.REDEEMED, -request.points, "redemption", "redeemed"
        )
        self._trigger_accepted(
            program,
            self.PointsRedeemed,
            request,
            redemption_id=request.redemption_id,
            reward_id=request.reward_id,
            allocations=allocations,
            entry=entry,
        )

    def _on_cancellation(self, cancel: RedemptionCancellation, program: Program) -> None:
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
        returned = list(_trim(live, debt_repaid))
        entries = [
            self._entry(
                cancel,
                program,
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
                    program,
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
        )

    def _on_void(self, void: Void, program: Program) -> None:
        key = interaction_key(void.voided_source, void.voided_id)
        receipt = self.receipts[key]
        points = receipt.points
        taken: list[Allocation] = []
        debt_added = 0
        entry = None
        if points:
            payable = max(0, min(points, self.available))
            taken = list(self._take(payable, prefer=receipt.lot_ids))
            debt_added = points - payable
            entry = self._entry(void, program, EntryKind.REVERSED, -points, "void", "reversed")
        spend_total = discount = None
        if receipt.amount is not None:
            spend_total = self.spend_total - receipt.amount
            discount = program.spend.discount_percent(spend_total)
        reversal = (receipt.occurred_at, -receipt.base_points) if receipt.base_points else None
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

    # ----------------------------------------------------------------- helpers
    def _earn(
        self,
        interaction: Interaction,
        program: Program,
        rule_id: str,
        base_points: int,
        slot: str | None = None,
    ) -> None:
        """Pay an earning rule at the current tier, then upgrade if a threshold was crossed."""
        points = program.multiply(base_points, program.tier(self.tier))
        credit = self._new_credit(
            program,
            points=points,
            kind=EntryKind.EARNED,
            rule_id=rule_id,
            source=interaction.source,
            source_id=interaction.source_id,
            occurred_at=interaction.occurred_at,
        )
        self._trigger_accepted(
            program,
            self.PointsEarned,
            interaction,
            qualifying_delta=(interaction.occurred_at, base_points),
            rule_id=rule_id,
            base_points=base_points,
            slot=slot,
            credit=credit,
        )
        self._upgrade_if_reached(interaction.occurred_at, program)

    def _upgrade_if_reached(self, at: datetime, program: Program) -> None:
        qualifying = self.qualifying_points(at, program)
        reached = program.tier_for(qualifying)
        if program.rank(reached.name) > program.rank(self.tier):
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
        if not timedelta(0) <= first_visit - self.referred_at <= program.referral.window:
            return
        credit = None
        if program.referral.enabled:
            credit = self._new_credit(
                program,
                points=program.referral.referee_bonus,
                kind=EntryKind.BONUS,
                rule_id="referral.referee",
                source="careledger:referral",
                source_id=self.referrer,
                occurred_at=first_visit,
            )
        self.trigger_event(
            self.ReferralQualified, referrer=self.referrer, qualified_at=first_visit, credit=credit
        )

    def _note(self, program: Program, interaction: Interaction, outcome: str) -> None:
        self._trigger_accepted(program, self.InteractionNoted, interaction, outcome=outcome)

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
        start = as_of - program.qualifying_window
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

    def _new_credit(
        self,
        program: Program,
        *,
        points: int,
        kind: EntryKind,
        rule_id: str,
        source: str,
        source_id: str,
        occurred_at: datetime,
    ) -> Credit:
        entry_id = derived_id(str(self.id), source, source_id, kind.value, rule_id)
        entry = LedgerEntry(
            entry_id=entry_id,
            kind=kind.value,
            points=points,
            balance_after=self.available + points,
            rule_id=rule_id,
            program_version=program.version,
            source=source,
            source_id=source_id,
            occurred_at=occurred_at,
        )
        return Credit(
            lot_id=entry_id,
            expires_at=occurred_at + program.lot_lifetime,
            points=points,
            debt_repaid=min(self.debt, points),
            entry=entry,
        )

    def _entry(
        self,
        interaction: Interaction,
        program: Program,
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
            program_version=program.version,
            source=interaction.source,
            source_id=interaction.source_id,
            occurred_at=interaction.occurred_at,
        )

    def _take(self, points: int, prefer: Iterable[UUID]) -> Iterator[Allocation]:
        """Choose lots to take ``points`` from: ``prefer``-red lots, then soonest-expiring."""
        preferred = [self.lots[i] for i in prefer if i in self.lots]
        others = sorted(
            (lot for lot in self.lots.values() if lot.lot_id not in set(prefer)),
            key=lambda lot: (lot.expires_at, lot.lot_id),
        )
        for lot in [*preferred, *others]:
            if points <= 0:
                return
            n = min(points, lot.remaining)
            if n > 0:
                yield Allocation(lot.lot_id, lot.expires_at, n)
                points -= n

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
                program_version=program.version,
                source=lot.source,
                source_id=lot.source_id,
                occurred_at=lot.expires_at,
            )
            self.trigger_event(self.PointsExpired, lot_id=lot.lot_id, entry=entry)
        live = [lot.expires_at for lot in self.lots.values() if lot.remaining > 0]
        self._expiry_floor = min(live) if live else datetime.max.replace(tzinfo=as_of.tzinfo)

    # ------------------------------------------------------ state transitions
    def _accept(self, event: PatientAccount.Accepted) -> None:
        self.receipts[interaction_key(event.source, event.source_id)] = event.receipt()
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

    def _credit(self, credit: Credit, source_kind: str) -> None:
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
            )

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

    def _earn_rule(self, event: PatientAccount.PointsEarned) -> None:
        self._add_qualifying(event.occurred_at, event.base_points)
        if event.slot is None:
            return
        if event.slot.startswith("steps:"):
            day = event.slot.removeprefix("steps:")
            self.step_days[day] = self.step_days.get(day, 0) + event.base_points
        elif event.slot.startswith("review:"):
            self.review_times.append(event.occurred_at)
        else:
            self.slots.add(event.slot)

    def _draw(self, allocations: Iterable[Allocation]) -> None:
        # Empty lots stay until their expiry passes, so a cancelled redemption can refill them.
        for allocation in allocations:
            self.lots[allocation.lot_id].remaining -= allocation.points

    def _redeem(self, event: PatientAccount.PointsRedeemed) -> None:
        self._draw(event.allocations)
        self._count(event.entry)
        self.redemptions[event.redemption_id] = RedemptionRecord(
            event.redemption_id, "redeemed", -event.entry.points, tuple(event.allocations)
        )

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
                    allocation.lot_id, allocation.expires_at, allocation.points, source, source_id
                )
            else:
                lot.remaining += allocation.points
        record = self.redemptions[event.redemption_id]
        self.redemptions[event.redemption_id] = replace(record, status="cancelled")

    def _void(self, event: PatientAccount.InteractionVoided) -> None:
        receipt = self.receipts[event.voided_key]
        receipt.voided = True
        self._draw(event.taken)
        self.debt += event.debt_added
        if event.entry is not None:
            self._count(event.entry)
        if receipt.base_points:
            self._add_qualifying(receipt.occurred_at, -receipt.base_points)
        if receipt.slot is not None:
            self._release_slot(receipt)
        if event.spend_total is not None:
            self.spend_total = event.spend_total
            self.payments -= 1

    def _release_slot(self, receipt: Receipt) -> None:
        slot = receipt.slot or ""
        if slot.startswith("steps:"):
            day = slot.removeprefix("steps:")
            self.step_days[day] -= receipt.base_points
        elif slot.startswith("review:"):
            self.review_times.remove(receipt.occurred_at)
        else:
            self.slots.discard(slot)

    def _expire(self, event: PatientAccount.PointsExpired) -> None:
        self._count(event.entry)
        del self.lots[event.lot_id]
        self.expired_lots.add(event.lot_id)
        passed = event.entry.occurred_at
        for lot_id in [
            i for i, lot in self.lots.items() if not lot.remaining and lot.expires_at <= passed
        ]:
            del self.lots[lot_id]


NOT_VOIDABLE = frozenset({"redemption.requested", "redemption.cancelled", "interaction.voided"})


def _trim(allocations: list[Allocation], points: int) -> Iterator[Allocation]:
    """Drop ``points`` from the front of ``allocations`` (they repay a negative balance)."""
    for allocation in allocations:
        cut = min(points, allocation.points)
        points -= cut
        if allocation.points - cut > 0:
            yield replace(allocation, points=allocation.points - cut)


def entries_of(event: Any) -> list[LedgerEntry]:
    """The ledger entries an account event carries (none for most non-point events)."""
    if (credit := getattr(event, "credit", None)) is not None:
        return [credit.entry]
    if (entry := getattr(event, "entry", None)) is not None:
        return [entry]
    return list(getattr(event, "entries", ()))
