"""Domain events as the projector reads them: stored by the ledger's own mapper, read back."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper

from careledger.adapters.store import ledger_mapper
from projections.stored import Recorded, StoredReader

MAPPER: Mapper[UUID] = ledger_mapper()
READER = StoredReader(MAPPER)


def as_stored(position: int, event: Any) -> Recorded:
    stored = MAPPER.to_stored_event(event)
    assert isinstance(stored.originator_id, UUID)
    return READER.read(
        position, stored.originator_id, stored.originator_version, stored.topic, stored.state
    )
