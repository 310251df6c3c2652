"""The rewards side's read models on both stores, row for row: vouchers, benefits held,
paid memberships and their monthly KPIs, and the money wallets (equal to what
``careledger balance`` shows); and rebuilt == followed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from careledger.application.ledger import Ledger
from projections.database import ReadModelsOutdated, connect
from projections.runner import ProjectionOptions
from projections.service import catch_up, rebuild
from tests.conftest import Database
from tests.integration.test_projections_support import (
    DISCOUNTS,
    DISCOUNTS_MAINTENANCE,
    PLUS,
    PLUS_MAINTENANCE,
    _dee,
    apply,
    clinic_discounts,
    clinic_discounts_after,
    dump,
    ledger_for,
    membership_plus,
    settings_for,
)

pytestmark = pytest.mark.integration


def t(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def voucher(
    program: str,
    patient: str,
    rid: str,
    points: int,
    issued: str,
    expires: str,
    status: str,
    used: str | None = None,
) -> tuple[Any, ...]:
    reward = "free-service" if rid.startswith("free-service") else "parking-pass"
    used_at = t(used) if used else None
    return (program, patient, rid, reward, points, t(issued), t(expires), used_at, status)


def rewards_history(ledger: Ledger) -> None:
    """Both programs' scenarios, their maintenance, then dee's last payment."""
    apply(ledger, [*membership_plus(), *clinic_discounts()])
    ledger.maintain(PLUS, PLUS_MAINTENANCE)
    ledger.maintain(DISCOUNTS, DISCOUNTS_MAINTENANCE)
    apply(ledger, clinic_discounts_after(), run="after")


async def test_the_rewards_side_leaves_exactly_these_rows(database: Database) -> None:
    settings = settings_for(database)
    ledger = ledger_for(database)
    apply(ledger, [*membership_plus(), *clinic_discounts()])
    await catch_up(settings, ProjectionOptions(batch_size=4))  # vouchers issued, then used
    ledger.maintain(PLUS, PLUS_MAINTENANCE)
    ledger.maintain(DISCOUNTS, DISCOUNTS_MAINTENANCE)
    apply(ledger, clinic_discounts_after(), run="after")
    await catch_up(settings, ProjectionOptions(batch_size=3))
    tables = await dump(settings)
    assert tables["dead_letters"] == []
    assert tables["vouchers"] == [
        # the 5th payment's stamp voucher (no points), used on 20 Jun
        voucher(
            DISCOUNTS, "dee", "free-service:1", 0, "2025-06-14", "2026-06-14", "used", "2025-06-20"
        ),
        voucher(PLUS, "mia", "r1", 300, "2026-01-10", "2026-04-10", "used", "2026-01-11"),
        # not used: expired by the maintenance of 1 May, dated at its expiry
        voucher(PLUS, "mia", "r2", 300, "2026-01-12", "2026-04-12", "expired"),
        voucher(PLUS, "mia", "r3", 300, "2026-01-13", "2026-04-13", "cancelled"),  # cancelled
    ]
    may = datetime(2026, 5, 1, tzinfo=UTC)  # when the maintenance saw mia's lapse
    assert tables["benefits"] == [
        (PLUS, "mia", "phone_access", t("2026-01-05"), "membership", may),
        (PLUS, "mia", "same_doctor", t("2026-01-05"), "membership", may),
        (PLUS, "pia", "phone_access", t("2026-01-20"), "membership", None),
        (PLUS, "pia", "priority_booking", t("2026-01-08"), "tier", None),  # plus's
        (PLUS, "pia", "same_doctor", t("2026-01-20"), "membership", None),
    ]
    assert tables["memberships"] == [
        # renewed on 1 Feb (to 5 Mar), cancelled on 10 Feb, lapsed at 5 Mar
        (PLUS, "mia", "m1", "monthly", t("2026-01-05"), t("2026-03-05"), "lapsed", t("2026-02-10")),
        (PLUS, "pia", "p1", "annual", t("2026-01-20"), t("2027-01-20"), "active", None),
    ]
    none = Decimal("0.00")
    assert tables["membership_kpis_monthly"] == [
        (PLUS, date(2026, 1, 1), 2, 2, 0, 0, Decimal("525.00")),  # 45.00 + 480.00
        (PLUS, date(2026, 2, 1), 2, 0, 1, 0, Decimal("45.00")),  # mia's renewal
        (PLUS, date(2026, 3, 1), 2, 0, 0, 1, none),  # mia paid to 5 Mar, lapsed then
        # pia's paid year, to 20 Jan 2027
        *[(PLUS, date(2026, month, 1), 1, 0, 0, 0, none) for month in range(4, 13)],
        (PLUS, date(2027, 1, 1), 1, 0, 0, 0, none),
    ]
    # prepaid 300.00 - 50.00 - 5.00; cashback 2.40 - 1.00 + 0.60 + 3 x 0.20 expired on
    # 1 Jan, then 0.20 of the last payment; 10 % as of it (300.00 within 365 days)
    [wallet] = tables["wallets"]
    assert wallet[:5] == (DISCOUNTS, "dee", Decimal("0.20"), Decimal("245.00"), 10)
    balances = {(row[0], row[1]): row for row in tables["balances"]}
    assert wallet[5] == balances[(DISCOUNTS, "dee")][-1]  # the account's latest event
    assert_equal_to_balance(ledger, tables)

    followed = tables
    await rebuild(settings)
    assert await dump(settings) == followed
    await rebuild(settings, ProjectionOptions(batch_size=2, account_cache=1, rebuild_workers=3))
    assert await dump(settings) == followed


def assert_equal_to_balance(ledger: Ledger, tables: dict[str, list[tuple[Any, ...]]]) -> None:
    """Wallets, vouchers and benefits held equal ``Ledger.holdings`` for every account
    (no wallets row: both wallets 0.00 and no prepayment discount)."""
    wallets = {(row[0], row[1]): row[2:5] for row in tables["wallets"]}
    for program_id, patient_id, *_ in tables["balances"]:
        holdings = ledger.holdings(program_id, patient_id)
        assert holdings is not None
        shown = (
            holdings.cashback_balance,
            holdings.prepaid_balance,
            holdings.prepayment_discount_percent,
        )
        assert wallets.get((program_id, patient_id), (Decimal("0.00"),) * 2 + (0,)) == shown
        vouchers = [
            (row[2], row[3], row[8])
            for row in tables["vouchers"]
            if row[:2] == (program_id, patient_id)
        ]
        assert vouchers == list(holdings.vouchers)
        held = sorted(
            row[2]
            for row in tables["benefits"]
            if row[:2] == (program_id, patient_id) and row[5] is None
        )
        assert held == list(holdings.benefits)


async def test_a_prepayment_after_the_latest_payment_moves_the_wallet_not_its_discount(
    database: Database,
) -> None:
    """The discount is the latest payment's (documented): a prepayment alone leaves it."""
    settings = settings_for(database)
    ledger = ledger_for(database)
    rewards_history(ledger)
    data = {"prepayment_id": "dee-pp2", "amount": "250.00", "currency": "GBP"}
    apply(ledger, [_dee("prepayment.recorded", "2026-02-02", data, "dee-pp2")], run="pp2")
    await catch_up(settings)
    [wallet] = (await dump(settings))["wallets"]
    assert wallet[2:5] == (Decimal("0.20"), Decimal("495.00"), 10)


REWARDS_TABLES = ("vouchers", "benefits", "memberships", "membership_kpis_monthly", "wallets")


async def test_a_projection_of_the_previous_version_is_refused_until_rebuilt(
    database: Database,
) -> None:
    """Read models built before the rewards tables existed: creating them empty beside an
    applied projection would miss every voucher and membership so far."""
    settings = settings_for(database)
    rewards_history(ledger_for(database))
    await catch_up(settings)
    expected = await dump(settings)
    engine = connect(settings.database_url, settings.database_schema)
    try:
        async with engine.begin() as conn:
            for table in REWARDS_TABLES:
                await conn.execute(text(f"DROP TABLE {table}"))
    finally:
        await engine.dispose()
    with pytest.raises(ReadModelsOutdated, match=r"vouchers, benefits, .*projections rebuild"):
        await catch_up(settings)
    await rebuild(settings)
    assert await catch_up(settings) == 0
    assert await dump(settings) == expected
