"""The FHIR gateway's Prometheus metrics, on an injected registry.

Labels are FHIR resource types (only the names R4 defines, else ``other``), v1 event types
and reason codes: never a patient, a resource id or any other value of a resource.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class GatewayMetrics:
    """Everything ``careledger fhir-gateway`` reports."""

    messages: Counter
    mapped: Counter
    skipped: Counter
    dead_letters: Counter
    batch_seconds: Histogram
    retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        return cls(
            messages=Counter(
                "careledger_fhir_messages",
                "careledger.fhir.r4 records done (their outputs acknowledged, offsets committed)",
                registry=registry,
            ),
            mapped=Counter(
                "careledger_fhir_mapped",
                "Resources published as v1 interactions, by resource type and event type",
                ["resource_type", "type"],
                registry=registry,
            ),
            skipped=Counter(
                "careledger_fhir_skipped",
                "Resources not mapped (another type, not done yet, codes out of scope)",
                ["resource_type", "reason"],
                registry=registry,
            ),
            dead_letters=Counter(
                "careledger_fhir_dead_letters",
                "Resources of a mapped type sent to careledger.fhir.r4.dlq, by reason",
                ["resource_type", "reason"],
                registry=registry,
            ),
            batch_seconds=Histogram(
                "careledger_fhir_batch_seconds",
                "Time to map a batch, publish its outputs and commit its offsets",
                registry=registry,
            ),
            retries=Counter(
                "careledger_fhir_batch_retries",
                "Batches sent again after a broker error",
                ["error"],
                registry=registry,
            ),
        )
