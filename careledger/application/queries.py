"""Read-side queries the CLI answers straight from the event store."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from careledger.adapters.store import LedgerStore
from domain.rejection import RejectedInput


def dead_letters(store: LedgerStore, limit: int = 100) -> list[dict[str, Any]]:
    """The most recent refused inputs, newest last (no payloads are ever kept)."""
    topic = get_topic(RejectedInput.Recorded)
    rows: list[dict[str, Any]] = []
    start = 1
    while True:
        page = store.recorder.select_notifications(start, 1000, topics=[topic])
        for notification in page:
            event = store.mapper.to_domain_event(notification)
            assert isinstance(event, RejectedInput.Recorded)
            rows.append(
                {
                    "origin": event.origin,
                    "code": event.code,
                    "reason": event.reason,
                    "source": event.source,
                    "source_id": event.source_id,
                    "received_at": event.received_at,
                }
            )
        if len(page) < 1000:
            return rows[-limit:]
        start = page[-1].id + 1
