"""The referral relay from a cold cache, and when there is nothing to carry."""

from __future__ import annotations

import pytest

from careledger.application.ledger import RELAY
from tests.conftest import Database
from tests.events import cloudevent
from tests.integration.test_ledger_store import inbound, ledger_for, visits

pytestmark = pytest.mark.integration


def referrals(pairs: list[tuple[str, str]]) -> list[dict[str, object]]:
    """Each referrer refers a referee, who enrols naming them and visits a month later."""
    events: list[dict[str, object]] = []
    for referrer, referee in pairs:
        events += [
            cloudevent("referral.made", referrer, "2026-02-01T00:00:00Z", {"referee": referee}),
            cloudevent(
                "patient.enrolled",
                referee,
                "2026-02-02T00:00:00Z",
                {"channel": "web", "referred_by": referrer},
            ),
            cloudevent(
                "visit.completed",
                referee,
                "2026-03-01T00:00:00Z",
                {"visit_id": f"v-{referee}", "visit_type": "specialist"},
            ),
        ]
    return events


def test_a_relay_with_nothing_cached_pays_every_side_once(database: Database) -> None:
    pairs = [(f"r{n}", f"e{n}") for n in range(12)]
    writer = ledger_for(database)
    writer.apply_batch([inbound(f"file:r:{i}", e) for i, e in enumerate(referrals(pairs))])
    relay = ledger_for(database)  # a fresh process: every party is loaded for the relay
    assert relay.relay_until_idle() == 2 * len(pairs)  # made, then qualified
    assert relay.relay_until_idle() == 0
    for referrer, referee in pairs:
        paid = ledger_for(database).balance("clinic-default", referrer)
        earned = ledger_for(database).balance("clinic-default", referee)
        assert paid is not None and earned is not None
        assert (paid.available, earned.available) == (1000, 600)


def test_nothing_to_carry_only_moves_the_position(database: Database) -> None:
    ledger = ledger_for(database)
    ledger.apply_batch([inbound(f"file:v:{i}", e) for i, e in enumerate(visits("vi", 3))])
    head = ledger.store.recorder.max_notification_id()
    assert ledger.relay_referrals() == 0
    assert ledger.store.position(RELAY) == head
    assert ledger.relay_referrals() == 0  # nothing new: nothing written
    assert ledger.store.position(RELAY) == head
