"""Pacing and counting for ``careledger simulate``: a target rate, never slower than needed."""

from __future__ import annotations

import pytest

from producers.pacing import Pacer, Tally
from producers.simulator import SimulatedEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unpaced_never_waits() -> None:
    pacer = Pacer(0)
    assert [pacer.wait() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_paced_waits_until_each_record_is_due() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)  # one record every 0.1 s
    assert pacer.wait() == 0.0
    assert pacer.wait() == pytest.approx(0.1)
    clock.now += 0.25  # the sender fell behind: the next two are already due
    assert pacer.wait() == 0.0
    assert pacer.wait() == pytest.approx(0.05)


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        Pacer(-1)


def test_tally_counts_by_kind_type_and_flaw() -> None:
    clock = FakeClock()
    tally = Tally(clock=clock)
    tally.count(SimulatedEvent("p-1", b"{}", "valid", "visit.completed"))
    tally.count(SimulatedEvent("p-1", b"{}", "duplicate", "visit.completed"))
    tally.count(SimulatedEvent(None, b"{", "malformed", "review.submitted", "not_json"))
    clock.now += 2
    summary = tally.summary(sink="x")
    assert summary == {
        "records": 3,
        "kinds": {"duplicate": 1, "malformed": 1, "valid": 1},
        "types": {"review.submitted": 1, "visit.completed": 2},
        "flaws": {"not_json": 1},
        "elapsed_s": 2.0,
        "records_per_s": 2,
        "sink": "x",
    }
