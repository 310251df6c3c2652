"""Keyed pseudonyms for everything the FHIR edge must not pass on as it is.

Every identifier of the EMR (the Patient reference, the resource ids) leaves the edge only as
an HMAC-SHA256 under ``CARELEDGER_PSEUDONYM_KEY``: stable (the same input always gives the
same output, so a redelivered resource maps to the same interaction), and without the key
neither reversible nor guessable from a list of likely ids, as a plain hash would be. Each use
has its own purpose label, so a subject can never equal an event id or a visit id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

MIN_KEY_BYTES: Final = 32
_SEPARATOR: Final = "\x1f"  # the ASCII unit separator: no FHIR id or reference contains it


class WeakPseudonymKey(ValueError):
    """Raised when the pseudonym key is shorter than ``MIN_KEY_BYTES`` bytes."""


class Pseudonyms:
    """The keyed hashes of one FHIR source (one EMR). Its repr never shows the key."""

    __slots__ = ("_key", "source")

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise WeakPseudonymKey(f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.source = source

    def __repr__(self) -> str:
        return f"Pseudonyms(source={self.source!r})"

    def subject(self, patient: str) -> str:
        """The patient's pseudonymous id: 52 characters of a-z 2-7, fits the subject pattern.

        ``patient`` is the normalised reference (``Patient/123``); the source is part of the
        input because ``Patient/123`` of two EMRs are two different people.
        """
        return self._digest("subject", self.source, patient)

    def event_id(self, resource_type: str, resource_id: str) -> str:
        """The CloudEvent id of the interaction a resource maps to (every version of it)."""
        return "fhir-" + self._digest("event", resource_type, resource_id)

    def void_id(self, resource_type: str, resource_id: str) -> str:
        """The CloudEvent id of the ``interaction.voided`` for an entered-in-error resource."""
        return "fhir-void-" + self._digest("void", resource_type, resource_id)

    def local_id(self, purpose: str, resource_id: str) -> str:
        """An id for the data of an interaction (``visit_id``, ``assessment_id``)."""
        return self._digest(purpose, self.source, resource_id)

    def _digest(self, purpose: str, *parts: str) -> str:
        message = _SEPARATOR.join((purpose, *parts)).encode("utf-8")
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.b32encode(mac).decode("ascii").rstrip("=").lower()
