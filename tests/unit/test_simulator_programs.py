"""The simulator's other programs (``--program``): each profile's traffic is deterministic, meets
the contract and carries its program, and applied to the pure domain it exercises the program's
rules (partners, caps, the wellness sub-ledger; goal days, streaks, tiers; catalogue vouchers,
memberships; cashback, prepaid, stamp vouchers) while the ledger refuses exactly the malformed
records. clinic-default's traffic stays byte for byte the same.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from careledger.application.intake import to_interaction
from careledger.application.programs import builtin_programs
from careledger.cli import main
from domain.account import DUPLICATE, PatientAccount
from domain.errors import LedgerError
from producers.habits import HEAVY_CHURN, POPULATIONS
from producers.profiles import PROFILES
from producers.simulator import SimulatedEvent, simulate
from schemas.v1 import DEFAULT_PROGRAM_ID
from schemas.validation import InvalidInteraction, parse_interaction

START = date(2026, 1, 1)
OTHERS = ("coalition-health", "activity-motion", "membership-plus", "clinic-discounts")


def after(days: int) -> datetime:
    """An ingest clock just after a simulated period, so no valid event is in the future."""
    return datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=days + 1)


def digest(events: Iterable[SimulatedEvent]) -> tuple[int, str]:
    sha = hashlib.sha256()
    count = 0
    for event in events:
        sha.update(b"\0".join([event.kind.encode(), (event.key or "").encode(), event.payload]))
        sha.update(b"\n")
        count += 1
    return count, sha.hexdigest()


@dataclass
class Applied:
    """Traffic through the pure domain: one account per (program, patient), as the ledger."""

    accounts: dict[tuple[str, str], PatientAccount] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)  # every domain event, in order
    wire: dict[str, Any] = field(default_factory=dict)  # CloudEvent id -> parsed event
    refused: list[SimulatedEvent] = field(default_factory=list)
    duplicates: int = 0
    # redemption id -> (points available anywhere in the program just before it)
    total_before: dict[str, int] = field(default_factory=dict)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def apply(traffic: Iterable[SimulatedEvent], now: datetime, close_days: bool = False) -> Applied:
    """``close_days``: run maintenance on every account at each UTC midnight the valid traffic
    passes, as the worker's close of day does."""
    programs, applied = builtin_programs(), Applied()
    closed: datetime | None = None
    for record in traffic:
        try:
            event = parse_interaction(record.payload, now=now)
        except InvalidInteraction:
            applied.refused.append(record)
            continue
        midnight = event.time.replace(hour=0, minute=0, second=0, microsecond=0)
        if close_days and record.kind == "valid" and (closed is None or midnight > closed):
            closed = midnight
            maintain(applied, midnight)
        addressed = to_interaction(event)
        program = programs[addressed.program_id]
        key = (addressed.program_id, addressed.patient_id)
        account = applied.accounts.get(key) or PatientAccount.open(program, addressed.patient_id)
        applied.accounts[key] = account
        applied.wire[event.id] = event
        if event.type == "redemption.requested":
            applied.total_before[event.data.redemption_id] = account.available
        before = len(account.pending_events)
        try:
            outcome = account.handle(addressed.interaction, program)
        except LedgerError:
            applied.refused.append(record)
            continue
        applied.duplicates += outcome == DUPLICATE
        applied.events.extend(account.pending_events[before:])
    return applied


def maintain(applied: Applied, as_of: datetime) -> None:
    """The close-of-day job as of ``as_of`` on every account."""
    programs = builtin_programs()
    for (program_id, _), account in applied.accounts.items():
        before = len(account.pending_events)
        account.maintain(as_of, programs[program_id])
        applied.events.extend(account.pending_events[before:])


# --------------------------------------------------------------------------- clinic-default
def test_clinic_default_traffic_is_byte_for_byte_what_it_was() -> None:
    """Digests taken before the profiles existed: the default traffic must never drift."""
    assert digest(simulate(300, 120, 11, START)) == (
        12714,
        "69ad26d690458970309152e36c0cc0c506ec02f9f54cc31bb2ee68762d255d26",
    )
    assert digest(simulate(200, 200, 5, START, population=HEAVY_CHURN)) == (
        592,
        "1816b48f43e44507dc3b5034347721db7c5d22f1ebebbc787c04843d39ed2455",
    )
    default = PROFILES[DEFAULT_PROGRAM_ID]
    assert list(simulate(50, 30, 2, START, profile=default)) == list(simulate(50, 30, 2, START))


