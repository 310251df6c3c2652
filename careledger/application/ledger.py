"""The one application service that writes the ledger.

Every entry point (``careledger ingest``, the Kafka worker, maintenance, the referral relay)
goes through :class:`Ledger`, so the same validation and domain code decide everything.

The service is synchronous, like the ``eventsourcing`` library under it; async callers run it
in a worker thread (see ``docs/adr/0002-sync-event-store-under-async-runtime.md``). A lock
serialises callers because the aggregate cache is shared.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from hashlib import blake2b
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import InteractionKey, KeyOwners, LedgerStore
from careledger.application.directory import Directory
from careledger.application.intake import to_interaction
from domain.account import ACCEPTED, PatientAccount, entries_of
from domain.errors import IdConflict, LedgerError, SubjectErased, UnknownProgram
from domain.interactions import ErasureRequest
from domain.program import Program
from domain.rejection import RejectedInput
from domain.values import Balance, Holdings, LedgerEntry, Standing
from schemas.v1 import InteractionV1
from schemas.validation import InvalidInteraction, parse_interaction

log = logging.getLogger(__name__)

REJECTED = "rejected"
DUPLICATE = "duplicate"
RELAY = "referral-relay"
SAVE_CHUNK = 500
ID_CONFLICT_REASON = "id: this (source, id) was already used by another interaction"
ERASED_REASON = "subject: the account this interaction went to was erased"
# What makes two events with one (source, id) the same interaction; the envelope's other
# attributes (specversion, datacontenttype) say nothing about it.
_CONTENT: set[str] = {"type", "subject", "programid", "data"}


@dataclass(frozen=True)
class Inbound:
    """One raw input: a Kafka record or a line of a file.

    ``origin`` says where it came from (``kafka:<topic>:<partition>:<offset>`` or
    ``file:<run>:<line>``) and makes the id of its dead letter if it is refused.
    """

    origin: str
    raw: bytes
    received_at: datetime


@dataclass(frozen=True)
class Result:
    """What became of one input. ``event_type`` is only set for valid events."""

    origin: str
    outcome: str  # accepted | duplicate | rejected
    event_type: str | None = None
    code: str | None = None
    reason: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Batch:
    """What one committed batch did: one result per input, and the entries it wrote."""

    results: list[Result]
    entries: list[LedgerEntry]


BeforeCommit = Callable[[list[Result]], None]


class PositionConflict(Exception):
    """Raised when a batch's positions are not ahead of the stored ones.

    Another consumer committed those records first (this one lost its partitions in a
    rebalance); nothing of the batch was written. The caller re-reads positions and moves on.
    """


@dataclass
class MaintenanceReport:
    """What one maintenance run changed."""

    accounts: int = 0
    changed_accounts: int = 0
    lots_expired: int = 0
    tier_changes: int = 0


@dataclass
class _Prepared:
    inbound: Inbound
    result: Result | None = None  # set when refused before reaching an account
    program: Program | None = None
    account_key: UUID | None = None
    addressed: Any = None
    rejection_source: tuple[str | None, str | None] = (None, None)
    extra: dict[str, Any] = field(default_factory=dict)
    key: bytes = b""  # hash of (source, id); see interaction_identity
    digest: bytes = b""  # hash of the content the key stands for
    patient: tuple[str, str] | None = None  # of an invalid event (its dead letter's key)


def interaction_identity(event: InteractionV1) -> tuple[bytes, bytes]:
    """The event's ledger-wide key and the digest of its content, 16 bytes each.

    Only hashes are stored (ids may be health data adjacent). The digest covers the validated
    content (type, subject, program, the instant of ``time``, data) as canonical JSON, so a
    redelivery with other key order, whitespace or UTC offset has the same digest.
    """
    key = blake2b(f"{event.source}\x1f{event.id}".encode(), digest_size=16).digest()
    content = event.model_dump(mode="json", include=_CONTENT)
    content["time"] = event.time.astimezone(UTC).isoformat()
    digest = blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return key, digest.digest()


class Ledger:
    """Applies batches of inputs to patient accounts and stores them in one transaction."""

    def __init__(
        self,
        store: LedgerStore,
        programs: dict[str, Program],
        cache_size: int,
        keyring: KeyRing | None = None,
    ) -> None:
        self.store = store
        self.directory = Directory(store, keyring)
        self.programs = programs
        self.cache_size = cache_size
        self._cache: OrderedDict[UUID, PatientAccount] = OrderedDict()
        # Accounts the last preload found missing: open them without asking the store again.
        self._absent: set[UUID] = set()
        self._lock = threading.RLock()

    # ------------------------------------------------------------- ingestion
    def apply_batch(
        self,
        inputs: Sequence[Inbound],
        positions: Sequence[Tracking] = (),
        before_commit: BeforeCommit | None = None,
    ) -> Batch:
        """Apply inputs in order and commit their effects, refusals and ``positions`` at once.

        ``before_commit`` sees the decisions before anything is committed (the worker sends
        refused records to the dead-letter topic there, so a crash can repeat a dead letter but
        never lose one). Raises :class:`PositionConflict` (nothing written) if a position is
        not ahead of the stored one.
        """
        prepared = [self._prepare(item) for item in inputs]
        with self._lock:
            poisoned: set[int] = set()
            for attempt in range(1, 6):
                try:
                    return self._apply_prepared(prepared, positions, poisoned, before_commit)
                except _Poisoned as poison:
                    poisoned.add(poison.index)
                except _StaleAccounts as stale:  # (the batch's accounts are evicted: reloaded)
                    log.warning("%d cached accounts were stale; reloading accounts", stale.count)
                except IntegrityError:
                    self.directory.reset()
                    if self._positions_behind(positions):
                        raise PositionConflict(
                            "positions already recorded by another consumer"
                        ) from None
                    log.warning("write conflict on attempt %d; reloading accounts", attempt)
            raise RuntimeError("could not commit the batch after 5 attempts")

    def _prepare(self, inbound: Inbound) -> _Prepared:
        try:
            event = parse_interaction(inbound.raw, now=inbound.received_at)
        except InvalidInteraction as exc:
            result = Result(inbound.origin, REJECTED, None, exc.code, exc.reason)
            patient = (exc.program_id, exc.subject) if exc.program_id and exc.subject else None
            return _Prepared(
                inbound, result, rejection_source=(exc.source, exc.source_id), patient=patient
            )
        addressed = to_interaction(event)
        program = self.programs.get(addressed.program_id)
        if program is None:
            result = Result(
                inbound.origin,
                REJECTED,
                event.type,
                UnknownProgram.code,
                "programid: not a program this ledger runs",
            )
            return _Prepared(inbound, result, rejection_source=(event.source, event.id))
        key, digest = interaction_identity(event)
        if self.directory.sealed:
            key = self.directory.interaction_key(event.source, event.id)
        return _Prepared(
            inbound,
            program=program,
            addressed=addressed,
            rejection_source=(event.source, event.id),
            extra={"type": event.type, "time": event.time},
            key=key,
            digest=digest,
        )

    def _apply_prepared(
        self,
        prepared: list[_Prepared],
        positions: Sequence[Tracking],
        poisoned: set[int],
        before_commit: BeforeCommit | None,
    ) -> Batch:
        touched: dict[UUID, PatientAccount] = {}
        results: list[Result] = []
        rejections: list[tuple[RejectedInput, UUID | None]] = []
        claims: list[InteractionKey] = []
        erased: list[UUID] = []
        reopened: dict[UUID, UUID] = {}  # erased in this batch -> its subject's new account
        self._absent.clear()
        live = [item for item in prepared if item.result is None]
        ids = self.directory.resolve(_patient(i) for i in live)
        for item in live:
            item.account_key = ids[_patient(item)]
        self._find_accounts_of_invalid(prepared)
        keys = {item.account_key for item in live if item.account_key is not None}
        # Cached accounts as the batch found them: another writer may have moved one on.
        cached = {key: self._cache[key].version for key in keys if key in self._cache}
        suspects: set[UUID] = set()  # cached accounts that refused something in this batch
        self._preload(keys)
        # Keys held in the whole ledger; the batch adds the keys it accepts as it goes.
        owners = self.store.find_interaction_keys([i.key for i in live])
        gone = self.directory.erased({owner for owner, _ in owners.values()}) if owners else set()
        try:
            for index, item in enumerate(prepared):
                if item.account_key in erased and item.result is None:
                    # after the subject's erasure in this batch, as in a later batch: the
                    # subject has no account any more; a new event starts a new one
                    old = item.account_key
                    if old not in reopened:
                        reopened[old] = self.directory.reopen(_patient(item))
                    item.account_key = reopened[old]
                result = item.result or self._key_taken(item, owners, gone)
                if result is None:
                    result = self._apply_one(index, item, touched, poisoned)
                    if result.outcome == REJECTED and item.account_key in cached:
                        suspects.add(item.account_key)
                if result.outcome == ACCEPTED:
                    claims.append(self._claim(item, owners))
                    if result.event_type == ErasureRequest.kind:
                        assert item.account_key is not None
                        erased.append(item.account_key)
                        gone.add(item.account_key)
                elif result.outcome == REJECTED:
                    rejections.append((self._rejection(item, result), item.account_key))
                results.append(result)
            entries = [
                entry
                for account in touched.values()
                for event in account.pending_events
                for entry in entries_of(event)
            ]
            self._refuse_only_on_stored_state(suspects, cached)
            if before_commit is not None:
                before_commit(results)
            self._seal_dead_letters(rejections, touched)
            letters = self._not_yet_recorded([rejection for rejection, _ in rejections])
            self._save([*touched.values(), *letters], positions, claims, erased)
        except BaseException:
            self._evict(touched)
            raise
        finally:
            if self.store.keys is not None:
                self.store.keys.seal_as.clear()
        return Batch(results, entries)

    def _refuse_only_on_stored_state(self, suspects: set[UUID], cached: dict[UUID, int]) -> None:
        """Raise :class:`_StaleAccounts` if an account that refused something was decided on
        a cached copy that another writer has since moved on.

        A write to such an account would conflict at commit, but a refusal writes nothing to
        it: decided on a stale copy (another worker's partition, the referral relay of
        another process) it would commit, and its dead letter go out, for a record the
        stored account accepts. One query, only when the batch refused something on a
        cached account.
        """
        if not suspects:
            return
        stored = self.store.stored_versions(sorted(suspects))
        stale = [key for key in suspects if stored.get(key) != cached[key]]
        if stale:
            raise _StaleAccounts(len(stale))

    def _find_accounts_of_invalid(self, prepared: list[_Prepared]) -> None:
        """The existing accounts of invalid events' subjects (never opened): their dead
        letters are sealed with those accounts' keys (ADR 0015). One query, if any."""
        invalid = [item for item in prepared if item.patient is not None]
        if not invalid or not self.directory.sealed:
            return
        found = self.directory.existing(item.patient for item in invalid if item.patient)
        for item in invalid:
            item.account_key = found.get(item.patient) if item.patient else None
        if self.store.keys is not None:
            self.store.keys.load(found.values())

    def _apply_one(
        self,
        index: int,
        item: _Prepared,
        touched: dict[UUID, PatientAccount],
        poisoned: set[int],
    ) -> Result:
        origin, event_type = item.inbound.origin, item.extra["type"]
        if index in poisoned:
            return Result(
                origin,
                REJECTED,
                event_type,
                "internal_error",
                "the ledger failed on this event; it was set aside for review",
            )
        assert item.program is not None and item.account_key is not None
        account = touched.get(item.account_key) or self._account(
            item.program, item.addressed.patient_id, item.account_key
        )
        touched[account.id] = account
        pending = len(account.pending_events)
        try:
            outcome = account.handle(item.addressed.interaction, item.program)
        except LedgerError as exc:
            if len(account.pending_events) != pending:  # a refusal must leave no trace
                log.error("refusal %s left events behind on %s", exc.code, origin)
                raise _Poisoned(index) from exc
            return Result(origin, REJECTED, event_type, exc.code, str(exc))
        except Exception as exc:
            log.exception("ledger failed on %s (%s)", origin, event_type)
            raise _Poisoned(index) from exc
        outcome = outcome if outcome == ACCEPTED else DUPLICATE
        return Result(origin, outcome, event_type, occurred_at=item.extra["time"])

    @staticmethod
    def _key_taken(item: _Prepared, owners: KeyOwners, gone: set[UUID]) -> Result | None:
        """A duplicate, ``subject_erased`` or an ``id_conflict`` if the item's key is held
        already, else ``None``.

        The ledger-wide check; the account's own receipts still catch redeliveries of
        interactions accepted before keys were registered (ADR 0010). A key held by an erased
        account is a redelivery to a forgotten patient (ADR 0015).
        """
        owner = owners.get(item.key)
        if owner is None:
            return None
        origin, event_type = item.inbound.origin, item.extra["type"]
        if owner[0] in gone:
            return Result(origin, REJECTED, event_type, SubjectErased.code, ERASED_REASON)
        if owner == (item.account_key, item.digest):
            return Result(origin, DUPLICATE, event_type, occurred_at=item.extra["time"])
        return Result(origin, REJECTED, event_type, IdConflict.code, ID_CONFLICT_REASON)

    @staticmethod
    def _claim(item: _Prepared, owners: KeyOwners) -> InteractionKey:
        assert item.account_key is not None
        owners[item.key] = (item.account_key, item.digest)
        return InteractionKey(item.key, item.account_key, item.digest)

    @staticmethod
    def _rejection(item: _Prepared, result: Result) -> RejectedInput:
        """The dead letter of a refusal; an interaction of an erased account keeps no id."""
        source, source_id = item.rejection_source
        if result.code == SubjectErased.code:
            source, source_id = None, None
        rejection = RejectedInput.record(
            origin=item.inbound.origin,
            code=result.code or "rejected",
            reason=result.reason or "",
            source=source,
            source_id=source_id,
            received_at=item.inbound.received_at,
        )
        return rejection

    def _seal_dead_letters(
        self, rejected: list[tuple[RejectedInput, UUID | None]], touched: dict[UUID, Any]
    ) -> None:
        """Seal each dead letter's interaction id with its patient's account key when that
        account is stored (by now or by this batch), so erasure shreds it too (ADR 0015)."""
        keys = self.store.keys
        if keys is None:
            return
        for rejection, account in rejected:
            if account is None or not keys.known(account):
                continue
            if account in touched or not self.directory.is_new(account):
                keys.seal_as[rejection.id] = account

    def _not_yet_recorded(self, rejections: list[RejectedInput]) -> list[RejectedInput]:
        """Drop dead letters already in the ledger (their id is derived from the origin).

        A record refused once and read again (a retried batch, a re-read partition) is the same
        dead letter; storing it twice would fail the whole batch.
        """
        if not rejections:
            return rejections
        stored = self.store.load_many([r.id for r in rejections])
        return [r for r in rejections if r.id not in stored]

    def _positions_behind(self, positions: Sequence[Tracking]) -> bool:
        for tracking in positions:
            stored = self.store.position(tracking.application_name)
            if stored is not None and stored >= tracking.notification_id:
                return True
        return False

    # ------------------------------------------------------------ accounts
    def _preload(self, keys: set[UUID]) -> None:
        """Load the batch's uncached accounts with one query instead of one per account."""
        missing = [key for key in keys if key not in self._cache]
        if not missing:
            return
        loaded = self.store.load_many(missing)
        for key, account in loaded.items():
            self._remember(key, account)
        self._absent.update(key for key in missing if key not in loaded)

    def _remember(self, key: UUID, account: PatientAccount) -> None:
        self._cache[key] = account
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _account(
        self, program: Program, patient_id: str, key: UUID | None = None
    ) -> PatientAccount:
        if key is None:
            (key,) = self.directory.resolve([(program.program_id, patient_id)]).values()
        account = self._cache.get(key)
        if account is not None:
            self._cache.move_to_end(key)
            return account
        if key in self._absent:
            self._absent.discard(key)
            account = PatientAccount.open(program, patient_id, key)
        else:
            try:
                account = self.store.repository.get(key)
            except AggregateNotFoundError:
                account = PatientAccount.open(program, patient_id, key)
        assert isinstance(account, PatientAccount)
        self._remember(key, account)
        return account

    def forget_accounts(self) -> None:
        """Drop every cached account. The worker calls it when a rebalance takes partitions
        away: another worker may then write those accounts, and a decision on the cached copy
        (a void of a visit it never saw refused as unknown) would commit wherever the batch
        writes nothing else to that account."""
        with self._lock:
            self._cache.clear()
            self._absent.clear()

    def _evict(self, accounts: dict[UUID, PatientAccount]) -> None:
        for key in accounts:
            self._cache.pop(key, None)

    def _save(
        self,
        aggregates: Sequence[Any],
        positions: Sequence[Tracking] = (),
        claims: Sequence[InteractionKey] = (),
        erased: Sequence[UUID] = (),
    ) -> None:
        writing = [a for a in aggregates if a.pending_events]
        writes = self.directory.writes([a.id for a in writing], erased)
        self._seal_references(writing)
        try:
            self.store.record(writing, positions, claims, writes)
        finally:
            if self.store.keys is not None:
                self.store.keys.seal_refs.clear()
        self.directory.committed(writes)
        for account in erased:
            self._cache.pop(account, None)

    def _seal_references(self, writing: Sequence[Any]) -> None:
        """Referral facts name the other patient: have them sealed with that patient's key
        (one directory query for the batch, only when it has such facts; ADR 0015)."""
        keys = self.store.keys
        if keys is None:
            return
        named = {
            (account.program_id, other)
            for account in writing
            if isinstance(account, PatientAccount)
            for event in account.pending_events
            if (other := _other_patient(event)) is not None
        }
        if not named:
            return
        stored = {account.id for account in writing}
        found = {
            patient: account
            for patient, account in self.directory.existing(named).items()
            if account in stored or not self.directory.is_new(account)
        }
        keys.load(found.values())
        keys.seal_refs = {orjson.dumps(subject)[1:-1]: id for (_, subject), id in found.items()}

    def load_account(self, program_id: str, patient_id: str) -> PatientAccount | None:
        """The account as stored (not from the cache), or ``None`` if it was never opened."""
        key = self.directory.find(program_id, patient_id)
        if key is None:
            return None
        try:
            account: Any = self.store.repository.get(key)
        except AggregateNotFoundError:
            return None
        assert isinstance(account, PatientAccount)
        return account

    def balance(self, program_id: str, patient_id: str) -> Balance | None:
        """A patient's balance, or ``None`` if the patient has no account in the program."""
        program = self._program(program_id)
        account = self.load_account(program_id, patient_id)
        return account.balance(program) if account else None

    def standing(self, program_id: str, patient_id: str) -> Standing | None:
        """Marketing consent and payer class, or ``None`` without an account."""
        self._program(program_id)
        account = self.load_account(program_id, patient_id)
        return account.standing() if account else None

    def holdings(self, program_id: str, patient_id: str) -> Holdings | None:
        """Benefits, memberships, vouchers and money wallets, or ``None`` without an account."""
        program = self._program(program_id)
        account = self.load_account(program_id, patient_id)
        return account.holdings(program) if account else None

    def statement(self, program_id: str, patient_id: str) -> list[LedgerEntry]:
        """Every line of an account's statement, in ledger order (oldest first): its ledger
        entries, and a zero-point line with its reason code for every interaction the account
        accepted without paying or refused (``domain.entries.statement_lines_of``)."""
        from domain.entries import statement_lines_of  # (local: keeps this change to here)

        key = self.directory.find(program_id, patient_id)
        events = self.store.events.get(key) if key is not None else []
        lines: list[LedgerEntry] = []
        for event in events:
            lines.extend(statement_lines_of(event, lines[-1].balance_after if lines else 0))
        return lines

    def _program(self, program_id: str) -> Program:
        try:
            return self.programs[program_id]
        except KeyError:
            raise UnknownProgram(f"no program {program_id!r}") from None

    # --------------------------------------------------------- maintenance
    def close_day(self, program_id: str, day: date, as_of: datetime) -> MaintenanceReport | None:
        """Run maintenance for a closed day unless some process already did (``None`` then).

        The day is recorded as a position (``YYYYMMDD``) in the same transaction as the last
        writes, and positions only move forward: however many workers try, a day closes once.
        """
        name = f"maintenance:{program_id}"
        marker = int(day.strftime("%Y%m%d"))
        if (self.store.position(name) or 0) >= marker:
            return None
        return self.maintain(program_id, as_of, done=Tracking(name, marker))

    def maintain(
        self, program_id: str, as_of: datetime, done: Tracking | None = None
    ) -> MaintenanceReport:
        """Expire lots due by ``as_of`` and set tiers, for every account of the program."""
        program = self._program(program_id)
        report = MaintenanceReport()
        with self._lock:
            batch: dict[UUID, PatientAccount] = {}
            for patient_id, key in self._patients(program_id):
                account = self._account(program, patient_id, key)
                report.accounts += 1
                account.maintain(as_of, program)
                if account.pending_events:
                    report.changed_accounts += 1
                    for event in account.pending_events:
                        report.lots_expired += isinstance(event, PatientAccount.PointsExpired)
                        report.tier_changes += isinstance(event, PatientAccount.TierChanged)
                    batch[account.id] = account
                if len(batch) >= SAVE_CHUNK:
                    self._save_or_evict(batch)
            self._save_or_evict(batch, [done] if done else [])
        return report

    def _save_or_evict(
        self, batch: dict[UUID, PatientAccount], positions: Sequence[Tracking] = ()
    ) -> None:
        try:
            self._save(list(batch.values()), positions)
        except BaseException:
            self._evict(batch)
            raise
        batch.clear()

    def _patients(self, program_id: str) -> Iterator[tuple[str, UUID]]:
        topic = get_topic(PatientAccount.Opened)
        start = 1
        while True:
            notifications = self.store.recorder.select_notifications(start, 1000, topics=[topic])
            for notification in notifications:
                opened = self.store.mapper.to_domain_event(notification)
                assert isinstance(opened, PatientAccount.Opened)
                if opened.program_id == program_id:
                    yield opened.patient_id, opened.originator_id
            if len(notifications) < 1000:
                return
            start = notifications[-1].id + 1

    # ------------------------------------------------------ referral relay
    def relay_referrals(self, limit: int = 1000) -> int:
        """Carry referral facts between the referrer's and the referee's accounts.

        Follows the ledger from its own recorded position; each step's writes and the new
        position commit together, so a crash never pays a bonus twice or skips one. Returns
        how many referral events were handled; call until it returns 0 to catch up.
        """
        topics = [
            get_topic(PatientAccount.ReferralMade),
            get_topic(PatientAccount.ReferralQualified),
        ]
        # Read outside the lock (the batch writer keeps going); a position past events that
        # are not referrals is recorded too, so the next call does not scan them again.
        position = self.store.position(RELAY) or 0
        head = self.store.recorder.max_notification_id() or 0
        if head <= position:
            return 0
        notifications = self.store.recorder.select_notifications(
            position + 1, limit, stop=head, topics=topics
        )
        upto = notifications[-1].id if len(notifications) == limit else head
        if not notifications:
            # Nothing to carry: only the position moves, and no account is read or written,
            # so the batch writer is not held up for it.
            with contextlib.suppress(IntegrityError):  # another process moved it first
                self.store.record([], [Tracking(RELAY, upto)])
            return 0
        events = [self.store.mapper.to_domain_event(n) for n in notifications]
        with self._lock:
            touched: dict[UUID, PatientAccount] = {}
            try:
                self._preload_referral_parties(events)
                for event in events:
                    self._relay_one(event, touched)
                self._save(list(touched.values()), [Tracking(RELAY, upto)])
            except IntegrityError:
                # another process relayed these first, or an account moved under us
                self._evict(touched)
                return 0
            except BaseException:
                self._evict(touched)
                raise
            return len(notifications)

    def _preload_referral_parties(self, events: list[Any]) -> None:
        """Load both sides of the referrals about to be relayed with two queries, not one
        per account: the relay holds the lock the batch writer needs."""
        self._absent.clear()
        self._preload({event.originator_id for event in events})
        others: list[tuple[str, str]] = []
        for event in events:
            source = self._cache.get(event.originator_id)
            if source is None:  # not cached (a tiny cache): _relay_one loads it
                continue
            made = isinstance(event, PatientAccount.ReferralMade)
            others.append((source.program_id, event.referee if made else event.referrer))
        if others:
            self._preload(set(self.directory.resolve(others).values()))

    def _relay_one(self, event: Any, touched: dict[UUID, PatientAccount]) -> None:
        source = touched.get(event.originator_id) or self._cached_or_loaded(event.originator_id)
        program = self._program(source.program_id)
        if isinstance(event, PatientAccount.ReferralMade):
            referee = self._touch(program, event.referee, touched)
            try:
                referee.note_referral(
                    source.patient_id, event.occurred_at, event.source, event.source_id, program
                )
            except LedgerError as exc:  # pragma: no cover - refused at intake already
                log.warning("referral not recorded: %s", exc.code)
        elif isinstance(event, PatientAccount.ReferralQualified):
            referrer = self._touch(program, event.referrer, touched)
            referrer.pay_referrer_bonus(
                source.patient_id, event.qualified_at, program, withheld=event.withheld
            )

    def _touch(
        self, program: Program, patient_id: str, touched: dict[UUID, PatientAccount]
    ) -> PatientAccount:
        (key,) = self.directory.resolve([(program.program_id, patient_id)]).values()
        account = touched.get(key) or self._account(program, patient_id, key)
        touched[key] = account
        return account

    def _cached_or_loaded(self, key: UUID) -> PatientAccount:
        account = self._cache.get(key)
        if account is None:
            loaded: Any = self.store.repository.get(key)
            assert isinstance(loaded, PatientAccount)
            return loaded
        return account

    def relay_until_idle(self) -> int:
        """Run the referral relay until nothing is left to carry; returns events handled."""
        total = 0
        while handled := self.relay_referrals():
            total += handled
        return total


class _StaleAccounts(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class _Poisoned(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _other_patient(event: Any) -> str | None:
    """The other patient a referral fact names, if it is one."""
    for name in ("referee", "referrer", "referred_by"):
        if (other := getattr(event, name, None)) is not None:
            return str(other)
    return None


def _patient(item: _Prepared) -> tuple[str, str]:
    return item.addressed.program_id, item.addressed.patient_id
