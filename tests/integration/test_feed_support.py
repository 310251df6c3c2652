"""Shared helpers for the outbound feed tests (no tests here; the name keeps it in scope).

* The golden scenario: three patients' interactions through ``Ledger.apply_batch`` and the
  referral relay, with the close of day run for every day of a range, in time order.
* Running a :class:`producers.feed.LedgerFeed` into a topic of its own and reading the topic
  back as parsed ledger.v1 messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from careledger.application.ledger import REJECTED, Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from producers.feed import FeedMetrics, FeedOptions, LedgerFeed
from schemas.ledger_v1 import LedgerEventV1
from tests.events import cloudevent
from tests.integration.test_worker_support import read_topic
from tests.kafka_support import create_topic, end_offsets

PROGRAM = "clinic-default"
NOW = datetime(2026, 12, 1, tzinfo=UTC)  # the ingest clock: every event is in its past
A, B, C = "feed-a", "feed-b", "feed-c"  # A consents to marketing, B does not, C never says
CLOSE_FROM, CLOSE_UNTIL = date(2025, 12, 10), date(2026, 2, 15)  # days closed, inclusive
SOURCE = "urn:careledger:test"
# Small batches cross batch boundaries on purpose (a tier change apart from its cause).
SMALL_BATCHES = FeedOptions(batch_max=7)
_PARSER: TypeAdapter[LedgerEventV1] = TypeAdapter(LedgerEventV1)


def _visit(patient: str, at: str, id: str, visit_type: str = "in_person") -> dict[str, Any]:
    return cloudevent(
        "visit.completed", patient, at, {"visit_id": id, "visit_type": visit_type}, id=id
    )


def scenario() -> list[dict[str, Any]]:
    """Earn, tier up, refer, redeem, cancel, void, adjust; consent on for A, off for B."""
    return [
        cloudevent("consent.changed", B, "2025-01-02T09:00:00Z", {"marketing": False}, id="b-c"),
        _visit(B, "2025-01-05T10:00:00Z", "b-v1"),
        cloudevent("consent.changed", A, "2025-01-10T09:00:00Z", {"marketing": True}, id="a-c"),
        _visit(A, "2025-01-15T10:00:00Z", "a-v1"),
        cloudevent(
            "checkup.completed",
            A,
            "2025-02-01T10:00:00Z",
            {"checkup_type": "annual_wellness"},
            id="a-ck1",
        ),
        _visit(B, "2025-02-01T11:00:00Z", "b-v3"),
        cloudevent(
            "checkup.completed",
            A,
            "2025-02-10T10:00:00Z",
            {"checkup_type": "screening"},
            id="a-ck2",
        ),
        cloudevent(
            "assessment.completed", A, "2025-02-12T10:00:00Z", {"assessment_id": "q1"}, id="a-as"
        ),
        cloudevent("referral.made", A, "2025-02-20T10:00:00Z", {"referee": C}, id="a-ref"),
        cloudevent("patient.enrolled", C, "2025-02-21T10:00:00Z", {"channel": "web"}, id="c-enrol"),
        _visit(C, "2025-03-01T10:00:00Z", "c-v1", "telehealth"),
        _redeem(A, "2025-03-01T12:00:00Z", "a-r1", "r1", 300),
        cloudevent(
            "redemption.cancelled", A, "2025-03-05T10:00:00Z", {"redemption_id": "r1"}, id="a-r1x"
        ),
        _redeem(A, "2025-03-10T10:00:00Z", "a-r2", "r2", 150),
        cloudevent(
            "interaction.voided",
            A,
            "2025-03-15T10:00:00Z",
            {"voided_id": "a-ck2", "voided_source": SOURCE, "reason": "entered_in_error"},
            id="a-void",
        ),
        _adjust(A, "2025-03-20T10:00:00Z", "a-adj1", 50, "goodwill"),
        _adjust(A, "2025-03-21T10:00:00Z", "a-adj2", -30, "correction"),
        _redeem(B, "2025-06-01T10:00:00Z", "b-r3", "r3", 100),
        # after B's first lot expired: the points come back and expire at once
        cloudevent(
            "redemption.cancelled", B, "2026-01-20T10:00:00Z", {"redemption_id": "r3"}, id="b-r3x"
        ),
    ]


def _redeem(patient: str, at: str, id: str, redemption: str, points: int) -> dict[str, Any]:
    data = {"redemption_id": redemption, "reward_id": "gift", "points": points}
    return cloudevent("redemption.requested", patient, at, data, id=id)


def _adjust(patient: str, at: str, id: str, points: int, reason: str) -> dict[str, Any]:
    data = {"adjustment_id": id, "points": points, "reason": reason, "operator": "staff-7"}
    return cloudevent("points.adjusted", patient, at, data, id=id)


def _days() -> Iterator[date]:
    day = CLOSE_FROM
    while day <= CLOSE_UNTIL:
        yield day
        day += timedelta(days=1)


def run_scenario(ledger: Ledger) -> None:
    """Apply the scenario in time order, closing every day of the range at its end."""
    pending = sorted(scenario(), key=lambda e: str(e["time"]))

    def apply_before(until: str) -> None:
        while pending and pending[0]["time"] < until:
            event = pending.pop(0)  # one at a time: the relay carries referrals between them
            inbound = Inbound(f"file:feed:{event['id']}", json.dumps(event).encode(), NOW)
            (result,) = ledger.apply_batch([inbound]).results
            assert result.outcome != REJECTED, (event["id"], result.code, result.reason)
            ledger.relay_until_idle()

    for day in _days():
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        apply_before(end.isoformat().replace("+00:00", "Z"))
        ledger.close_day(PROGRAM, day, end)
    apply_before("9999")


def scenario_ledger(settings: Settings) -> Ledger:
    ledger = build_ledger(settings)
    run_scenario(ledger)
    return ledger


async def feed_into(
    ledger: Ledger,
    bootstrap: str,
    topic: str,
    name: str = "feed:test",
    options: FeedOptions = SMALL_BATCHES,
    registry: CollectorRegistry | None = None,
) -> LedgerFeed:
    """Publish the ledger into ``topic`` (created if new) with a feed of its own, up to the
    head."""
    if not await end_offsets(bootstrap, topic):
        await create_topic(bootstrap, topic, 3)
    feed = LedgerFeed(
        ledger.store,
        ledger.programs,
        bootstrap=bootstrap,
        metrics=FeedMetrics.create(registry),
        options=options,
        topic=topic,
        name=name,
    )
    async with feed:
        await feed.catch_up()
    return feed


async def messages_on(bootstrap: str, topic: str) -> list[tuple[bytes, LedgerEventV1]]:
    """Every record of ``topic`` as (key, parsed message)."""
    total = sum((await end_offsets(bootstrap, topic)).values())
    records = await read_topic(bootstrap, topic, total, settle_s=0.2)
    return [(r.key or b"", _PARSER.validate_json(r.value or b"")) for r in records]
