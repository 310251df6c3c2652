"""``ingest``, ``maintenance``, ``balance``, ``statement`` and ``dead-letters``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from careledger.application.ledger import DUPLICATE, REJECTED, Inbound, Ledger, Result
from careledger.application.queries import dead_letters
from careledger.bootstrap import build_ledger
from careledger.commands.rendering import to_json
from careledger.settings import Settings
from domain.program import Program
from schemas.v1 import DEFAULT_PROGRAM_ID


def register(subparsers: Any) -> None:
    ingest = subparsers.add_parser("ingest", help="apply a file of JSON-lines CloudEvents")
    ingest.add_argument("path", help="a file of JSON lines, or - for standard input")
    ingest.set_defaults(handler=run_ingest)

    maintenance = subparsers.add_parser("maintenance", help="close of day: expiry and tiers")
    maintenance.add_argument("--as-of", required=True, type=_timestamp, help="RFC 3339 time")
    maintenance.add_argument("--program", help="one program (default: every program)")
    maintenance.set_defaults(handler=run_maintenance)

    balance = subparsers.add_parser("balance", help="a patient's balance")
    balance.add_argument("patient")
    balance.add_argument("--program", default=DEFAULT_PROGRAM_ID)
    balance.add_argument("--json", action="store_true", help="machine-readable output")
    balance.set_defaults(handler=run_balance)

    statement = subparsers.add_parser("statement", help="a patient's ledger entries")
    statement.add_argument("patient")
    statement.add_argument("--program", default=DEFAULT_PROGRAM_ID)
    statement.add_argument("--json", action="store_true", help="machine-readable output")
    statement.set_defaults(handler=run_statement)

    letters = subparsers.add_parser("dead-letters", help="inputs the ledger refused")
    letters.add_argument("--limit", type=int, default=100)
    letters.add_argument("--json", action="store_true", help="machine-readable output")
    letters.set_defaults(handler=run_dead_letters)


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("the timestamp needs an offset, e.g. Z or +01:00")
    return value


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Apply a JSON-lines file; the last stdout line is the JSON summary."""
    ledger = build_ledger(settings)
    run_id = uuid.uuid4().hex[:12]
    received_at = datetime.now(UTC)
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    stream = sys.stdin.buffer if args.path == "-" else open(args.path, "rb")  # noqa: SIM115
    with stream:
        batch: list[Inbound] = []
        for number, line in _lines(stream):
            batch.append(Inbound(f"file:{run_id}:{number}", line, received_at))
            if len(batch) >= settings.batch_max:
                _apply(ledger, batch, counts)
                batch = []
        _apply(ledger, batch, counts)
    ledger.relay_until_idle()
    print(f"ingest run {run_id}: dead letters are kept as file:{run_id}:<line>", file=sys.stderr)
    print(json.dumps(counts))
    return 0


def _apply(ledger: Ledger, batch: list[Inbound], counts: dict[str, int]) -> None:
    if not batch:
        return
    for result in ledger.apply_batch(batch).results:
        _count(result, counts)


def _count(result: Result, counts: dict[str, int]) -> None:
    if result.outcome == REJECTED:
        counts["rejected"] += 1
        line = result.origin.rsplit(":", 1)[1]
        print(f"line {line}: rejected: {result.code}: {result.reason}", file=sys.stderr)
    elif result.outcome == DUPLICATE:
        counts["duplicates"] += 1
    else:
        counts["accepted"] += 1


def run_maintenance(args: argparse.Namespace, settings: Settings) -> int:
    ledger = build_ledger(settings)
    programs = [args.program] if args.program else sorted(ledger.programs)
    reports = {}
    for program_id in programs:
        reports[program_id] = dataclasses.asdict(ledger.maintain(program_id, args.as_of))
    ledger.relay_until_idle()
    print(json.dumps({"as_of": args.as_of.isoformat(), "programs": reports}))
    return 0


def run_balance(args: argparse.Namespace, settings: Settings) -> int:
    ledger = build_ledger(settings)
    balance = ledger.balance(args.program, args.patient)
    if balance is None:
        print(f"no account for that patient in program {args.program}", file=sys.stderr)
        return 1
    fields = dataclasses.asdict(balance)
    standing = ledger.standing(args.program, args.patient)
    assert standing is not None
    fields |= dataclasses.asdict(standing)  # consent to marketing messages, payer class
    if has_holdings(ledger.programs[args.program]):
        holdings = ledger.holdings(args.program, args.patient)
        assert holdings is not None
        fields |= {
            "benefits": list(holdings.benefits),
            "membership": holdings.membership,
            "membership_discount_percent": holdings.membership_discount_percent,
            "vouchers": [
                {"voucher_id": v, "reward_id": r, "status": st} for v, r, st in holdings.vouchers
            ],
            "cashback_balance": holdings.cashback_balance,
            "prepaid_balance": holdings.prepaid_balance,
            "prepayment_discount_percent": holdings.prepayment_discount_percent,
        }
    if args.json:
        print(to_json(fields))
    else:
        for name, value in fields.items():
            print(f"{name:20} {value}")
    return 0


def has_holdings(program: Program) -> bool:
    """Whether a program has anything besides points to show (benefits, memberships,
    vouchers, wallets); a points-only program's balance stays as it always was."""
    version = program.latest
    return bool(
        version.catalogue
        or version.plans
        or version.cashback
        or version.prepaid
        or version.spend.reward_validity
        or any(tier.benefits for tier in version.tiers)
    )


def run_statement(args: argparse.Namespace, settings: Settings) -> int:
    ledger = build_ledger(settings)
    entries = ledger.statement(args.program, args.patient)
    rows = [
        {
            "entry_id": str(e.entry_id),
            "kind": e.kind,
            "points": e.points,
            "balance_after": e.balance_after,
            "rule": e.rule_id,
            "program_version": e.program_version,
            "source": {"source": e.source, "id": e.source_id},
            "occurred_at": e.occurred_at,
            "reason": e.reason,  # why nothing was paid ("noted" lines), why staff adjusted
            "operator": e.operator,  # the staff id behind an adjustment
        }
        for e in entries
    ]
    if args.json:
        print(to_json(rows))
    else:
        for row in rows:
            why = " ".join(str(row[k]) for k in ("reason", "operator") if row[k])
            print(
                f"{row['occurred_at']:%Y-%m-%d %H:%M} {row['kind']:9} {row['points']:>7} "
                f"{row['balance_after']:>8}  {row['rule']}" + (f"  ({why})" if why else "")
            )
    return 0


def run_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    ledger = build_ledger(settings)
    rows = dead_letters(ledger.store, limit=args.limit)
    if args.json:
        print(to_json(rows))
    else:
        for row in rows:
            print(
                f"{row['received_at']:%Y-%m-%d %H:%M:%S} {row['origin']}  {row['code']}: "
                f"{row['reason']}"
            )
    return 0
