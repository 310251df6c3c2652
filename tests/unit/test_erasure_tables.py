"""Every read model that names a patient is handled at erasure (ADR 0015).

A table added later with a ``patient_id`` column and forgotten by ``projections.erasure``
would keep the erased subject in plain text (the payer tables were, when both changes met).
"""

from __future__ import annotations

from projections.erasure import DELETED, RE_KEYED
from projections.tables import READ_MODEL_TABLES, erasure_settlements, ledger_entries

# ledger_entries are re-keyed line by line (their interaction ids too); the settlements are
# written under the opaque id itself.
HANDLED_APART = {ledger_entries.name, erasure_settlements.name}


def test_every_table_naming_a_patient_is_re_keyed_or_deleted() -> None:
    naming = {t.name for t in READ_MODEL_TABLES if "patient_id" in t.c}
    handled = {t.name for t in (*RE_KEYED, *DELETED)} | HANDLED_APART
    assert naming - handled == set()
    assert handled - naming == set()  # and nothing listed that names nobody
