"""``careledger projections`` as processes (SIGKILL mid-run, resume, rebuild, /metrics,
SIGTERM), and a follower riding out a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncpg.exceptions import InterfaceError
from prometheus_client import CollectorRegistry

from projections.database import connect
from projections.runner import ProjectionOptions
from projections.service import catch_up, open_projector, rebuild
from projections.source import EventSource
from tests.conftest import PG_URL, Database
from tests.integration.test_projections_scale import Workload, apply_workload, workload
from tests.integration.test_projections_support import dump, ledger_for, query, settings_for
from tests.integration.test_worker_support import PausableProxy

pytestmark = pytest.mark.integration


def careledger(db: Database, *args: str, metrics_port: int = 0) -> subprocess.Popen[str]:
    """``careledger projections ...`` in a session of its own (its worker processes too)."""
    env = {**os.environ, **db.env(), "CARELEDGER_METRICS_PORT": str(metrics_port)}
    return subprocess.Popen(
        [sys.executable, "-m", "careledger.cli", "projections", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The summary line of ``run --once`` or ``rebuild`` (without the timing)."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    last: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert last.pop("seconds") >= 0
    return last


async def position(db: Database) -> int:
    try:
        rows = await query(settings_for(db), "SELECT position FROM projection_positions")
    except Exception:  # the projector has not created its tables yet
        return 0
    return int(rows[0][0]) if rows else 0


async def test_a_killed_projector_resumes_and_equals_a_rebuild(database: Database) -> None:
    ledger = ledger_for(database)
    apply_workload(ledger, workload(seed=5, patients=400, per_patient=5))
    head = ledger.store.recorder.max_notification_id()

    proc = careledger(database, "run", "--batch-size", "5")
    killed_at = 0
    for _ in range(3000):
        killed_at = await position(database)
        if killed_at > 0:
            proc.send_signal(signal.SIGKILL)
            break
        await asyncio.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < killed_at < head, "the projector should be killed part-way"

    stored = await position(database)
    assert stored >= killed_at  # committed batches survive the kill
    assert finished(careledger(database, "run", "--once")) == {
        "applied": head - stored,
        "position": head,
    }
    resumed = await dump(settings_for(database))
    assert finished(careledger(database, "rebuild")) == {"applied": head, "position": head}
    assert await dump(settings_for(database)) == resumed


async def test_a_killed_rebuild_changes_nothing_and_the_next_one_succeeds(
    database: Database,
) -> None:
    head, before = await projected(database)
    proc = careledger(database, "rebuild", "--batch-size", "5", "--workers", "2")
    if database.kind == "postgres":  # killed once the rebuild's schema holds entries
        await until_building(database)
    else:  # killed once its transaction holds the write lock (it has dropped the tables)
        for _ in range(3000):
            if await asyncio.to_thread(sqlite_write_locked, database.url):
                break
            await asyncio.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, workers included
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the rebuild should be killed part-way"

    await assert_unchanged_and_rebuilt(database, head, before)


async def test_a_killed_rebuild_takes_its_worker_processes_with_it(pg_database: Database) -> None:
    """Killing the rebuild's own process alone (an OOM killer, a supervisor) ends its
    workers too: otherwise they would go on filling a schema nobody will publish."""
    head, before = await projected(pg_database)
    proc = careledger(pg_database, "rebuild", "--batch-size", "1", "--workers", "3")
    await until_building(pg_database)
    workers = children(proc.pid)
    assert len(workers) >= 2, "the rebuild should have its worker processes"
    proc.kill()
    proc.wait(timeout=30)
    await until(lambda: not any(map(alive, workers)), seconds=10)

    await assert_unchanged_and_rebuilt(pg_database, head, before)


async def projected(db: Database) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
    """A ledger with read models up to date: its head and the tables' rows."""
    ledger = ledger_for(db)
    apply_workload(ledger, workload(seed=5, patients=400, per_patient=5))
    head = ledger.store.recorder.max_notification_id()
    assert head is not None
    assert finished(careledger(db, "run", "--once"))["position"] == head
    return head, await dump(settings_for(db))