def test_every_profile_has_the_demos_populations() -> None:
    assert all(set(profile.populations) == set(POPULATIONS) for profile in PROFILES.values())


# ------------------------------------------------------------------ every program's traffic
@pytest.mark.parametrize("program", OTHERS)
def test_deterministic_for_a_seed_and_different_for_another(program: str) -> None:
    profile = PROFILES[program]
    first = list(simulate(40, 30, seed=7, start=START, profile=profile))
    assert first == list(simulate(40, 30, seed=7, start=START, profile=profile))
    assert [e.payload for e in simulate(40, 30, seed=8, start=START, profile=profile)] != [
        e.payload for e in first
    ]


@pytest.mark.parametrize("program", OTHERS)
def test_every_record_but_the_malformed_is_valid_and_carries_its_program(program: str) -> None:
    now = after(60)
    for record in simulate(80, 60, seed=3, start=START, profile=PROFILES[program]):
        if record.kind != "malformed":
            parsed = parse_interaction(record.payload, now=now)
            assert parsed.programid == program
            assert (record.key, record.event_type) == (parsed.subject, parsed.type)
            assert parsed.id.startswith(PROFILES[program].tag + "-")


def mix(program: str) -> Counter[str]:
    traffic = simulate(150, 90, 5, START, 0, 0, profile=PROFILES[program])
    return Counter(e.event_type for e in traffic)


def test_coalition_traffic_mixes_purchases_visits_engagement_and_redemptions() -> None:
    types = mix("coalition-health")
    assert set(types) == {
        "patient.enrolled",
        "visit.completed",
        "purchase.recorded",
        "engagement.recorded",
        "redemption.requested",
        "redemption.cancelled",
        "interaction.voided",
    }
    assert types["engagement.recorded"] > types["purchase.recorded"] > types["visit.completed"]
    assert types["redemption.requested"] > types["redemption.cancelled"] > 0


def test_coalition_purchases_at_every_partner_in_cad_with_plausible_amounts() -> None:
    purchases = [
        json.loads(e.payload)["data"]
        for e in simulate(150, 90, 5, START, 0, 0, profile=PROFILES["coalition-health"])
        if e.event_type == "purchase.recorded"
    ]
    pairs = Counter((p["partner_id"], p["category"]) for p in purchases)
    assert set(pairs) == {
        ("pharmacy-1", "front_store"),
        ("pharmacy-1", "prescription"),
        ("giftshop-1", "gift"),
        ("wellness-1", "wellness_class"),
    }
    assert pairs.most_common(1)[0][0] == ("pharmacy-1", "front_store")
    assert {p["currency"] for p in purchases} == {"CAD"}
    assert all(2 <= float(p["amount"]) <= 181 for p in purchases)


def test_coalition_portal_actions_are_all_there_logins_most() -> None:
    actions = Counter(
        json.loads(e.payload)["data"]["action"]
        for e in simulate(150, 90, 5, START, 0, 0, profile=PROFILES["coalition-health"])
        if e.event_type == "engagement.recorded"
    )
    assert len(actions) == 8
    assert actions.most_common(1)[0][0] == "portal_login"


def test_motion_traffic_is_step_readings_several_a_day_some_late() -> None:
    types = mix("activity-motion")
    assert set(types) == {
        "patient.enrolled",
        "activity.reading",
        "redemption.requested",
        "redemption.cancelled",
    }
    readings = [
        json.loads(e.payload)
        for e in simulate(60, 60, 5, START, 0, 0, profile=PROFILES["activity-motion"])
        if e.event_type == "activity.reading"
    ]
    per_day = Counter((r["subject"], r["data"]["day"]) for r in readings)
    assert sum(per_day.values()) / len(per_day) > 1.5
    late = [r for r in readings if r["time"][:10] > r["data"]["day"]]
    assert 0.03 < len(late) / len(readings) < 0.15
    # out of order: a reading with fewer steps than an earlier one of the same day
    seen: dict[tuple[str, str], int] = {}
    lower = 0
    for r in readings:
        key = (r["subject"], r["data"]["day"])
        lower += r["data"]["value"] < seen.get(key, 0)
        seen[key] = max(seen.get(key, 0), r["data"]["value"])
    assert lower > 0


