"""A refused input, kept as a fact in the ledger so it can never vanish.

The payload is never kept (it may hold anything, including health data): only where the input
came from, the machine code and human reason it was refused for, and its CloudEvents source
and id when those were themselves valid.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate

from domain.ids import derived_id


class RejectedInput(Aggregate):
    """One input the ledger refused (a dead letter)."""

    class Recorded(Aggregate.Created):
        origin: str
        code: str
        reason: str
        source: str | None
        source_id: str | None
        received_at: datetime

    @classmethod
    def record(
        cls,
        *,
        origin: str,
        code: str,
        reason: str,
        source: str | None,
        source_id: str | None,
        received_at: datetime,
    ) -> RejectedInput:
        """Record a refusal; ``origin`` (topic/partition/offset or file/line) makes its id."""
        return cls._create(
            cls.Recorded,
            id=derived_id("rejected", origin),
            origin=origin,
            code=code,
            reason=reason,
            source=source,
            source_id=source_id,
            received_at=received_at,
        )

    def __init__(
        self,
        origin: str,
        code: str,
        reason: str,
        source: str | None,
        source_id: str | None,
        received_at: datetime,
    ) -> None:
        self.origin = origin
        self.code = code
        self.reason = reason
        self.source = source
        self.source_id = source_id
        self.received_at = received_at
