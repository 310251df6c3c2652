"""Erasure in the read models (ADR 0015): the patient's rows re-keyed or deleted, totals kept.

Run by the writer after a batch's rows are written, for every account the batch closed by
erasure. The rows of the account's patient are found through ``balances`` (its account id)
and then:

* re-keyed to the opaque ``erased-<account id>`` (the id a rebuild decodes the patient as,
  once the key is gone): balances, wallets, tier history, benefits, activity, the KPI
  helpers, reward values by year and marketing consent, so every total computed from them
  stays the same;
* ``ledger_entries`` keep their points under that id, their interaction id replaced by
  ``erased`` (a rebuild reads each one as a different placeholder, so both become the same
  constant); the zero-point ``noted`` lines, whose ids the projection derives from the
  interaction id, are deleted (they move no points);
* rows keyed by a patient-linked id (vouchers, memberships, partner redemptions, goal
  readings) are deleted: their KPI tables (membership and voucher counts, settlements)
  were counted as the events came and are not recounted.

A rebuild does the same at the same event, so rebuilt tables equal the incremental ones.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.changes import BatchChanges, Erasure
from projections.tables import (
    activity_days,
    balances,
    benefits,
    erasure_settlements,
    ledger_entries,
    marketing_consent,
    memberships,
    partner_redemptions,
    patient_activity_days,
    patient_activity_months,
    patient_goal_readings,
    reward_value_by_year,
    tier_history,
    vouchers,
    wallets,
)

ERASED = "erased-"  # (careledger.adapters.shredding.erased_patient_id makes the same id)
ERASED_INTERACTION = "erased"
RE_KEYED = (
    balances,
    wallets,
    tier_history,
    benefits,
    activity_days,
    patient_activity_months,
    patient_activity_days,
    reward_value_by_year,
    marketing_consent,
)
DELETED = (vouchers, memberships, partner_redemptions, patient_goal_readings)


def opaque_id(erasure: Erasure) -> str:
    return ERASED + erasure.account_id.hex


async def erase_accounts(conn: AsyncConnection, changes: BatchChanges) -> dict[str, int]:
    """Re-key and delete the rows of the accounts ``changes`` closed; their settlements."""
    if not changes.erasures:
        return {}
    for erasure in changes.erasures:
        opaque = opaque_id(erasure)
        # the batch's row (a rebuild writes balances later), else the stored one
        row = changes.accounts.get(erasure.account_id)
        patients = {row.patient_id} if row is not None else set()
        found = await conn.execute(
            select(balances.c.patient_id).where(balances.c.account_id == erasure.account_id)
        )
        patients.update(stored.patient_id for stored in found)
        for patient_id in sorted(patients):
            await _rekey(conn, erasure.program_id, patient_id, opaque)
        if row is not None:  # a cached row must not bring the subject back next batch
            row.patient_id = opaque
        await conn.execute(
            delete(erasure_settlements).where(
                and_(
                    erasure_settlements.c.program_id == erasure.program_id,
                    erasure_settlements.c.patient_id == opaque,
                )
            )
        )
        await conn.execute(
            erasure_settlements.insert().values(
                program_id=erasure.program_id,
                patient_id=opaque,
                erased_at=erasure.erased_at,
                reason=erasure.reason,
                points_forfeited=erasure.points_forfeited,
                cashback_owed=erasure.cashback_owed,
                prepaid_owed=erasure.prepaid_owed,
            )
        )
    return {erasure_settlements.name: len(changes.erasures)}


async def _rekey(conn: AsyncConnection, program_id: str, patient_id: str, opaque: str) -> None:
    def of_patient(table: Any) -> Any:
        return and_(table.c.program_id == program_id, table.c.patient_id == patient_id)

    # referral bonuses in other patients' accounts name this patient
    await conn.execute(
        update(ledger_entries)
        .where(
            ledger_entries.c.program_id == program_id,
            ledger_entries.c.source == "careledger:referral",
            ledger_entries.c.source_id == patient_id,
        )
        .values(source_id=ERASED_INTERACTION)
    )
    entries = of_patient(ledger_entries)
    await conn.execute(delete(ledger_entries).where(entries, ledger_entries.c.kind == "noted"))
    await conn.execute(
        update(ledger_entries)
        .where(entries)
        .values(patient_id=opaque, source_id=ERASED_INTERACTION)
    )
    for table in DELETED:
        await conn.execute(delete(table).where(of_patient(table)))
    if patient_id == opaque:
        return
    for table in RE_KEYED:
        await conn.execute(update(table).where(of_patient(table)).values(patient_id=opaque))
