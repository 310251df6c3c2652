"""(source, id) is unique across the whole ledger, on SQLite and PostgreSQL (ADR 0010).

An exact redelivery is a duplicate; the same key with other content, another subject or
another program is refused as ``id_conflict``; refusals never claim a key, so a corrected
republish is still accepted; two writers racing for one key end with one owner.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Tracking
from psycopg import errors

from careledger.adapters.store import sqlite_path
from careledger.application.ledger import DUPLICATE, REJECTED, Inbound, Ledger, Result
from careledger.application.queries import dead_letters
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from domain.account import ACCEPTED
from projections.service import catch_up
from tests.conftest import PG_URL, Database
from tests.events import cloudevent
from tests.integration.test_ledger_store import NOW
from tests.integration.test_projections_roles import analyst, as_role, grant
from tests.integration.test_projections_support import settings_for

pytestmark = pytest.mark.integration
__all__ = ["analyst"]  # a fixture, imported for the analyst-role test

PROGRAM = "clinic-default"
OTHER_PROGRAM = "clinic-two"
PROGRAMS_DIR = Path(__file__).parents[2] / "domain" / "programs"
ID_CONFLICT = ("rejected", "id_conflict")


@pytest.fixture
def ledger(database: Database, tmp_path: Path) -> Ledger:
    """A ledger running ``clinic-default`` and a copy of it named ``clinic-two``."""
    return ledger_for(database, tmp_path)


def ledger_for(db: Database, tmp_path: Path) -> Ledger:
    programs = tmp_path / "programs"
    if not programs.exists():
        programs.mkdir()
        # The shipped program under another id, in whatever format it is shipped in.
        (shipped,) = PROGRAMS_DIR.glob(f"{PROGRAM}.*")
        text = shipped.read_text(encoding="utf-8").replace(PROGRAM, OTHER_PROGRAM)
        (programs / f"{OTHER_PROGRAM}{shipped.suffix}").write_text(text, encoding="utf-8")
    return build_ledger(
        Settings(database_url=db.url, database_schema=db.schema, programs_dir=programs)
    )


def visit(subject: str = "kim", **changes: Any) -> dict[str, Any]:
    event = cloudevent(
        "visit.completed",
        subject,
        "2026-02-03T10:00:00Z",
        {"visit_id": "v1", "visit_type": "in_person"},
        id="shared-id",
    )
    return {**event, **changes}


def raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def apply(ledger: Ledger, *raws: bytes, first: int = 0) -> list[Result]:
    batch = [Inbound(f"test:{first + i}", r, NOW) for i, r in enumerate(raws)]
    return ledger.apply_batch(batch).results


def outcomes(results: list[Result]) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.code) for r in results]


def available(ledger: Ledger, patient: str, program: str = PROGRAM) -> int | None:
    balance = ledger.balance(program, patient)
    return None if balance is None else balance.available


def key_rows(db: Database) -> int:
    """Rows of the key registry, read with the backend's own driver."""
    if db.kind == "postgres":
        with psycopg.connect(PG_URL) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{db.schema}".interaction_keys').fetchone()
    else:
        with sqlite3.connect(sqlite_path(db.url)) as conn:
            row = conn.execute("SELECT count(*) FROM interaction_keys").fetchone()
    assert row is not None
    return int(row[0])


def reordered(event: dict[str, Any]) -> bytes:
    """The same event with every object's keys in reverse order and other whitespace."""

    def flip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: flip(value[k]) for k in reversed(list(value))}
        return value

    return json.dumps(flip(event), indent=3, separators=(" ,", " :  ")).encode()


SECOND: dict[str, tuple[Callable[[], bytes], tuple[str, str | None]]] = {
    "exact redelivery": (lambda: raw(visit()), (DUPLICATE, None)),
    "reordered JSON": (lambda: reordered(visit()), (DUPLICATE, None)),
    "same instant, other offset": (
        lambda: raw(visit(time="2026-02-03T11:00:00+01:00")),
        (DUPLICATE, None),
    ),
    "other data": (
        lambda: raw(visit(data={"visit_id": "v1", "visit_type": "telehealth"})),
        ID_CONFLICT,
    ),
    "other time": (lambda: raw(visit(time="2026-02-04T10:00:00Z")), ID_CONFLICT),
    "other type": (lambda: raw(visit(type="review.submitted", data={"rating": 5})), ID_CONFLICT),
    "other subject": (lambda: raw(visit("lou")), ID_CONFLICT),
    "other program": (lambda: raw(visit(programid=OTHER_PROGRAM)), ID_CONFLICT),
}


@pytest.mark.parametrize("case", SECOND)
def test_a_key_is_one_interaction_across_the_ledger(
    case: str, ledger: Ledger, database: Database, tmp_path: Path
) -> None:
    second, expected = SECOND[case]
    assert outcomes(apply(ledger, raw(visit()))) == [(ACCEPTED, None)]

    # In a later batch, and from a fresh process (nothing cached).
    result = apply(ledger_for(database, tmp_path), second(), first=1)
    assert outcomes(result) == [expected]

    assert available(ledger, "kim") == 100
    assert available(ledger, "lou") is None
    assert available(ledger, "kim", OTHER_PROGRAM) is None
    assert key_rows(database) == 1
    refused = [r for r in dead_letters(ledger.store) if r["code"] == "id_conflict"]
    if expected == ID_CONFLICT:
        assert result[0].reason == "id: this (source, id) was already used by another interaction"
        assert [r["origin"] for r in refused] == ["test:1"]
    else:
        assert refused == []


