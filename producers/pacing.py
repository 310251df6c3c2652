"""Hold a stream of records to a target rate, and count what went by.

The pacer measures with a monotonic clock and sleeps only when ahead of schedule, so a slow
consumer is never made slower and a burst after a stall is allowed to catch up.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producers.simulator import SimulatedEvent


class Pacer:
    """Says how long to wait before each record so that ``rate`` per second is not exceeded."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 means as fast as possible)")
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._started: float | None = None
        self._count = 0

    def wait(self) -> float:
        """Seconds to sleep before sending the next record (0.0 when unpaced or behind)."""
        if not self._interval:
            return 0.0
        now = self._clock()
        if self._started is None:
            self._started = now
        due = self._started + self._count * self._interval
        self._count += 1
        return max(0.0, due - now)


@dataclass
class Tally:
    """Counts of records by kind, by event type and by flaw, plus the elapsed time."""

    clock: Callable[[], float] = time.monotonic
    kinds: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    flaws: Counter[str] = field(default_factory=Counter)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def count(self, event: SimulatedEvent) -> None:
        self.kinds[event.kind] += 1
        self.types[event.event_type] += 1
        if event.flaw is not None:
            self.flaws[event.flaw] += 1

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The one-line report: totals, counts and throughput; ``extra`` is added as given."""
        elapsed = self.clock() - self.started
        total = sum(self.kinds.values())
        return {
            "records": total,
            "kinds": dict(sorted(self.kinds.items())),
            "types": dict(sorted(self.types.items())),
            "flaws": dict(sorted(self.flaws.items())),
            "elapsed_s": round(elapsed, 3),
            "records_per_s": round(total / elapsed) if elapsed > 0 else None,
            **extra,
        }
