"""The traffic simulator: deterministic, contract-valid, realistic enough to drive the ledger."""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.cli import main
from producers.malformed import FLAW_CODES
from producers.simulator import SimulatedEvent, simulate
from schemas.v1 import EVENT_TYPES
from schemas.validation import InvalidInteraction, parse_interaction

START = date(2026, 1, 1)
PATIENTS, DAYS = 300, 120


def after(days: int, start: date = START) -> datetime:
    """An ingest clock just after a simulated period, so no valid event is in the future."""
    return datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=days + 1)


@pytest.fixture(scope="module")
def traffic() -> list[SimulatedEvent]:
    return list(simulate(PATIENTS, DAYS, seed=11, start=START))


@pytest.fixture(scope="module")
def valid(traffic: list[SimulatedEvent]) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in traffic if e.kind == "valid"]


def test_same_seed_gives_identical_bytes() -> None:
    first = list(simulate(60, 30, seed=7, start=START))
    second = list(simulate(60, 30, seed=7, start=START))
    assert first == second
    assert len(first) > 300


def test_different_seed_or_start_gives_different_traffic() -> None:
    base = [e.payload for e in simulate(60, 30, seed=7, start=START)]
    assert [e.payload for e in simulate(60, 30, seed=8, start=START)] != base
    assert [e.payload for e in simulate(60, 30, seed=7, start=date(2026, 3, 1))] != base


def test_noise_shares_do_not_change_the_valid_traffic() -> None:
    quiet = simulate(60, 30, seed=7, start=START, malformed_share=0, duplicate_share=0)
    noisy = simulate(60, 30, seed=7, start=START, malformed_share=0.2, duplicate_share=0.2)
    assert [e.payload for e in quiet] == [e.payload for e in noisy if e.kind == "valid"]


def test_simulate_streams_lazily() -> None:
    """A ten-year run for 20,000 patients hands out its first record without building the rest."""
    stream = simulate(20_000, 3650, seed=1, start=START)
    assert isinstance(stream, Iterator)
    assert next(stream).kind in ("valid", "malformed")


def test_every_valid_and_duplicate_record_meets_the_contract(
    traffic: list[SimulatedEvent],
) -> None:
    now = after(DAYS)
    for event in traffic:
        if event.kind != "malformed":
            parsed = parse_interaction(event.payload, now=now)
            assert event.key == parsed.subject
            assert event.event_type == parsed.type


def test_every_malformed_record_is_rejected_with_the_code_of_its_flaw() -> None:
    traffic = list(simulate(80, 30, seed=5, start=START, malformed_share=0.1))
    malformed = [e for e in traffic if e.kind == "malformed"]
    assert {e.flaw for e in malformed} == set(FLAW_CODES)
    for event in malformed:
        assert isinstance(event.payload, bytes)
        assert b"\n" not in event.payload  # each is one JSON-lines line
        with pytest.raises(InvalidInteraction) as rejected:
            parse_interaction(event.payload, now=after(30))
        assert event.flaw is not None
        assert rejected.value.code == FLAW_CODES[event.flaw]


def test_duplicates_are_byte_identical_resends_of_earlier_valid_records(
    traffic: list[SimulatedEvent],
) -> None:
    seen: set[tuple[str | None, bytes]] = set()
    duplicates = 0
    for event in traffic:
        if event.kind == "valid":
            seen.add((event.key, event.payload))
        elif event.kind == "duplicate":
            duplicates += 1
            assert (event.key, event.payload) in seen
    assert 0.005 < duplicates / len(traffic) < 0.02


def test_valid_events_have_unique_cloudevents_identities(valid: list[dict[str, Any]]) -> None:
    identities = Counter((e["source"], e["id"]) for e in valid)
    assert identities.most_common(1)[0][1] == 1


