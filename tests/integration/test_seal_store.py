"""A store written before ADR 0015 keeps loading: ``careledger seal-store`` seals it in place
(tested on SQLite and PostgreSQL through the CLI), and a sealed ledger refuses it until then."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import Database
from tests.events import jsonl
from tests.integration.test_erasure import (
    SECRET,
    SUBJECT,
    full_dump,
    history,
    ok,
    secrets_of_the_subject,
)

pytestmark = pytest.mark.e2e


def careledger(db: Database, *args: str, secret: bool, stdin: bytes | None = None) -> Any:
    env = {**os.environ, **db.env()}
    env.pop("CARELEDGER_LEDGER_SECRET", None)
    if secret:
        env["CARELEDGER_LEDGER_SECRET"] = SECRET
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_store_written_before_the_secret_is_sealed_in_place(database: Database) -> None:
    events = jsonl(history())
    assert ok(careledger(database, "ingest", "-", secret=False, stdin=events))["accepted"] == 22
    legacy = ok(careledger(database, "balance", SUBJECT, "--json", secret=False))
    statement = careledger(database, "statement", SUBJECT, "--json", secret=False).stdout

    refused = careledger(database, "ingest", "-", secret=True, stdin=events)
    assert refused.returncode != 0 and "careledger seal-store" in refused.stderr

    sealed = ok(careledger(database, "seal-store", secret=True))
    assert sealed["accounts"] == 5 and sealed["interaction_keys"] == 22
    assert ok(careledger(database, "seal-store", secret=True)) == {
        "accounts": 0,
        "events": 0,
        "interaction_keys": 0,
    }
    # the same accounts, found through the directory, with the same history
    assert ok(careledger(database, "balance", SUBJECT, "--json", secret=True)) == legacy
    assert careledger(database, "statement", SUBJECT, "--json", secret=True).stdout == statement
    again = ok(careledger(database, "ingest", "-", secret=True, stdin=events))
    assert again == {"accepted": 0, "duplicates": 22, "rejected": 1}  # keyed keys still match

    ok(careledger(database, "erase", SUBJECT, "--reason", "gdpr_art17", secret=True))
    leaks = {s for s in secrets_of_the_subject() if s in full_dump(database)}
    # dead letters written before sealing name no patient and keep their ids (ADR 0015)
    assert leaks == {b"ia-erase-bad1"}