async def assert_unchanged_and_rebuilt(
    db: Database, head: int, before: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The killed rebuild left the read models ``before``; the next one succeeds."""
    assert await dump(settings_for(db)) == before
    assert finished(careledger(db, "rebuild")) == {"applied": head, "position": head}
    assert await dump(settings_for(db)) == before


async def until_building(db: Database) -> None:
    """Wait until the rebuild's schema holds ledger entries."""
    building = f'"{db.schema}__rebuild".ledger_entries'
    for _ in range(3000):
        try:
            if (await query(settings_for(db), f"SELECT count(*) FROM {building}"))[0][0]:
                return
        except Exception:  # not created yet
            pass
        await asyncio.sleep(0.005)
    raise AssertionError("the rebuild wrote nothing")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def sqlite_write_locked(url: str) -> bool:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        conn.rollback()
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_run_serves_metrics_and_stops_cleanly_on_sigterm(database: Database) -> None:
    ledger = ledger_for(database)
    apply_workload(ledger, workload(seed=6, patients=30))
    port = free_port()
    proc = careledger(database, "run", metrics_port=port)
    text = ""
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                text = page.read().decode()
        except OSError:
            text = ""
        if 'careledger_projection_lag_events{projection="read_models"} 0.0' in text:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert 'careledger_projection_lag_events{projection="read_models"} 0.0' in text
    assert "careledger_projection_transaction_seconds_bucket" in text
    assert "sim-0" not in text  # no patient id anywhere in the metrics


async def test_following_rides_out_a_database_outage(pg_database: Database) -> None:
    """The projector reaches PostgreSQL through a proxy that goes down for a while.

    Polling is set to ten minutes, so only the ledger's notifications (and retries) wake the
    follower: losing the listening connection must wake it, to find the outage, and it must
    listen again once the database is back. (A step failed by the outage may be retried
    after the first round of new events; the second round is seen only if it listens.)"""
    ledger = ledger_for(pg_database)
    load = workload(seed=8, patients=200, per_patient=4)
    size = len(load.events) // 4
    parts = [load.events[i * size : (i + 1) * size] for i in range(3)] + [load.events[3 * size :]]
    apply_workload(ledger, Workload(parts[0], []), run="before")
    registry = CollectorRegistry()
    stop = asyncio.Event()
    with PausableProxy(PG_URL) as proxy:
        settings = settings_for(pg_database).model_copy(update={"database_url": proxy.url})
        options = ProjectionOptions(batch_size=50, poll_interval=600)
        async with open_projector(settings, options, registry) as projector:
            following = asyncio.create_task(projector.follow(stop))
            head = ledger.store.recorder.max_notification_id
            await until(lambda: projector.position == head())
            proxy.pause()
            apply_workload(ledger, Workload(parts[1], []), run="during")
            await asyncio.sleep(3)
            proxy.resume()
            for run, part in (("during", []), ("after-1", parts[2]), ("after-2", parts[3])):
                apply_workload(ledger, Workload(part, []), run=run)
                reached = head()
                await until(lambda: projector.position == reached, seconds=60)  # noqa: B023
            stop.set()
            await asyncio.wait_for(following, 30)
    retries = [
        s.value
        for m in registry.collect()
        if m.name == "careledger_projection_retries"
        for s in m.samples
        if s.name.endswith("_total")
    ]
    assert sum(retries) >= 1
    assert await catch_up(settings_for(pg_database)) == 0  # nothing was left behind ...
    followed = await dump(settings_for(pg_database))  # ... and the cohorts are rewritten
    await rebuild(settings_for(pg_database))
    assert await dump(settings_for(pg_database)) == followed


async def test_an_event_read_on_a_dropped_connection_discards_it(pg_database: Database) -> None:
    """Events are fetched by asyncpg itself, past SQLAlchemy's disconnect handling: a pooled
    connection found dead there must be dropped, not handed out to every later read (which
    kept a follower failing long after the database was back)."""
    ledger = ledger_for(pg_database)
    apply_workload(ledger, workload(seed=3, patients=5, per_patient=2), run="r")
    source = EventSource.of(ledger.store, "postgresql")
    with PausableProxy(PG_URL) as proxy:
        engine = connect(proxy.url, pg_database.schema)
        try:
            async with engine.connect() as conn:
                assert len(await source.read(conn, 0, 5)) == 5
            proxy.pause()  # cuts the pooled connection
            proxy.resume()
            await asyncio.sleep(0.1)  # asyncpg sees the hang-up
            with pytest.raises(InterfaceError, match="connection is closed"):
                async with engine.connect() as conn:
                    await source.read(conn, 0, 5)
            async with engine.connect() as conn:
                assert len(await source.read(conn, 0, 5)) == 5
        finally:
            await engine.dispose()


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
