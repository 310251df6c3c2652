"""The outbound feed over a sealed ledger (ADR 0015): messages name patients, never tokens.

``careledger feed`` opens the store with the ledger's secret, as the worker and the projector
do; without it the sealed values would go out as they are stored.
"""

from __future__ import annotations

import asyncio

import pytest

from careledger.adapters.broker import EmbeddedBroker
from careledger.commands.feed_commands import open_feed
from careledger.settings import Settings
from tests.conftest import Database
from tests.integration.test_feed import EXPECTED
from tests.integration.test_feed_support import A, B, C, messages_on, scenario_ledger
from tests.kafka_support import unique_name

pytestmark = pytest.mark.integration
SECRET = "feed-test-ledger-secret-of-at-least-32-bytes"


def test_the_feed_command_publishes_patient_ids_from_a_sealed_ledger(
    database: Database, kafka_broker: EmbeddedBroker
) -> None:
    settings = Settings(
        database_url=database.url,
        database_schema=database.schema,
        kafka_bootstrap=kafka_broker.bootstrap,
        ledger_secret=SECRET,
        partitions=3,
    )
    scenario_ledger(settings)
    topic = unique_name("ledger-sealed")

    async def publish() -> None:
        async with open_feed(settings, topic=topic) as feed:
            await feed.catch_up()

    asyncio.run(publish())
    keyed = asyncio.run(messages_on(kafka_broker.bootstrap, topic))
    assert len(keyed) == len(EXPECTED)
    assert {message.subject for _, message in keyed} == {A, B, C}
    assert all(key == message.subject.encode() for key, message in keyed)
    assert not [m for _, m in keyed if "~s1." in m.model_dump_json()]  # no sealed value