def test_every_patient_interaction_type_appears_in_a_plausible_mix(
    valid: list[dict[str, Any]],
) -> None:
    mix = Counter(e["type"] for e in valid)
    # points.adjusted is staff correcting a balance by hand, not simulated patient traffic;
    # consent.changed (the portal's preferences), purchases at coalition partners and portal
    # engagement belong to other programs' traffic, not the default clinic's
    assert set(mix) == set(EVENT_TYPES) - {
        "points.adjusted",
        "consent.changed",
        "coverage.changed",  # payer classes: only with --payers (the default traffic is fixed)
        "purchase.recorded",
        "engagement.recorded",
        "reward.used",  # vouchers: catalogue and stamp-card programs
        "membership.purchased",
        "membership.cancelled",
        "prepayment.recorded",
        "account.erasure_requested",  # a rare, deliberate request (careledger erase), not traffic
    }
    assert mix.most_common(1)[0][0] == "activity.reading"  # the daily device totals
    assert mix["visit.completed"] > mix["payment.recorded"] > mix["review.submitted"]
    assert mix["redemption.requested"] > mix["redemption.cancelled"]
    assert mix["interaction.voided"] < 0.03 * (mix["visit.completed"] + mix["payment.recorded"])
    assert PATIENTS * 0.9 <= mix["patient.enrolled"] <= PATIENTS
    sources = {e["source"] for e in valid}
    assert sources == {
        "urn:clinic:emr",
        "urn:clinic:portal",
        "urn:clinic:pos",
        "urn:clinic:wearables",
    }


def test_volume_is_about_ten_records_per_patient_per_month(
    traffic: list[SimulatedEvent],
) -> None:
    per_patient_month = len(traffic) / PATIENTS / (DAYS / 30)
    assert 6 <= per_patient_month <= 14


def test_event_times_never_go_back_within_a_patient(valid: list[dict[str, Any]]) -> None:
    last: dict[str, str] = {}
    for event in valid:
        # Same-format UTC timestamps ("...Z") compare correctly as strings.
        assert event["time"] >= last.get(event["subject"], "")
        last[event["subject"]] = event["time"]


def test_the_whole_stream_is_in_event_time_order(valid: list[dict[str, Any]]) -> None:
    times = [e["time"] for e in valid]
    assert times == sorted(times)


def test_patients_enrol_before_anything_else(valid: list[dict[str, Any]]) -> None:
    first: dict[str, str] = {}
    for event in valid:
        first.setdefault(event["subject"], event["type"])
    assert set(first.values()) == {"patient.enrolled"}


def test_referrals_are_mostly_followed_by_the_referees_enrolment_and_first_visit(
    valid: list[dict[str, Any]],
) -> None:
    enrolled: dict[str, dict[str, Any]] = {}
    first_visit: dict[str, str] = {}
    referrals: list[dict[str, Any]] = []
    for event in valid:
        subject, kind = event["subject"], event["type"]
        if kind == "patient.enrolled":
            enrolled[subject] = event
        elif kind == "visit.completed":
            first_visit.setdefault(subject, event["time"])
        elif kind == "referral.made":
            referrals.append(event)
    cutoff = (after(DAYS) - timedelta(days=35)).isoformat()
    settled = [r for r in referrals if r["time"] < cutoff]  # time enough to enrol and visit
    converted = [
        r
        for r in settled
        if (referee := r["data"]["referee"]) in enrolled
        and enrolled[referee]["time"] > r["time"]
        and first_visit.get(referee, "") > enrolled[referee]["time"]
    ]
    assert len(settled) >= 10
    assert len(converted) >= 0.6 * len(settled)
    assert all(r["data"]["referee"] != r["subject"] for r in referrals)
    named = [e for e in enrolled.values() if "referred_by" in e["data"]]
    assert named and all(e["data"]["referred_by"] != e["subject"] for e in named)


def test_payment_amounts_are_decimal_strings(valid: list[dict[str, Any]]) -> None:
    amounts = [e["data"]["amount"] for e in valid if e["type"] == "payment.recorded"]
    assert all(
        isinstance(a, str) and a.count(".") == 1 and len(a.split(".")[1]) == 2 for a in amounts
    )
    assert any(a.endswith(".00") for a in amounts)


def test_voids_name_an_earlier_visit_or_payment_of_the_same_patient(
    valid: list[dict[str, Any]],
) -> None:
    earlier: dict[tuple[str, str], dict[str, Any]] = {}
    voids = 0
    for event in valid:
        if event["type"] == "interaction.voided":
            voids += 1
            target = earlier[(event["data"]["voided_source"], event["data"]["voided_id"])]
            assert target["subject"] == event["subject"]
            assert target["type"] in ("visit.completed", "payment.recorded")
        earlier[(event["source"], event["id"])] = event
    assert voids > 0


