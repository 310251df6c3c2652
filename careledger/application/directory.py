"""Which account a patient has in a program, and the keys of the ledger's interactions.

With a keyring (the application secret, ADR 0015) an account's id is random, found through
the store's ``account_directory`` by a keyed hash of program and subject, and a new account
gets a random data key; both rows are written with the account's first events and deleted by
its erasure. Without one (stores and tests from before ADR 0015) ids are derived from the
subject as before (``domain.ids.account_id``) and nothing is sealed.

Lookups are batched: one query resolves every uncached subject of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b
from uuid import UUID, uuid4

from careledger.adapters.directory_tables import DirectoryWrites, NewAccount
from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import LedgerStore
from domain.ids import account_id

Patient = tuple[str, str]  # (program id, subject)
CACHE_LIMIT = 200_000


class Directory:
    """Finds (and opens) accounts by patient; says which accounts were erased."""

    def __init__(self, store: LedgerStore, keyring: KeyRing | None) -> None:
        self.store, self.keyring = store, keyring
        self._ids: dict[bytes, UUID] = {}
        self._new: dict[UUID, NewAccount] = {}  # opened in memory, not committed yet

    @property
    def sealed(self) -> bool:
        return self.keyring is not None

    def interaction_key(self, source: str, source_id: str) -> bytes:
        """The ledger-wide dedupe key of (``source``, ``id``): keyed with the secret when
        there is one (so it cannot be recomputed from an id), else a plain hash (ADR 0010)."""
        if self.keyring is not None:
            return self.keyring.interaction_key(source, source_id)
        return blake2b(f"{source}\x1f{source_id}".encode(), digest_size=16).digest()

    def resolve(self, patients: Iterable[Patient]) -> dict[Patient, UUID]:
        """The account id of each patient; patients without one get a new random id (and
        data key), written only if the batch stores events for it."""
        ring = self.keyring
        if ring is None:
            return {p: account_id(*p) for p in patients}
        lookups = {p: ring.lookup(*p) for p in set(patients)}
        missing = [h for h in lookups.values() if h not in self._ids]
        if missing:
            found = self.store._recorder().select_directory(missing)
            if len(self._ids) + len(found) > CACHE_LIMIT:
                self._ids.clear()
            self._ids.update(found)
        for lookup in missing:
            if lookup not in self._ids:
                self._open(lookup)
        return {p: self._ids[h] for p, h in lookups.items()}

    def existing(self, patients: Iterable[Patient]) -> dict[Patient, UUID]:
        """The committed accounts of ``patients`` (absent ones left out; none opened)."""
        assert self.keyring is not None
        ring = self.keyring
        lookups = {ring.lookup(*p): p for p in set(patients)}
        known = {lookups[h]: self._ids[h] for h in lookups if h in self._ids}
        asked = [h for h in lookups if h not in self._ids]
        found = self.store._recorder().select_directory(asked) if asked else {}
        return known | {lookups[h]: account for h, account in found.items()}

    def find(self, program_id: str, patient_id: str) -> UUID | None:
        """The patient's committed account, or ``None`` (nothing is opened)."""
        if self.keyring is None:
            return account_id(program_id, patient_id)
        lookup = self.keyring.lookup(program_id, patient_id)
        return self.store._recorder().select_directory([lookup]).get(lookup)

    def _open(self, lookup: bytes) -> None:
        assert self.keyring is not None and self.store.keys is not None
        new_id = uuid4()
        data_key = self.keyring.new_data_key()
        self.store.keys.add(new_id, data_key)
        self._new[new_id] = NewAccount(new_id, lookup, self.keyring.wrap(new_id, data_key))
        self._ids[lookup] = new_id

    def reopen(self, patient: Patient) -> UUID:
        """A new account for a patient whose account this batch erased (its directory row
        is deleted before the new one is inserted, in the same transaction)."""
        assert self.keyring is not None
        lookup = self.keyring.lookup(*patient)
        self._open(lookup)
        return self._ids[lookup]

    def is_new(self, account: UUID) -> bool:
        return account in self._new

    def writes(self, stored: Iterable[UUID], erased: Iterable[UUID]) -> DirectoryWrites:
        """The rows a transaction storing events of ``stored`` and erasing ``erased`` adds
        and removes (an account opened and erased in one batch leaves no row)."""
        gone = set(erased)
        opened = [self._new[i] for i in stored if i in self._new and i not in gone]
        return DirectoryWrites(opened, sorted(gone))

    def committed(self, writes: DirectoryWrites) -> None:
        for erased in writes.erased:
            self.forget(erased)
        for account in writes.opened:
            self._new.pop(account.account_id, None)
            self._ids[account.lookup] = account.account_id

    def forget(self, account: UUID) -> None:
        """The account was erased: its subject maps to no account, its key is gone."""
        self._new.pop(account, None)
        for lookup in [h for h, i in self._ids.items() if i == account]:
            del self._ids[lookup]
        if self.store.keys is not None:
            self.store.keys.forget(account)

    def reset(self) -> None:
        """A write conflict: forget uncommitted accounts and ask the store again."""
        for new in self._new.values():
            self._ids.pop(new.lookup, None)
            if self.store.keys is not None:
                self.store.keys.reset(new.account_id)
        self._new.clear()

    def erased(self, accounts: Iterable[UUID]) -> set[UUID]:
        """Which of ``accounts`` were erased (their key is gone), in one query."""
        if self.store.keys is None:
            return set()
        return self.store.keys.gone(accounts)
