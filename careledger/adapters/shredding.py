"""Crypto-shredding of the patient-linked values in stored events (ADR 0015).

Each account has a random data key, stored wrapped (AES-GCM under a key derived from the
application secret) in ``account_keys``, apart from the events. Before an event is stored,
every patient-linked value (the subject, interaction ids, the ids of visits, redemptions,
vouchers, memberships and adjustments, referees and referrers) is replaced in the stored JSON
by a token ``~s1.<key id>.<nonce + ciphertext>`` sealed with that key; erasure deletes the
key, and every token sealed with it becomes unreadable for good.

Sealing works on the store's JSON bytes with one regular expression, so the domain, the
transcoder and the projections' typed decoders see plain strings and do not change: a reader
unseals the bytes first (:func:`unseal`), which costs nothing for events without tokens. A
token whose key is gone reads as an opaque placeholder (``erased-...``), never an error; the
placeholder of a value depends only on its token, so the same voucher or redemption id in two
events of an erased account still reads as one id, and a rebuild is the same every time.

The nonce is an HMAC of the value under the data key: the same value sealed twice under one
key gives the same token (the deterministic, SIV-like use of AES-GCM: equal values of one
account are visible as equal, nothing else), which is what keeps placeholders consistent.
"""

from __future__ import annotations

import hmac
import re
import secrets
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b, sha256
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from pydantic import SecretStr

# The stored fields that name the patient or one of their interactions (a ``LedgerEntry``'s
# ``source_id`` included: the regular expression finds a field at any depth).
SEALED_FIELDS = (
    "patient_id",
    "source_id",
    "referee",
    "referrer",
    "referred_by",
    "redemption_id",
    "voucher_id",
    "membership_id",
    "adjustment_id",
    "voided_key",
)
# Values naming *another* patient (referrals): sealed with that patient's key when the ledger
# knows the account (``DataKeys.seal_refs``), so erasing them shreds the reference too.
CROSS_FIELDS = frozenset({b"referee", b"referrer", b"referred_by"})
REFERRAL_ENTRY = b'"source":"careledger:referral",'  # its source_id is the other patient
TOKEN = b"~s1."
ERASED = "erased-"
_JSON_STRING = rb'"((?:[^"\\]|\\.)*)"'
_PLAIN = re.compile(rb'"(' + "|".join(SEALED_FIELDS).encode() + rb')":' + _JSON_STRING)
_SEALED = re.compile(rb'"(\w+)":"~s1\.([0-9a-f]{32})\.([A-Za-z0-9_=-]+)"')


class KeyRing:
    """The keys derived from the application secret (read once at the entry point).

    Separate keys for separate uses: wrapping data keys, the account directory's lookup
    hashes, and the interaction keys (ledger-wide dedupe, ADR 0010).
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the ledger secret must be at least 32 bytes")
        self._wrap = AESGCM(self._derive(secret, b"careledger data-key wrap v1"))
        self._lookup = self._derive(secret, b"careledger account lookup v1")
        self._interaction = self._derive(secret, b"careledger interaction keys v1")

    @classmethod
    def of(cls, secret: SecretStr | None) -> KeyRing | None:
        """The keyring of the settings' ledger secret, or ``None`` without one."""
        return cls(secret.get_secret_value().encode()) if secret is not None else None

    @staticmethod
    def _derive(secret: bytes, purpose: bytes) -> bytes:
        return hmac.new(secret, purpose, sha256).digest()

    def new_data_key(self) -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, account_id: UUID, data_key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._wrap.encrypt(nonce, data_key, account_id.bytes)

    def unwrap(self, account_id: UUID, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], account_id.bytes)

    def lookup(self, program_id: str, patient_id: str) -> bytes:
        """The directory's key of a patient's account: nobody without the secret can
        recompute it from the subject."""
        message = f"account\x1f{program_id}\x1f{patient_id}".encode()
        return hmac.new(self._lookup, message, sha256).digest()[:16]

    def interaction_key(self, source: str, source_id: str) -> bytes:
        """The ledger-wide dedupe key of (``source``, ``id``), keyed like the lookup."""
        message = f"{source}\x1f{source_id}".encode()
        return blake2b(message, key=self._interaction, digest_size=16).digest()


