"""The worker's Prometheus metrics, on an injected registry.

Labels are event types, outcomes, codes, entry kinds and partitions: never patient ids.
Units are base units (seconds, points).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1,
    1.5,
    2,
    3,
    5,
    10,
    30,
    60,
    300,
    3600,
    86400,
)


@dataclass
class WorkerMetrics:
    """Everything the ledger worker reports."""

    messages: Counter
    entries: Counter
    points: Counter
    batch_size: Histogram
    commit_seconds: Histogram
    event_time_latency: Histogram
    kafka_latency: Histogram
    lag: Gauge
    committed_offset: Gauge
    conflicts: Counter
    retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        return cls(
            messages=Counter(
                "careledger_messages",
                "Kafka records by outcome and event type",
                ["outcome", "type", "code"],
                registry=registry,
            ),
            entries=Counter(
                "careledger_ledger_entries",
                "Ledger entries written, by kind",
                ["kind"],
                registry=registry,
            ),
            points=Counter(
                "careledger_ledger_points",
                "Points moved by ledger entries, by kind (absolute)",
                ["kind"],
                registry=registry,
            ),
            batch_size=Histogram(
                "careledger_batch_size_records",
                "Records per committed batch",
                buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
                registry=registry,
            ),
            commit_seconds=Histogram(
                "careledger_batch_commit_seconds",
                "Time to apply and commit one batch",
                registry=registry,
            ),
            event_time_latency=Histogram(
                "careledger_event_time_to_commit_seconds",
                "From the event's own time to its commit",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            kafka_latency=Histogram(
                "careledger_kafka_time_to_commit_seconds",
                "From the Kafka record timestamp to its commit",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            lag=Gauge(
                "careledger_consumer_lag_records",
                "Records behind the partition's end",
                ["topic", "partition"],
                registry=registry,
            ),
            committed_offset=Gauge(
                "careledger_committed_offset",
                "Last offset committed to the ledger",
                ["topic", "partition"],
                registry=registry,
            ),
            conflicts=Counter(
                "careledger_position_conflicts",
                "Batches dropped: another consumer was ahead",
                registry=registry,
            ),
            retries=Counter(
                "careledger_batch_retries",
                "Batches retried after a database or broker error",
                ["error"],
                registry=registry,
            ),
        )
