"""A projector whose start the database cuts short waits for it (found by the chaos soak: a
``pg_terminate_backend`` while a restarted projector was starting made it exit 1, where a
following projector rides an outage out)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy.exc import ProgrammingError

from projections import service
from projections.runner import ProjectionOptions
from tests.conftest import PG_URL, Database
from tests.integration.test_projections_scale import apply_workload, workload
from tests.integration.test_projections_support import ledger_for, query, settings_for
from tests.integration.test_worker_support import PausableProxy

pytestmark = pytest.mark.integration


async def test_a_start_cut_short_by_an_outage_is_retried(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = ledger_for(pg_database)
    apply_workload(ledger, workload(seed=5, patients=20, per_patient=3), run="before")
    head = ledger.store.recorder.max_notification_id()
    stop = asyncio.Event()
    with PausableProxy(PG_URL) as proxy:
        opened = service.open_store

        def store_then_outage(*args: Any, **kwargs: Any) -> Any:
            """The event store opens; the database goes away for 2 s as the read models'
            connection is made (the fault: real connections refused, nothing mocked)."""
            store = opened(*args, **kwargs)
            if not proxy.refused:
                proxy.pause()
                threading.Timer(2.0, proxy.resume).start()
            return store

        monkeypatch.setattr(service, "open_store", store_then_outage)
        settings = settings_for(pg_database).model_copy(update={"database_url": proxy.url})
        options = ProjectionOptions(batch_size=50, poll_interval=1)
        following = asyncio.create_task(service.follow(settings, stop, options))

        async def position() -> int:
            sql = "SELECT position FROM projection_positions"
            try:
                rows = await query(settings_for(pg_database), sql)
            except ProgrammingError:  # not created yet: the projector has not started
                return -1
            return int(rows[0][0]) if rows else -1

        for _ in range(120):
            if following.done() or await position() == head:
                break
            await asyncio.sleep(0.5)
        assert not following.done()  # (it would have raised the outage's error)
        assert await position() == head
        assert proxy.refused  # the outage did happen during the start
        stop.set()
        await asyncio.wait_for(following, 30)
