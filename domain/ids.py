"""Deterministic identifiers.

Ids derived from natural keys with ``uuid5`` mean that replaying the same input can never
create a twin account, entry or lot: the store's uniqueness constraints catch any attempt.
"""

from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f1c2d1e-8a4b-5c3d-9e7f-0a1b2c3d4e5f")


@lru_cache(maxsize=65536)
def account_id(program_id: str, patient_id: str) -> UUID:
    """The id of a patient's account in one program."""
    return uuid5(NAMESPACE, f"account\x1f{program_id}\x1f{patient_id}")


def derived_id(*parts: str) -> UUID:
    """An id derived from the parts of a cause (``\\x1f`` cannot occur in validated input)."""
    return uuid5(NAMESPACE, "\x1f".join(parts))


def interaction_key(source: str, source_id: str) -> str:
    """The dedupe key CloudEvents defines: (source, id)."""
    return f"{source}\x1f{source_id}"