def test_cancellations_follow_their_redemption(valid: list[dict[str, Any]]) -> None:
    requested: dict[str, str] = {}
    for event in valid:
        if event["type"] == "redemption.requested":
            requested[event["data"]["redemption_id"]] = event["subject"]
        elif event["type"] == "redemption.cancelled":
            assert requested[event["data"]["redemption_id"]] == event["subject"]


def test_wearable_readings_are_daily_totals_sometimes_two_a_day(
    valid: list[dict[str, Any]],
) -> None:
    per_day: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in valid:
        if event["type"] == "activity.reading":
            assert event["time"].startswith(event["data"]["day"])
            per_day[(event["subject"], event["data"]["day"])].append(event["data"]["value"])
    counts = Counter(len(values) for values in per_day.values())
    assert set(counts) == {1, 2}
    assert 0.1 < counts[2] / len(per_day) < 0.6
    assert all(values == sorted(values) for values in per_day.values())  # partial, then total


def test_vaccinations_peak_in_autumn() -> None:
    by_month: Counter[int] = Counter()
    for event in simulate(400, 365, seed=3, start=START, malformed_share=0, duplicate_share=0):
        if event.event_type == "checkup.completed":
            body = json.loads(event.payload)
            if body["data"]["checkup_type"] == "vaccination":
                by_month[int(body["time"][5:7])] += 1
    autumn = by_month[9] + by_month[10] + by_month[11]
    assert autumn > 2 * (sum(by_month.values()) - autumn)


def test_annual_wellness_at_most_once_per_patient_and_year() -> None:
    seen: Counter[tuple[str | None, str]] = Counter()
    for event in simulate(300, 730, seed=4, start=START, malformed_share=0, duplicate_share=0):
        if event.event_type == "checkup.completed" and b"annual_wellness" in event.payload:
            seen[(event.key, json.loads(event.payload)["time"][:4])] += 1
    assert seen and max(seen.values()) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate(0, 10, seed=1, start=START)
    with pytest.raises(ValueError):
        simulate(10, 10, seed=1, start=START, malformed_share=0.9)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(-(2**40), 2**40), start=st.dates(date(2000, 1, 1), date(2090, 1, 1)))
def test_any_seed_and_start_give_contract_valid_ordered_traffic(seed: int, start: date) -> None:
    last: dict[str | None, datetime] = {}
    for event in simulate(25, 40, seed=seed, start=start):
        if event.kind == "valid":
            parsed = parse_interaction(event.payload, now=after(40, start))
            assert parsed.time >= last.get(event.key, parsed.time)
            last[event.key] = parsed.time


# -- the command line ------------------------------------------------------------------------


def test_cli_output_file_gets_one_line_per_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "traffic.jsonl"
    code = main(["simulate", "--patients", "40", "--days", "20", "--output", str(path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = path.read_bytes().splitlines()
    assert len(lines) == summary["records"] == sum(summary["kinds"].values())
    assert lines == [e.payload for e in simulate(40, 20, seed=42, start=START)]
    assert summary["sink"] == str(path)
    assert summary["records_per_s"] > 0


def test_cli_output_to_stdout_keeps_the_summary_on_stderr(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    argv = ["simulate", "--patients", "10", "--days", "5", "--seed", "9", "--output", "-"]
    argv += ["--start", "2025-06-01"]
    assert main(argv) == 0
    captured = capsysbinary.readouterr()
    expected = [e.payload for e in simulate(10, 5, seed=9, start=date(2025, 6, 1))]
    assert captured.out.splitlines() == expected
    assert json.loads(captured.err.splitlines()[-1])["records"] == len(expected)


def test_cli_without_a_broker_or_output_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CARELEDGER_KAFKA_BOOTSTRAP", raising=False)
    assert main(["simulate", "--patients", "5", "--days", "2"]) == 2
    assert "CARELEDGER_KAFKA_BOOTSTRAP" in caplog.text


def test_cli_refuses_a_bad_start_date(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--start", "01/02/2026", "--output", "-"])
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_memory_stays_flat_however_many_days_are_simulated() -> None:
    def peak(days: int) -> int:
        tracemalloc.start()
        try:
            for _ in simulate(200, days, seed=2, start=START):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(60), peak(600)
    assert long < 1.5 * short  # ten times the records, about the same memory
