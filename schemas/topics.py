"""The Kafka topics careledger owns, declared once so no module spells a topic name itself.

| name                             | key                 | schema         | the one writer        |
|----------------------------------|---------------------|----------------|-----------------------|
| `careledger.interactions.v1`     | patient (`subject`) | `schemas.v1`   | `producers.publisher` |
| `careledger.interactions.v1.dlq` | the refused key     | payload + code | the ledger worker     |
| `careledger.ledger.v1`           | patient (`subject`) | `schemas.ledger_v1` | `careledger feed` |
| `careledger.fhir.r4`             | the EMR's choice    | FHIR R4 JSON   | the EMR (upstream)    |
| `careledger.fhir.r4.dlq`         | none                | names + reason | the FHIR gateway      |

The interactions topic is written only through ``producers.publisher.InteractionPublisher``:
upstream systems call ``publish`` (validated), ``careledger simulate`` calls its unvalidated
raw path on purpose to exercise the dead-letter path, and the FHIR gateway publishes what it
maps through ``publish_many``. The DLQ key is ``None`` when the refused record had no key.

Keys are patients, never event types: Kafka orders records per partition, and the ledger
applies a patient's interactions in arrival order, so one patient must map to one partition.
Partition counts come from ``Settings.partitions`` at the entry point, not from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class TopicSpec:
    """A topic's contract: what its records are keyed by and carry, and who may write it."""

    name: str
    key: str
    schema: str
    writer: str


INTERACTIONS_TOPIC: Final = "careledger.interactions.v1"
INTERACTIONS_DLQ_TOPIC: Final = "careledger.interactions.v1.dlq"

INTERACTIONS: Final = TopicSpec(
    name=INTERACTIONS_TOPIC,
    key="patient id (CloudEvents subject)",
    schema="v1 CloudEvent, structured JSON (schemas.v1)",
    writer="producers.publisher (upstream systems, careledger simulate)",
)
INTERACTIONS_DLQ: Final = TopicSpec(
    name=INTERACTIONS_DLQ_TOPIC,
    key="the refused record's key (patient id, or none)",
    schema="the refused payload as received, with rejection code and reason",
    writer="the ledger worker (consumers/)",
)
# Its records are the original bytes: its retention bounds how long a refused record of a
# patient outlives the patient's erasure (docker-compose.yml sets 7 days; ADR 0015).
INTERACTIONS_DLQ_RETENTION_MS: Final = 7 * 24 * 3600 * 1000

# What the ledger did, for other systems (messaging, CRM, mirrors): at least once, ids
# derived from the ledger fact so consumers dedupe.
LEDGER_TOPIC: Final = "careledger.ledger.v1"
LEDGER: Final = TopicSpec(
    name=LEDGER_TOPIC,
    key="patient id (CloudEvents subject)",
    schema="ledger.v1 CloudEvent, structured JSON (schemas.ledger_v1)",
    writer="careledger feed (producers.feed)",
)

# The FHIR R4 edge (docs/fhir.md): EMRs publish resources, the gateway maps them to v1
# interactions; its dead letters name a resource and a reason, never the body (PHI).
FHIR_TOPIC: Final = "careledger.fhir.r4"
FHIR_DLQ_TOPIC: Final = "careledger.fhir.r4.dlq"
FHIR: Final = TopicSpec(
    name=FHIR_TOPIC,
    key="whatever the EMR keys by (unused: the gateway derives the subject)",
    schema="one FHIR R4 resource or a Bundle, JSON",
    writer="the EMR (upstream); careledger demo --fhir",
)
FHIR_DLQ: Final = TopicSpec(
    name=FHIR_DLQ_TOPIC,
    key="none",
    schema="headers careledger.code and careledger.fhir.resource_type|id|version_id, "
    "the same as a small JSON value; never the resource",
    writer="careledger fhir-gateway (consumers.fhir_gateway)",
)

TOPICS: Final[tuple[TopicSpec, ...]] = (
    INTERACTIONS,
    INTERACTIONS_DLQ,
    LEDGER,
    FHIR,
    FHIR_DLQ,
)
