"""When the close-of-day maintenance runs.

The wall clock only *schedules* maintenance; what maintenance decides uses the closed day's
end as its ``as_of`` (event time), so every worker that runs it decides the same thing, and
``Ledger.close_day`` records each day once however many workers try.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from careledger.application.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceSchedule:
    """Close each program's day at ``hour`` o'clock the next morning, in its own time zone."""

    hour: int
    zones: dict[str, ZoneInfo]  # program id -> the time zone its days are counted in
    _closed: dict[str, date] = field(default_factory=dict, init=False, repr=False, compare=False)

    def last_closed_day(self, now: datetime, zone: ZoneInfo) -> tuple[date, datetime]:
        """The most recent day whose close is due, and the instant its maintenance is as of."""
        local = now.astimezone(zone)
        day = local.date() - timedelta(days=1 if local.hour >= self.hour else 2)
        as_of = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        return day, as_of

    def run_due(self, ledger: Ledger, now: datetime) -> None:
        """Close the latest due day for every program not yet closed for it.

        Asked every second; a day seen closed (here or by another process) is remembered, so
        the store is asked again only once the next day is due.
        """
        for program_id, zone in sorted(self.zones.items()):
            day, as_of = self.last_closed_day(now, zone)
            if self._closed.get(program_id) == day:
                continue
            report = ledger.close_day(program_id, day, as_of)
            self._closed[program_id] = day
            if report is not None:
                log.info(
                    "closed %s for %s: %d accounts, %d lots expired, %d tier changes",
                    day,
                    program_id,
                    report.accounts,
                    report.lots_expired,
                    report.tier_changes,
                )
