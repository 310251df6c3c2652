"""The ledger service against real stores (SQLite and PostgreSQL): positions, replay, conflicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import Tracking

from careledger.application.ledger import Inbound, Ledger, PositionConflict
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from tests.conftest import Database
from tests.events import cloudevent

pytestmark = pytest.mark.integration
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ledger_for(db: Database, cache_size: int = 1000) -> Ledger:
    return build_ledger(
        Settings(database_url=db.url, database_schema=db.schema, aggregate_cache_size=cache_size)
    )


def inbound(origin: str, event: dict[str, object]) -> Inbound:
    return Inbound(origin, json.dumps(event).encode(), NOW)


def visits(patient: str, n: int, start: int = 1) -> list[dict[str, object]]:
    return [
        cloudevent(
            "visit.completed",
            patient,
            f"2026-01-{d:02d}T10:00:00Z",
            {"visit_id": f"v{d}", "visit_type": "in_person"},
            id=f"{patient}-visit-{d}",
        )
        for d in range(start, start + n)
    ]


def test_positions_commit_with_the_batch_and_only_move_forward(database: Database) -> None:
    ledger = ledger_for(database)
    batch = [inbound(f"kafka:t:0:{i}", e) for i, e in enumerate(visits("ann", 3))]
    ledger.apply_batch(batch, [Tracking("kafka:t:0", 2), Tracking("kafka:t:1", 7)])
    assert ledger.store.position("kafka:t:0") == 2
    assert ledger.store.position("kafka:t:1") == 7

    # A consumer that lost the partition retries old offsets: nothing of its batch lands.
    stale = ledger_for(database)
    more = [inbound("kafka:t:0:3", visits("ann", 1, start=20)[0])]
    with pytest.raises(PositionConflict):
        stale.apply_batch(more, [Tracking("kafka:t:0", 2)])
    assert stale.balance("clinic-default", "ann").available == 300  # type: ignore[union-attr]


def test_replaying_the_store_rebuilds_identical_accounts(database: Database) -> None:
    ledger = ledger_for(database)
    events = [
        *visits("bea", 12),
        cloudevent(
            "redemption.requested",
            "bea",
            "2026-01-20T00:00:00Z",
            {"redemption_id": "r1", "reward_id": "mug", "points": 400},
        ),
        cloudevent(
            "interaction.voided",
            "bea",
            "2026-01-21T00:00:00Z",
            {
                "voided_id": "bea-visit-2",
                "voided_source": "urn:careledger:test",
                "reason": "duplicate_entry",
            },
        ),
        cloudevent(
            "payment.recorded",
            "bea",
            "2026-01-22T00:00:00Z",
            {"amount": "250.50", "currency": "USD"},
        ),
    ]
    ledger.apply_batch([inbound(f"file:x:{i}", e) for i, e in enumerate(events)])
    cached = ledger._account(ledger.programs["clinic-default"], "bea")
    replayed = ledger_for(database).load_account("clinic-default", "bea")
    assert replayed is not None
    program = ledger.programs["clinic-default"]
    assert replayed.balance(program) == cached.balance(program)
    assert replayed.lots == cached.lots and replayed.receipts == cached.receipts
    assert replayed.version == cached.version


def test_a_write_conflict_reloads_the_account_and_applies_once(database: Database) -> None:
    first, second = ledger_for(database), ledger_for(database)
    first.apply_batch([inbound("file:a:1", visits("cy", 1)[0])])
    second.apply_batch([inbound("file:b:1", visits("cy", 1, start=2)[0])])  # caches cy at v3
    first.apply_batch([inbound("file:a:2", visits("cy", 1, start=3)[0])])  # cy moves to v3 too
    # second's cached account is stale: the save conflicts, it reloads and re-applies.
    results = second.apply_batch([inbound("file:b:2", visits("cy", 1, start=4)[0])])
    assert [r.outcome for r in results.results] == ["accepted"]
    balance = ledger_for(database).balance("clinic-default", "cy")
    assert balance is not None and balance.available == 400


def test_referral_relay_pays_once_across_accounts(database: Database) -> None:
    ledger = ledger_for(database)
    events = [
        cloudevent("referral.made", "dan", "2026-02-01T00:00:00Z", {"referee": "eve"}),
        cloudevent(
            "patient.enrolled",
            "eve",
            "2026-02-02T00:00:00Z",
            {"channel": "web", "referred_by": "dan"},
        ),
        cloudevent(
            "visit.completed",
            "eve",
            "2026-03-01T00:00:00Z",
            {"visit_id": "v", "visit_type": "specialist"},
        ),
    ]
    ledger.apply_batch([inbound(f"file:r:{i}", e) for i, e in enumerate(events)])
    assert ledger.relay_until_idle() >= 2
    assert ledger.relay_until_idle() == 0
    other = ledger_for(database)
    assert other.relay_until_idle() == 0  # the relay's position is stored, not in memory
    dan, eve = other.balance("clinic-default", "dan"), other.balance("clinic-default", "eve")
    assert dan is not None and eve is not None
    assert (dan.available, eve.available) == (1000, 600)


def test_processes_opening_a_fresh_store_together_all_succeed(pg_database: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from careledger.adapters.store import open_store

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: open_store(pg_database.url, pg_database.schema), range(6)))
    assert all(store.position("nothing-yet") is None for store in stores)
