"""The outbound feed on a real broker and both stores: the golden scenario's topic holds
exactly the expected facts, with ids that a replay, a second store or a re-run reproduce."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from careledger.adapters.broker import EmbeddedBroker
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.feed import FEED_POSITION, FeedOptions
from schemas.ledger_v1 import LEDGER_SOURCE, LedgerEventV1, schema_url
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_feed_support import (
    NOW,
    PROGRAM,
    A,
    B,
    C,
    feed_into,
    messages_on,
    scenario_ledger,
)
from tests.kafka_support import unique_name

pytestmark = pytest.mark.integration

# (subject, type, time, data without lot ids, program version and occurred_at; cause by id)
EXPECTED: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        A,
        "points.earned",
        "2025-01-15T10:00:00Z",
        {
            "cause": "a-v1",
            "points": 100,
            "balance_after": 100,
            "rule_id": "visit.in_person",
            "kind": "earned",
            "expires_at": "2026-01-15T10:00:00Z",
        },
    ),
    (
        A,
        "points.earned",
        "2025-02-01T10:00:00Z",
        {
            "cause": "a-ck1",
            "points": 500,
            "balance_after": 600,
            "rule_id": "checkup.annual_wellness",
            "kind": "earned",
            "expires_at": "2026-02-01T10:00:00Z",
        },
    ),
    (
        A,
        "points.earned",
        "2025-02-10T10:00:00Z",
        {
            "cause": "a-ck2",
            "points": 200,
            "balance_after": 800,
            "rule_id": "checkup.screening",
            "kind": "earned",
            "expires_at": "2026-02-10T10:00:00Z",
        },
    ),
    (
        A,
        "points.earned",
        "2025-02-12T10:00:00Z",
        {
            "cause": "a-as",
            "points": 250,
            "balance_after": 1050,
            "rule_id": "assessment",
            "kind": "earned",
            "expires_at": "2026-02-12T10:00:00Z",
        },
    ),
    # right after the interaction that reached the threshold, which it names as its cause
    (
        A,
        "tier.changed",
        "2025-02-12T10:00:00Z",
        {
            "cause": "a-as",
            "from_tier": "bronze",
            "to_tier": "silver",
            "reason": "qualifying_points",
            "qualifying_points": 1050,
        },
    ),
    (
        A,
        "points.earned",
        "2025-03-01T10:00:00Z",
        {
            "cause": C,
            "points": 1000,
            "balance_after": 2050,
            "rule_id": "referral.referrer",
            "kind": "bonus",
            "expires_at": "2026-03-01T10:00:00Z",
        },
    ),
    (
        A,
        "points.redeemed",
        "2025-03-01T12:00:00Z",
        {
            "cause": "a-r1",
            "points": -300,
            "balance_after": 1750,
            "rule_id": "redemption",
            "redemption_id": "r1",
            "reward_id": "gift",
        },
    ),
    (
        A,
        "points.returned",
        "2025-03-05T10:00:00Z",
        {
            "cause": "a-r1x",
            "points": 300,
            "balance_after": 2050,
            "rule_id": "redemption.cancel",
            "redemption_id": "r1",
        },
    ),
    (
        A,
        "points.redeemed",
        "2025-03-10T10:00:00Z",
        {
            "cause": "a-r2",
            "points": -150,
            "balance_after": 1900,
            "rule_id": "redemption",
            "redemption_id": "r2",
            "reward_id": "gift",
        },
    ),
    (
        A,
        "points.reversed",
        "2025-03-15T10:00:00Z",
        {
            "cause": "a-void",
            "points": -200,
            "balance_after": 1700,
            "rule_id": "void",
            "voided": {"source": "urn:careledger:test", "id": "a-ck2"},
            "reason": "entered_in_error",
        },
    ),
    (
        A,
        "points.adjusted",
        "2025-03-20T10:00:00Z",
        {
            "cause": "a-adj1",
            "points": 50,
            "balance_after": 1750,
            "rule_id": "adjustment",
            "adjustment_id": "a-adj1",
            "reason": "goodwill",
            "operator": "staff-7",
            "expires_at": "2026-03-20T10:00:00Z",
        },
    ),
    (
        A,
        "points.adjusted",
        "2025-03-21T10:00:00Z",
        {
            "cause": "a-adj2",
            "points": -30,
            "balance_after": 1720,
            "rule_id": "adjustment",
            "adjustment_id": "a-adj2",
            "reason": "correction",
            "operator": "staff-7",
        },
    ),
    # the first close of day: the void left 850 qualifying points, below silver's 1000
    (
        A,
        "tier.changed",
        "2025-12-11T00:00:00Z",
        {
            "cause": None,
            "from_tier": "silver",
            "to_tier": "bronze",
            "reason": "maintenance",
            "qualifying_points": 850,
        },
    ),
    # 30 days ahead, at the first close of day whose horizon reaches each live lot; the
    # first lot (2026-01-15) was spent, the screening's was voided: no notice for them
    (
        A,
        "points.expiring",
        "2026-01-03T00:00:00Z",
        {
            "cause": None,
            "points": 420,
            "expires_at": "2026-02-01T10:00:00Z",
            "as_of": "2026-01-03T00:00:00Z",
            "notice_days": 30,
        },
    ),
    (
        A,
        "points.expiring",
        "2026-01-14T00:00:00Z",
        {
            "cause": None,
            "points": 250,
            "expires_at": "2026-02-12T10:00:00Z",
            "as_of": "2026-01-14T00:00:00Z",
            "notice_days": 30,
        },
    ),
    (
        A,
        "points.expiring",
        "2026-01-31T00:00:00Z",
        {
            "cause": None,
            "points": 1000,
            "expires_at": "2026-03-01T10:00:00Z",
            "as_of": "2026-01-31T00:00:00Z",
            "notice_days": 30,
        },
    ),
    (
        A,
        "points.expired",
        "2026-02-01T10:00:00Z",
        {"cause": "a-ck1", "points": -420, "balance_after": 1300, "rule_id": "expiry"},
    ),
    (
        A,
        "points.expired",
        "2026-02-12T10:00:00Z",
        {"cause": "a-as", "points": -250, "balance_after": 1050, "rule_id": "expiry"},
    ),
    (
        B,
        "points.earned",
        "2025-01-05T10:00:00Z",
        {
            "cause": "b-v1",
            "points": 100,
            "balance_after": 100,
            "rule_id": "visit.in_person",
            "kind": "earned",
            "expires_at": "2026-01-05T10:00:00Z",
        },
    ),
    (
        B,
        "points.earned",
        "2025-02-01T11:00:00Z",
        {
            "cause": "b-v3",
            "points": 100,
            "balance_after": 200,
            "rule_id": "visit.in_person",
            "kind": "earned",
            "expires_at": "2026-02-01T11:00:00Z",
        },
    ),
    (
        B,
        "points.redeemed",
        "2025-06-01T10:00:00Z",
        {
            "cause": "b-r3",
            "points": -100,
            "balance_after": 100,
            "rule_id": "redemption",
            "redemption_id": "r3",
            "reward_id": "gift",
        },
    ),
    # cancelled after the lot it drew on expired: back, and expired at once
    (
        B,
        "points.expired",
        "2026-01-20T10:00:00Z",
        {
            "cause": "b-r3x",
            "points": -100,
            "balance_after": 100,
            "rule_id": "expiry",
            "redemption_id": "r3",
        },
    ),
    (
        B,
        "points.returned",
        "2026-01-20T10:00:00Z",
        {
            "cause": "b-r3x",
            "points": 100,
            "balance_after": 200,
            "rule_id": "redemption.cancel",
            "redemption_id": "r3",
        },
    ),
    (
        B,
        "points.expired",
        "2026-02-01T11:00:00Z",
        {"cause": "b-v3", "points": -100, "balance_after": 0, "rule_id": "expiry"},
    ),
    (
        C,
        "points.earned",
        "2025-03-01T10:00:00Z",
        {
            "cause": "c-v1",
            "points": 50,
            "balance_after": 50,
            "rule_id": "visit.telehealth",
            "kind": "earned",
            "expires_at": "2026-03-01T10:00:00Z",
        },
    ),
    (
        C,
        "points.earned",
        "2025-03-01T10:00:00Z",
        {
            "cause": A,
            "points": 500,
            "balance_after": 550,
            "rule_id": "referral.referee",
            "kind": "bonus",
            "expires_at": "2026-03-01T10:00:00Z",
        },
    ),
]
EXPECTED_COUNTS = Counter(event_type for _, event_type, _, _ in EXPECTED)


def _summary(message: LedgerEventV1) -> tuple[str, str, str, dict[str, Any]]:
    data = message.data.model_dump(
        mode="json", exclude={"lot_id", "program_version", "occurred_at"}
    )
    cause = data.pop("cause", None)
    summary = {"cause": cause["id"] if cause else None}
    summary.update({key: value for key, value in data.items() if value is not None})
    time = message.time.isoformat().replace("+00:00", "Z")
    return (message.subject, message.type, time, summary)


def _ordered(messages: list[LedgerEventV1]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return sorted((_summary(m) for m in messages), key=lambda s: (s[0], s[2], s[1]))


def _by_id(messages: list[LedgerEventV1]) -> dict[str, str]:
    return {str(m.id): m.model_dump_json() for m in messages}


def _settings(database: Database) -> Settings:
    return Settings(database_url=database.url, database_schema=database.schema)


def test_the_golden_scenario_publishes_exactly_its_facts(
    database: Database, kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    ledger = scenario_ledger(_settings(database))
    topic, registry = unique_name("ledger"), CollectorRegistry()
    feed = asyncio.run(feed_into(ledger, kafka_broker.bootstrap, topic, registry=registry))
    keyed = asyncio.run(messages_on(kafka_broker.bootstrap, topic))
    messages = [message for _, message in keyed]

    assert feed.published == len(messages) == len(EXPECTED)
    assert Counter(m.type for m in messages) == EXPECTED_COUNTS
    assert _ordered(messages) == EXPECTED
    assert all(key == m.subject.encode() for key, m in keyed)  # keyed by patient
    assert len({m.id for m in messages}) == len(messages)
    for message in messages:
        assert (message.source, message.programid) == (LEDGER_SOURCE, PROGRAM)
        assert message.dataschema == schema_url(message.type)
        assert message.data.program_version == "2026.1"
    # the marketing notice: only for the consenting patient, once per lot, naming a lot
    # that a points.earned message created
    expiring = [m for m in messages if m.type == "points.expiring"]
    assert {m.subject for m in expiring} == {A}
    earned_lots = {m.data.lot_id for m in messages if m.type == "points.earned"}  # type: ignore[union-attr]
    lots = [m.data.lot_id for m in expiring]  # type: ignore[union-attr]
    assert len(set(lots)) == len(lots) and set(lots) <= earned_lots
    # the points of a subject's messages add up to the ledger's balance (a mirror keeps it)
    for patient in (A, B, C):
        balance = ledger.balance(PROGRAM, patient)
        assert balance is not None
        mirrored = sum(
            m.data.points  # type: ignore[union-attr]
            for m in messages
            if m.subject == patient and m.type.startswith("points.") and m.type != "points.expiring"
        )
        assert mirrored == balance.available, patient
    # position and metrics: at the head, nothing behind; counted by type, no patient label
    head = ledger.store.recorder.max_notification_id()
    assert feed.position == head == ledger.store.position("feed:test")
    assert registry.get_sample_value("careledger_feed_lag_events") == 0
    assert registry.get_sample_value("careledger_feed_position") == head
    for event_type, count in EXPECTED_COUNTS.items():
        value = registry.get_sample_value("careledger_feed_messages_total", {"type": event_type})
        assert value == count

    # running again from the recorded position sends nothing new
    again = asyncio.run(feed_into(ledger, kafka_broker.bootstrap, topic))
    assert again.published == 0
    # a re-run from position 0 sends the very same messages, ids included
    rerun_topic = unique_name("ledger-rerun")
    asyncio.run(feed_into(ledger, kafka_broker.bootstrap, rerun_topic, name="feed:rerun"))
    rerun = [m for _, m in asyncio.run(messages_on(kafka_broker.bootstrap, rerun_topic))]
    assert _by_id(rerun) == _by_id(messages)
    # the same input into a fresh store: the same ids and messages
    fresh = scenario_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}"))
    fresh_topic = unique_name("ledger-fresh")
    asyncio.run(feed_into(fresh, kafka_broker.bootstrap, fresh_topic, name=FEED_POSITION))
    replayed = [m for _, m in asyncio.run(messages_on(kafka_broker.bootstrap, fresh_topic))]
    assert _by_id(replayed) == _by_id(messages)


def test_holders_and_causes_come_from_the_store_when_not_in_memory(
    database: Database, kafka_broker: EmbeddedBroker
) -> None:
    """One event per batch and room for one account: nearly every subject is loaded from its
    account's first event, and every tier upgrade's cause from the event before it."""
    ledger = scenario_ledger(_settings(database))
    topic = unique_name("ledger-small")
    options = FeedOptions(batch_max=1, holders=1)
    asyncio.run(feed_into(ledger, kafka_broker.bootstrap, topic, options=options))
    messages = [m for _, m in asyncio.run(messages_on(kafka_broker.bootstrap, topic))]
    assert _ordered(messages) == EXPECTED


def test_a_streak_bonus_and_its_reversal_are_published(
    sqlite_database: Database, kafka_broker: EmbeddedBroker
) -> None:
    """Seven goal days pay the streak bonus (points.earned, kind bonus); voiding one of them
    breaks the block and takes it back (points.reversed, rule streak, cause: the void)."""
    ledger = build_ledger(_settings(sqlite_database))
    events = [
        cloudevent(
            "activity.reading",
            "streaker",
            f"2026-03-0{day}T20:00:00Z",
            {"metric": "steps", "day": f"2026-03-0{day}", "value": 12000},
            id=f"s-{day}",
            programid="activity-motion",
        )
        for day in range(1, 8)
    ]
    events.append(
        cloudevent(
            "interaction.voided",
            "streaker",
            "2026-03-09T10:00:00Z",
            {"voided_id": "s-4", "voided_source": "urn:careledger:test", "reason": "device_error"},
            id="s-void",
            programid="activity-motion",
        )
    )
    batch = [Inbound(f"file:streak:{e['id']}", json.dumps(e).encode(), NOW) for e in events]
    assert all(r.outcome == "accepted" for r in ledger.apply_batch(batch).results)
    topic = unique_name("ledger-streak")
    asyncio.run(feed_into(ledger, kafka_broker.bootstrap, topic))
    messages = [m for _, m in asyncio.run(messages_on(kafka_broker.bootstrap, topic))]
    bonus = [m for m in messages if m.data.rule_id == "streak"]  # type: ignore[union-attr]
    assert [(m.type, m.data.points, m.data.cause.id) for m in bonus] == [  # type: ignore[union-attr]
        ("points.earned", 100, "s-7"),
        ("points.reversed", -100, "s-void"),
    ]
    assert bonus[0].data.kind == "bonus"  # type: ignore[union-attr]
    assert bonus[1].data.voided is None  # type: ignore[union-attr]
