"""The close of day inside the workers: the right day, as of its end, once however many try."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from consumers.schedule import MaintenanceSchedule
from tests.conftest import Database
from tests.events import cloudevent

pytestmark = pytest.mark.integration


def test_schedule_picks_the_last_closed_local_day() -> None:
    new_york = ZoneInfo("America/New_York")
    schedule = MaintenanceSchedule(1, {"clinic-default": new_york})
    # 05:30 UTC is 00:30 in New York: before the 01:00 close, so the day before yesterday
    day, as_of = schedule.last_closed_day(datetime(2026, 11, 23, 5, 30, tzinfo=UTC), new_york)
    assert day == date(2026, 11, 21)
    assert as_of == datetime(2026, 11, 22, tzinfo=new_york)
    day, _ = schedule.last_closed_day(datetime(2026, 11, 23, 6, 30, tzinfo=UTC), new_york)
    assert day == date(2026, 11, 22)


def test_each_program_closes_in_its_own_time_zone() -> None:
    from careledger.application.programs import builtin_programs
    from careledger.commands.worker_commands import build_worker
    from careledger.settings import Settings

    tokyo = ZoneInfo("Asia/Tokyo")
    schedule = MaintenanceSchedule(1, {"clinic-default": ZoneInfo("UTC"), "tokyo": tokyo})
    now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # already 05:00 on the 24th in Tokyo
    assert schedule.last_closed_day(now, tokyo)[0] == date(2026, 11, 23)
    assert schedule.last_closed_day(now, ZoneInfo("UTC"))[0] == date(2026, 11, 22)
    # the worker takes each program's zone from its file unless CARELEDGER_TIMEZONE overrides
    from prometheus_client import CollectorRegistry

    own = build_worker(Settings(database_url="sqlite:///:memory:"), CollectorRegistry())
    shipped = builtin_programs()
    assert own.schedule is not None
    assert own.schedule.zones == {pid: p.timezone for pid, p in shipped.items()}
    assert own.schedule.zones["clinic-discounts"] == ZoneInfo("Europe/London")
    forced = build_worker(
        Settings(database_url="sqlite:///:memory:", timezone="Europe/Paris"), CollectorRegistry()
    )
    assert forced.schedule is not None
    assert forced.schedule.zones == dict.fromkeys(shipped, ZoneInfo("Europe/Paris"))


def test_a_day_closes_once_across_workers(database: Database) -> None:
    settings = Settings(database_url=database.url, database_schema=database.schema)
    first, second = build_ledger(settings), build_ledger(settings)
    visit = cloudevent(
        "visit.completed",
        "mo",
        "2025-03-01T10:00:00Z",
        {"visit_id": "v1", "visit_type": "in_person"},
    )
    first.apply_batch([Inbound("file:m:1", json.dumps(visit).encode(), datetime.now(UTC))])
    schedule = MaintenanceSchedule(1, {"clinic-default": ZoneInfo("UTC")})
    now = datetime(2026, 3, 5, 2, 0, tzinfo=UTC)  # closes 2026-03-04: the lot (due 2026-03-01)

    schedule.run_due(first, now)
    report = second.close_day("clinic-default", date(2026, 3, 4), datetime(2026, 3, 5, tzinfo=UTC))
    assert report is None  # already closed by the first worker
    balance = second.balance("clinic-default", "mo")
    assert balance is not None and (balance.available, balance.lifetime_expired) == (0, 100)
    statement = second.statement("clinic-default", "mo")
    assert [e.kind for e in statement] == ["earned", "expired"]
    assert statement[-1].occurred_at == datetime(2026, 3, 1, 10, tzinfo=UTC)  # dated at expiry