def test_conflicts_within_one_batch(ledger: Ledger, database: Database) -> None:
    results = apply(
        ledger,
        raw(visit()),
        raw(visit("lou")),
        raw(visit(data={"visit_id": "v1", "visit_type": "telehealth"})),
        raw(visit(programid=OTHER_PROGRAM)),
        reordered(visit()),
    )
    assert outcomes(results) == [
        (ACCEPTED, None),
        ID_CONFLICT,
        ID_CONFLICT,
        ID_CONFLICT,
        (DUPLICATE, None),
    ]
    assert available(ledger, "kim") == 100
    assert available(ledger, "lou") is None
    assert key_rows(database) == 1


def test_a_refused_interaction_leaves_its_key_free(ledger: Ledger, database: Database) -> None:
    cancel = visit(type="redemption.cancelled", data={"redemption_id": "nope"})
    bad_review = visit(type="review.submitted", data={"rating": 9})
    # Refused by the account, refused by the schema, then the corrected event in the same batch.
    results = apply(ledger, raw(cancel), raw(bad_review), raw(visit("lou")))
    assert outcomes(results) == [
        (REJECTED, "unknown_redemption"),
        (REJECTED, "invalid_field"),
        (ACCEPTED, None),
    ]
    assert key_rows(database) == 1

    # An id_conflict claims nothing either: once the owner's key is the only one, a later
    # corrected republish for the owner is a duplicate, never a second owner.
    assert outcomes(apply(ledger, raw(visit()), first=3)) == [ID_CONFLICT]
    assert outcomes(apply(ledger, raw(visit("lou")), first=4)) == [(DUPLICATE, None)]

    # Across batches: refused first, corrected later.
    fixed_id = {"id": "later-fixed"}
    assert outcomes(apply(ledger, raw(bad_review | fixed_id), first=5)) == [
        (REJECTED, "invalid_field")
    ]
    assert outcomes(apply(ledger, raw(visit("kim", **fixed_id)), first=6)) == [(ACCEPTED, None)]
    assert available(ledger, "kim") == 100 and available(ledger, "lou") == 100
    assert key_rows(database) == 2


def test_a_writer_that_loses_the_race_for_a_key_refuses_its_event(
    database: Database, tmp_path: Path
) -> None:
    """Two writers (two workers' ledgers) look the key up before either commits; the one that
    commits second violates the registry's primary key, retries, and then sees the owner."""
    first, second = ledger_for(database, tmp_path), ledger_for(database, tmp_path)
    raced: list[list[Result]] = []

    def meanwhile(_: list[Result]) -> None:
        if not raced:  # on the first attempt only: the other worker commits the same key
            batch = [Inbound("kafka:t:1:0", raw(visit("lou")), NOW)]
            raced.append(second.apply_batch(batch, [Tracking("kafka:t:1", 0)]).results)

    batch = [Inbound("kafka:t:0:0", raw(visit("kim")), NOW)]
    results = first.apply_batch(batch, [Tracking("kafka:t:0", 0)], before_commit=meanwhile).results

    assert outcomes(raced[0]) == [(ACCEPTED, None)]
    assert outcomes(results) == [ID_CONFLICT]
    assert first.store.position("kafka:t:0") == 0
    assert available(first, "lou") == 100
    assert available(first, "kim") is None
    assert key_rows(database) == 1


def test_keys_accepted_before_the_registry_stay_duplicates(
    database: Database, tmp_path: Path
) -> None:
    """A store from before ADR 0010 gets the table on open; its old interactions are not in
    it, and the account's own receipts still make their redeliveries duplicates."""
    ledger = ledger_for(database, tmp_path)
    assert outcomes(apply(ledger, raw(visit()))) == [(ACCEPTED, None)]
    drop_registry(database)

    upgraded = ledger_for(database, tmp_path)
    assert key_rows(database) == 0
    assert outcomes(apply(upgraded, raw(visit()), first=1)) == [(DUPLICATE, None)]
    assert key_rows(database) == 0
    assert available(upgraded, "kim") == 100


def drop_registry(db: Database) -> None:
    if db.kind == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{db.schema}".interaction_keys')
    else:
        with sqlite3.connect(sqlite_path(db.url)) as conn:
            conn.execute("DROP TABLE interaction_keys")


async def test_the_analyst_role_cannot_read_the_key_registry(
    pg_database: Database, analyst: str, tmp_path: Path
) -> None:
    apply(ledger_for(pg_database, tmp_path), raw(visit()))
    await catch_up(settings_for(pg_database))
    grant(pg_database.schema, analyst)
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(pg_database.schema, analyst, "SELECT count(*) FROM interaction_keys")