class DataKeys:
    """The data keys this process has seen, by account id, and those known to be gone.

    ``fetch`` reads wrapped keys from the store (one query for many ids); ``seal_as`` lets an
    event of another aggregate (a dead letter) be sealed with an account's key.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.fetch: Callable[[list[UUID]], dict[UUID, bytes]] = lambda ids: {}
        self._keys: dict[UUID, AESGCM] = {}
        self._raw: dict[UUID, bytes] = {}
        self._gone: set[UUID] = set()
        self.seal_as: dict[UUID, UUID] = {}
        self.seal_refs: dict[bytes, UUID] = {}  # another patient's subject -> their account

    def add(self, account_id: UUID, data_key: bytes) -> None:
        self._raw[account_id] = data_key
        self._keys[account_id] = AESGCM(data_key)
        self._gone.discard(account_id)

    def load(self, ids: Iterable[UUID]) -> None:
        """Fetch the keys of ``ids`` not known yet, in one query; missing ones are gone."""
        missing = [i for i in ids if i not in self._keys and i not in self._gone]
        if not missing:
            return
        found = self.fetch(missing)
        for account_id in missing:
            wrapped = found.get(account_id)
            if wrapped is None:
                self._gone.add(account_id)
            else:
                self.add(account_id, self.ring.unwrap(account_id, wrapped))

    def forget(self, account_id: UUID) -> None:
        """The key was destroyed (erasure): never use it again."""
        self._keys.pop(account_id, None)
        self._raw.pop(account_id, None)
        self._gone.add(account_id)

    def reset(self, account_id: UUID) -> None:
        """Drop what is known of ``account_id`` (a write conflict: ask the store again)."""
        self._keys.pop(account_id, None)
        self._raw.pop(account_id, None)
        self._gone.discard(account_id)

    def cipher(self, account_id: UUID) -> tuple[AESGCM, bytes] | None:
        if account_id not in self._keys:
            self.load([account_id])
        cipher = self._keys.get(account_id)
        return None if cipher is None else (cipher, self._raw[account_id])

    def known(self, account_id: UUID) -> bool:
        return account_id in self._keys

    def gone(self, ids: Iterable[UUID]) -> set[UUID]:
        """Which of ``ids`` have no key any more (erased), asking the store once."""
        ids = list(ids)
        self.load(ids)
        return {i for i in ids if i in self._gone}


def seal(
    state: bytes,
    key_id: UUID,
    cipher: AESGCM,
    raw_key: bytes,
    others: Callable[[bytes], tuple[UUID, AESGCM, bytes] | None] = lambda _: None,
) -> bytes:
    """``state`` with every patient-linked value replaced by its token; a value naming
    another patient is sealed with ``others(value)``'s key when it gives one."""

    def sealed(match: re.Match[bytes]) -> bytes:
        field, value = match.group(1), match.group(2)
        if value.startswith(TOKEN):
            return match.group(0)
        kid, aead, raw = key_id, cipher, raw_key
        cross = field in CROSS_FIELDS or (
            field == b"source_id" and state.endswith(REFERRAL_ENTRY, 0, match.start())
        )
        if cross and (other := others(value)) is not None:
            kid, aead, raw = other
        nonce = hmac.new(raw, value, sha256).digest()[:12]
        body = urlsafe_b64encode(nonce + aead.encrypt(nonce, value, kid.bytes))
        return b'"' + field + b'":"' + TOKEN + kid.hex.encode() + b"." + body + b'"'

    return _PLAIN.sub(sealed, state)


def key_ids(state: bytes) -> set[UUID]:
    """The accounts whose keys ``state``'s tokens were sealed with."""
    return {UUID(match.group(2).decode()) for match in _SEALED.finditer(state)}


def unseal(state: bytes, keys: Mapping[UUID, AESGCM | None]) -> bytes:
    """``state`` with its tokens opened; a token whose key is absent reads as a placeholder
    (the subject as ``erased-<account key id>``, any other value from its token's hash)."""

    def opened(match: re.Match[bytes]) -> bytes:
        field, kid, body = match.group(1), match.group(2), match.group(3)
        key_id = UUID(kid.decode())
        cipher = keys.get(key_id)
        value: bytes | None = None
        if cipher is not None:
            data = urlsafe_b64decode(body)
            try:
                value = cipher.decrypt(data[:12], data[12:], key_id.bytes)
            except InvalidTag:
                value = None
        if value is None:
            value = placeholder(field, kid, body)
        return b'"' + field + b'":"' + value + b'"'

    return _SEALED.sub(opened, state)


def placeholder(field: bytes, kid: bytes, body: bytes) -> bytes:
    """What an unreadable token reads as: opaque, stable, unique within the account."""
    if field == b"patient_id":
        return ERASED.encode() + kid
    return ERASED.encode() + blake2b(body, digest_size=8).hexdigest().encode()


def erased_patient_id(account_id: UUID) -> str:
    """The opaque id an erased account's patient reads as (read models are re-keyed to it)."""
    return ERASED + account_id.hex


class SealingMapper(Mapper[UUID]):
    """The store's mapper, sealing on the way in and unsealing on the way out."""

    def __init__(self, transcoder: Transcoder, keys: DataKeys) -> None:
        super().__init__(transcoder=transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        stored = super().to_stored_event(domain_event)
        originator = stored.originator_id
        assert isinstance(originator, UUID)
        owner = self.keys.seal_as.get(originator, originator)
        found = self.keys.cipher(owner) if self.keys.known(owner) else None
        if found is None:  # an account written before sealing, or a dead letter of nobody
            return stored
        state = seal(stored.state, owner, *found, self._other)
        return StoredEvent(stored.originator_id, stored.originator_version, stored.topic, state)

    def _other(self, subject: bytes) -> tuple[UUID, AESGCM, bytes] | None:
        account = self.keys.seal_refs.get(subject)
        found = self.keys.cipher(account) if account is not None else None
        return None if account is None or found is None else (account, *found)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        if TOKEN in stored_event.state:
            stored_event = StoredEvent(
                stored_event.originator_id,
                stored_event.originator_version,
                stored_event.topic,
                self.unsealed(stored_event.state),
            )
        return super().to_domain_event(stored_event)

    def opened(
        self, states: list[bytes], keep_sealed: frozenset[str], topics: list[str]
    ) -> list[bytes]:
        """``states`` unsealed with one query for all their keys, except the states of the
        ``keep_sealed`` topics (a reader that must not see those values, ADR 0015)."""
        sealed = [
            i for i, state in enumerate(states) if TOKEN in state and topics[i] not in keep_sealed
        ]
        if not sealed:
            return states
        self.keys.load({kid for i in sealed for kid in key_ids(states[i])})
        opened = list(states)
        for i in sealed:
            opened[i] = self.unsealed(states[i])
        return opened

    def unsealed(self, state: bytes) -> bytes:
        ids = key_ids(state)
        self.keys.load(ids)
        return unseal(state, {i: found[0] for i in ids if (found := self.keys.cipher(i))})
