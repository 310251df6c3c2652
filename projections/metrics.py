"""Prometheus metrics of the projections, on an injected registry.

Labels are projection names, table names, program ids and reason codes: never patient ids
(ADR 0003).
Units are base units: events, rows, seconds.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRANSACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProjectionMetrics:
    """What an operator needs to see: how far behind, how much written, how long it took."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "careledger_projection_events_total",
            "Ledger events applied to the read models.",
            ["projection"],
            registry=r,
        )
        self.rows = Counter(
            "careledger_projection_rows_written_total",
            "Read-model rows inserted or updated.",
            ["projection", "table"],
            registry=r,
        )
        self.lag_events = Gauge(
            "careledger_projection_lag_events",
            "Ledger events recorded but not yet applied.",
            ["projection"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "careledger_projection_lag_seconds",
            "Recording time of the ledger head minus that of the last applied event.",
            ["projection"],
            registry=r,
        )
        self.retries = Counter(
            "careledger_projection_retries_total",
            "Projection steps that failed (nothing committed) and were retried, by error class.",
            ["projection", "error"],
            registry=r,
        )
        self.position = Gauge(
            "careledger_projection_position",
            "Notification id of the last ledger event applied.",
            ["projection"],
            registry=r,
        )
        self.transaction_seconds = Histogram(
            "careledger_projection_transaction_seconds",
            "Duration of one projection transaction (a batch and its position).",
            ["projection"],
            buckets=TRANSACTION_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "careledger_refusals_total",
            "Statement lines that paid nothing (refused redemptions, capped or excluded "
            "earnings, withheld referral bonuses) applied to the read models, by reason code.",
            ["reason"],
            registry=r,
        )
        self.retention = Gauge(
            "careledger_program_retention_rate",
            "Share of patients active in the previous 12 months who are active in the last 12.",
            ["program_id"],
            registry=r,
        )

    def set_retention(self, rates: dict[str, float | None]) -> None:
        """Publish the 12-month retention rates; a program with no base yet has no series."""
        for program_id, rate in rates.items():
            if rate is None:
                with contextlib.suppress(KeyError):  # never had a rate
                    self.retention.remove(program_id)
            else:
                self.retention.labels(program_id).set(rate)
