"""Create a topic with the partition count we mean before anything writes to it.

Tansu (and Kafka with auto-creation on) creates an unknown topic with its own default partition
count the moment a client asks for its metadata, so a producer started first would silently
fix the wrong count. Creating it explicitly, and tolerating "already exists", avoids that.
"""

from __future__ import annotations

import logging
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

__all__ = ["TopicSetupFailed", "ensure_topic"]

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS: Final = 36


class TopicSetupFailed(Exception):
    """Raised when the broker cannot be reached or refuses to create the topic."""


async def ensure_topic(bootstrap: str, name: str, partitions: int) -> bool:
    """Create ``name`` with ``partitions`` partitions unless it exists; True if created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="careledger-admin")
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
    except KafkaError as exc:
        raise TopicSetupFailed(
            f"could not create topic {name} at {bootstrap}: {type(exc).__name__}"
        ) from exc
    finally:
        await admin.close()
    for topic, error_code, error_message in response.topic_errors:
        if error_code == _TOPIC_ALREADY_EXISTS:
            logger.info("topic %s already exists; its partition count is kept", topic)
            return False
        if error_code:
            raise TopicSetupFailed(f"creating topic {topic} failed: {error_code} {error_message}")
    logger.info("created topic %s with %d partitions", name, partitions)
    return True