def test_membership_traffic_mixes_visits_checkups_memberships_and_catalogue_redemptions() -> None:
    types = mix("membership-plus")
    assert set(types) == {
        "patient.enrolled",
        "visit.completed",
        "payment.recorded",
        "checkup.completed",
        "membership.purchased",
        "membership.cancelled",
        "redemption.requested",
        "redemption.cancelled",
        "reward.used",
        "interaction.voided",
    }
    assert types["visit.completed"] > types["redemption.requested"] > types["reward.used"] > 0
    events = [
        json.loads(e.payload)["data"]
        for e in simulate(150, 180, 5, START, 0, 0, profile=PROFILES["membership-plus"])
        if e.event_type in ("membership.purchased", "redemption.requested")
    ]
    prices = {(d["plan_id"], d["amount"], d["currency"]) for d in events if "plan_id" in d}
    assert prices == {("annual", "480.00", "USD"), ("monthly", "45.00", "USD")}
    rewards = Counter(d["reward_id"] for d in events if "reward_id" in d)
    assert rewards.most_common(1)[0][0] == "parking-pass"
    assert "charity-donation" in rewards and len(rewards) >= 3
    priced = [d for d in events if "reward_id" in d and "points" in d]
    assert 0 < len(priced) < sum(rewards.values())  # the price is optional in a catalogue


def test_discount_traffic_pays_in_gbp_from_wallets_prepays_reviews_and_uses_stamps() -> None:
    types = mix("clinic-discounts")
    assert {
        "patient.enrolled",
        "visit.completed",
        "payment.recorded",
        "prepayment.recorded",
        "review.submitted",
        "reward.used",
    } <= set(types)
    assert not {"checkup.completed", "membership.purchased"} & set(types)
    events = [
        json.loads(e.payload)["data"]
        for e in simulate(150, 90, 5, START, 0, 0, profile=PROFILES["clinic-discounts"])
        if e.event_type in ("payment.recorded", "prepayment.recorded", "reward.used")
    ]
    payments = [d for d in events if "currency" in d and "prepayment_id" not in d]
    prepayments = [d for d in events if "prepayment_id" in d]
    assert {d["currency"] for d in payments + prepayments} == {"GBP"}
    assert any("cashback_used" in d for d in payments)
    assert any("prepaid_used" in d for d in payments)
    assert all(100 <= float(d["amount"]) <= 600 for d in prepayments)
    used = [d["redemption_id"] for d in events if "prepayment_id" not in d and "currency" not in d]
    assert used and all(v.startswith("free-service:") for v in used)


# ------------------------------------------------------------- through the pure domain
@pytest.fixture(scope="module")
def coalition() -> tuple[list[SimulatedEvent], Applied]:
    traffic = list(simulate(250, 180, 3, START, 0.01, 0.02, profile=PROFILES["coalition-health"]))
    return traffic, apply(traffic, after(180))


@pytest.fixture(scope="module")
def motion() -> tuple[list[SimulatedEvent], Applied]:
    traffic = list(simulate(120, 120, 3, START, 0.01, 0.02, profile=PROFILES["activity-motion"]))
    return traffic, apply(traffic, after(120))


@pytest.fixture(scope="module")
def members() -> tuple[list[SimulatedEvent], Applied]:
    traffic = list(simulate(250, 240, 3, START, 0.01, 0.02, profile=PROFILES["membership-plus"]))
    applied = apply(traffic, after(240), close_days=True)
    # past every catalogue voucher's 90 days: what is still open lapses (monthly) or expires
    maintain(applied, after(240) + timedelta(days=91))
    return traffic, applied


@pytest.fixture(scope="module")
def discounts() -> tuple[list[SimulatedEvent], Applied]:
    traffic = list(simulate(250, 240, 3, START, 0.01, 0.02, profile=PROFILES["clinic-discounts"]))
    return traffic, apply(traffic, after(240), close_days=True)


