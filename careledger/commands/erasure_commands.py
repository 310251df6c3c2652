"""``careledger erase``: forget a patient (GDPR art. 17) by crypto-shredding (ADR 0015).

The command is one more upstream: it sends the patient an ``account.erasure_requested``
interaction per program through the same ``Ledger.apply_batch`` as ``ingest`` and the worker,
so the closure, the destroyed key and the deleted directory row commit in one transaction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from careledger.adapters.sealing_migration import seal_store
from careledger.adapters.shredding import KeyRing
from careledger.adapters.store import open_store
from careledger.application.ledger import Inbound
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from domain.account import ACCEPTED

SOURCE = "urn:careledger:cli:erase"
_REASON = re.compile(r"^[a-z0-9_]{1,64}$")


def register(subparsers: Any) -> None:
    erase = subparsers.add_parser(
        "erase", help="close a patient's accounts and shred their data (ADR 0015)"
    )
    erase.add_argument("patient")
    erase.add_argument("--program", help="one program (default: every program of the patient)")
    erase.add_argument("--reason", required=True, type=_reason, help="a reason code, e.g. gdpr")
    erase.set_defaults(handler=run_erase)

    sealing = subparsers.add_parser(
        "seal-store", help="seal a store written before the ledger secret was set (ADR 0015)"
    )
    sealing.set_defaults(handler=run_seal_store)


def _reason(text: str) -> str:
    if not _REASON.match(text):
        raise argparse.ArgumentTypeError("a reason code: 1 to 64 characters from a-z 0-9 _")
    return text


def run_erase(args: argparse.Namespace, settings: Settings) -> int:
    ledger = build_ledger(settings)
    if not ledger.directory.sealed:
        print(
            "erase needs CARELEDGER_LEDGER_SECRET (nothing is sealed without it)", file=sys.stderr
        )
        return 2
    programs = [args.program] if args.program else sorted(ledger.programs)
    held = [p for p in programs if ledger.directory.find(p, args.patient) is not None]
    if not held:
        print("no account for that patient", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:12]
    inputs = [
        Inbound(f"erase:{run}:{n}", _request(args.patient, program, args.reason, now), now)
        for n, program in enumerate(held, start=1)
    ]
    results = ledger.apply_batch(inputs).results
    ledger.relay_until_idle()
    erased = [p for p, r in zip(held, results, strict=True) if r.outcome == ACCEPTED]
    for result in results:
        if result.outcome != ACCEPTED:
            print(f"{result.origin}: {result.outcome}: {result.code}", file=sys.stderr)
    print(json.dumps({"erased_programs": erased, "reason": args.reason}))
    return 0 if len(erased) == len(held) else 1


def run_seal_store(args: argparse.Namespace, settings: Settings) -> int:
    ring = KeyRing.of(settings.ledger_secret)
    if ring is None:
        print("seal-store needs CARELEDGER_LEDGER_SECRET", file=sys.stderr)
        return 2
    store = open_store(settings.database_url, settings.database_schema, keyring=ring)
    try:
        report = seal_store(store, ring)
    finally:
        store.close()
    print(json.dumps(dataclasses.asdict(report)))
    return 0


def _request(patient: str, program: str, reason: str, at: datetime) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"erase-{uuid.uuid4().hex}",
            "source": SOURCE,
            "type": "account.erasure_requested",
            "time": at.isoformat(),
            "subject": patient,
            "programid": program,
            "data": {"reason": reason},
        }
    )