@pytest.mark.parametrize("name", ["coalition", "motion", "members", "discounts"])
def test_the_domain_refuses_exactly_the_malformed_records(
    name: str, request: pytest.FixtureRequest
) -> None:
    traffic, applied = request.getfixturevalue(name)
    kinds = Counter(e.kind for e in traffic)
    assert applied.refused == [e for e in traffic if e.kind == "malformed"]
    assert applied.duplicates == kinds["duplicate"] > 0
    assert kinds["malformed"] > 0


def earned_by_purchase(applied: Applied) -> Counter[tuple[str, str]]:
    paid: Counter[tuple[str, str]] = Counter()
    for event in applied.of(PatientAccount.PointsEarned):
        if event.interaction == "purchase.recorded":
            data = applied.wire[event.source_id].data
            paid[(data.partner_id, data.category)] += sum(a.credit.points for a in event.awards)
    return paid


def test_coalition_purchases_earn_at_each_partner_and_prescriptions_never(
    coalition: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = coalition
    paid = earned_by_purchase(applied)
    assert set(paid) == {
        ("pharmacy-1", "front_store"),
        ("giftshop-1", "gift"),
        ("wellness-1", "wellness_class"),
    }
    assert all(points > 0 for points in paid.values())
    noted = [
        applied.wire[e.source_id].data.category
        for e in applied.of(PatientAccount.InteractionNoted)
        if e.interaction == "purchase.recorded"
    ]
    assert noted and set(noted) == {"prescription"}


def test_coalition_engagement_is_sometimes_capped(
    coalition: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = coalition
    capped = Counter(
        applied.wire[e.source_id].data.action
        for e in applied.of(PatientAccount.InteractionNoted)
        if e.interaction == "engagement.recorded" and e.outcome == "capped"
    )
    paid = sum(
        1 for e in applied.of(PatientAccount.PointsEarned) if e.interaction == "engagement.recorded"
    )
    assert {"portal_login", "record_viewed", "social_follow"} <= set(capped)
    assert 0 < sum(capped.values()) < paid


def test_coalition_redeems_at_partners_and_refuses_wellness_points_elsewhere(
    coalition: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = coalition
    redeemed = Counter(e.partner_id for e in applied.of(PatientAccount.PointsRedeemed))
    assert {"clinic-main", "pharmacy-1", "giftshop-1", "wellness-1"} <= set(redeemed)
    wellness = [
        e
        for e in applied.of(PatientAccount.PointsRedeemed)
        if e.partner_id == "wellness-1" and any(a.partner == "wellness-1" for a in e.allocations)
    ]
    assert wellness
    # rejected away from wellness-1 although the account held enough points in all
    misplaced = [
        e
        for e in applied.of(PatientAccount.RedemptionRejected)
        if applied.wire[e.source_id].data.partner_id != "wellness-1"
        and applied.total_before[e.redemption_id] >= e.points > e.available
    ]
    assert misplaced
    assert applied.of(PatientAccount.RedemptionCancelled)
    assert applied.of(PatientAccount.InteractionVoided)


def test_motion_pays_goal_days_and_streaks_and_reaches_active_and_champion(
    motion: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = motion
    assert applied.of(PatientAccount.StreakBonusEarned)
    assert {
        e.to_tier for e in applied.of(PatientAccount.TierChanged) if e.reason == "goal_days"
    } >= {"active", "champion"}
    tiers = Counter(account.tier for account in applied.accounts.values())
    assert tiers["starter"] and tiers["active"] and tiers["champion"]
    capped = [
        e
        for e in applied.of(PatientAccount.InteractionNoted)
        if e.outcome == "monthly_activity_cap"
    ]
    assert capped
    assert applied.of(PatientAccount.PointsRedeemed)


# ------------------------------------------------------------------------------------ CLI
def test_cli_simulates_a_program_with_heavy_churn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default, heavy = tmp_path / "default.jsonl", tmp_path / "heavy.jsonl"
    argv = ["simulate", "--program", "activity-motion", "--patients", "40", "--days", "30"]
    assert main([*argv, "--output", str(default)]) == 0
    assert main([*argv, "--churn", "heavy", "--output", str(heavy)]) == 0
    capsys.readouterr()
    lines = default.read_bytes().splitlines()
    programs = {json.loads(line).get("programid") for line in lines if line.endswith(b"}")}
    assert programs == {"activity-motion"}
    assert heavy.read_bytes() != default.read_bytes()
    expected = simulate(40, 30, 42, date(2026, 1, 1), profile=PROFILES["activity-motion"])
    assert lines == [e.payload for e in expected]


def test_membership_vouchers_are_issued_used_cancelled_and_expired(
    members: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = members
    issued = {e.voucher_id: e.reward_id for e in applied.of(PatientAccount.VoucherIssued)}
    assert all(v.startswith("rdm-") for v in issued)  # catalogue vouchers: ids unique
    assert {"parking-pass", "gym-discount", "charity-donation", "free-checkup"} <= set(
        issued.values()
    )
    used = [e.voucher_id for e in applied.of(PatientAccount.VoucherUsed)]
    assert used and set(used) <= set(issued)
    ended = Counter(e.status for e in applied.of(PatientAccount.VoucherEnded))
    assert ended["cancelled"] > 0 and ended["expired"] > 0
    assert len(used) + sum(ended.values()) == len(issued)  # every voucher used or ended
    rejected = Counter(e.reason for e in applied.of(PatientAccount.RedemptionRejected))
    assert {"reward_limit_reached", "reward_not_available", "insufficient_points"} <= set(rejected)


def test_memberships_start_renew_are_cancelled_and_lapse_at_maintenance(
    members: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = members
    started = {e.membership_id: e.plan_id for e in applied.of(PatientAccount.MembershipStarted)}
    assert set(started.values()) == {"annual", "monthly"}
    renewed = applied.of(PatientAccount.MembershipRenewed)
    assert renewed and {e.membership_id for e in renewed} <= set(started)
    assert applied.of(PatientAccount.MembershipCancelled)
    lapsed = {e.membership_id for e in applied.of(PatientAccount.MembershipLapsed)}
    assert lapsed and lapsed <= set(started)
    assert len(set(started) - lapsed) > 0  # annual members still paid up
    again = Counter(e.originator_id for e in applied.of(PatientAccount.MembershipStarted))
    assert again.most_common(1)[0][1] > 1  # someone came back after a lapse
    tiers = Counter(e.to_tier for e in applied.of(PatientAccount.TierChanged))
    assert tiers["plus"] and tiers["premier"]


def test_discount_wallets_are_drawn_cashback_expires_and_stamp_vouchers_are_used(
    discounts: tuple[list[SimulatedEvent], Applied],
) -> None:
    _, applied = discounts
    payments = applied.of(PatientAccount.PaymentRecorded)
    assert {e.currency for e in payments} == {"GBP"}
    assert sum(1 for e in payments if e.cashback_drawn) > 0
    assert sum(1 for e in payments if e.prepaid_drawn) > 0
    assert applied.of(PatientAccount.CashbackExpired)
    assert {e.prepayment_discount_percent for e in payments} >= {0, 10, 20}
    assert applied.of(PatientAccount.PrepaymentRecorded)
    stamps = {(e.originator_id, e.voucher_id) for e in applied.of(PatientAccount.VoucherIssued)}
    assert stamps and all(v.startswith("free-service:") for _, v in stamps)
    used = {(e.originator_id, e.voucher_id) for e in applied.of(PatientAccount.VoucherUsed)}
    assert used and used < stamps
    reviews = [
        e for e in applied.of(PatientAccount.PointsEarned) if e.interaction != "review.submitted"
    ]
    assert not reviews  # reviews are the only points
    assert any(e.outcome == "review_cooldown" for e in applied.of(PatientAccount.InteractionNoted))


@pytest.mark.parametrize("program", ["membership-plus", "clinic-discounts"])
def test_cli_simulates_a_rewards_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], program: str
) -> None:
    out = tmp_path / "traffic.jsonl"
    argv = ["simulate", "--program", program, "--patients", "30", "--days", "30"]
    assert main([*argv, "--output", str(out)]) == 0
    capsys.readouterr()
    lines = out.read_bytes().splitlines()
    expected = simulate(30, 30, 42, date(2026, 1, 1), profile=PROFILES[program])
    assert lines == [e.payload for e in expected]
