"""The soak's verdict: the drained system against the oracle, check by check.

Each check is a name, a pass/fail and a short detail; the detail never echoes a payload, only
patient pseudonyms (generated ones), origins and counts. The ledger is read through the same
queries an operator uses (``Ledger.balance`` / ``statement``, ``careledger dead-letters``), the
read models through SQL, the DLQ through Kafka.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from aiokafka import ConsumerRecord

from bench.soak_oracle import Expected
from bench.soak_traffic import PROGRAM
from careledger.application.ledger import Ledger
from careledger.application.queries import dead_letters
from careledger.settings import Settings
from projections.snapshot import dump

Records = dict[int, list[ConsumerRecord[bytes, bytes]]]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


_KAFKA_POSITIONS = "SELECT application_name, notification_id FROM notification_tracking"
_PROJECTION = "SELECT 'projection:' || name, position FROM projection_positions"


class PositionSampler:
    """Samples every stored position (Kafka partitions, the projection) about once a second.

    A position that ever moves backwards is a failed check; a sample that fails (the server
    is down) is only counted.
    """

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.samples = 0
        self.unreachable = 0
        self.last: dict[str, int] = {}
        self.backwards: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="positions")

    def __enter__(self) -> PositionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sample()
            except psycopg.Error:
                self.unreachable += 1

    def sample(self) -> dict[str, int]:
        with psycopg.connect(self.url, connect_timeout=3) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            rows = list(
                conn.execute("SELECT application_name, notification_id FROM notification_tracking")
            )
            rows += list(
                conn.execute("SELECT 'projection:' || name, position FROM projection_positions")
            )
        now = {str(name): int(position) for name, position in rows}
        for name, position in now.items():
            if position < self.last.get(name, -1):
                self.backwards.append(f"{name}: {self.last[name]} -> {position}")
        self.last.update(now)
        self.samples += 1
        return now


def check_positions(sampler: PositionSampler, topic: str, ends: dict[int, int]) -> list[Check]:
    final = sampler.sample()
    stored = {p: final.get(f"kafka:{topic}:{p}", -1) for p in ends}
    wanted = {p: end - 1 for p, end in ends.items()}
    return [
        Check(
            "positions_monotonic",
            not sampler.backwards and sampler.samples > 10,
            f"{sampler.samples} samples, {sampler.unreachable} while the database was away"
            + (f"; backwards: {sampler.backwards[:5]}" if sampler.backwards else ""),
        ),
        Check("positions_at_topic_end", stored == wanted, f"stored {stored}, log ends {wanted}"),
    ]


def check_ledger(ledger: Ledger, expected: Expected) -> list[Check]:
    """Balances and statement lines per account; dead letters once per refused origin."""
    wrong_balance, wrong_entries = [], []
    for patient, account in sorted(expected.accounts.items()):
        balance = ledger.balance(PROGRAM, patient)
        available = balance.available if balance else 0
        if available != account.balance:
            wrong_balance.append(f"{patient}: {available} != {account.balance}")
        lines = Counter(line.kind for line in ledger.statement(PROGRAM, patient))
        if lines != +account.entries:
            wrong_entries.append(f"{patient}: {dict(lines)} != {dict(+account.entries)}")
    listed = Counter(
        (row["origin"], row["code"]) for row in dead_letters(ledger.store, limit=10**9)
    )
    want = Counter(expected.refused.items())
    extra, missing = listed - want, want - listed
    return [
        Check(
            "balances_exact",
            not wrong_balance,
            f"{len(expected.accounts)} accounts" + _some(wrong_balance),
        ),
        Check(
            "no_lost_or_doubled_entry",
            not wrong_entries,
            f"{sum(sum(a.entries.values()) for a in expected.accounts.values())} lines"
            + _some(wrong_entries),
        ),
        Check(
            "ledger_dead_letters_once_each",
            not extra and not missing,
            f"{len(want)} refused"
            + _some([f"extra {k}" for k in extra] + [f"missing {k}" for k in missing]),
        ),
    ]


def check_dlq(dlq: Records, expected: Expected) -> list[Check]:
    """Every refused record in the DLQ topic with its reason code. The topic is written before
    the batch commits, so a batch retried after a fault publishes its letters again: each
    (origin, code) must be there, nothing else; repeats are counted, not failed."""
    seen: Counter[tuple[str, str]] = Counter()
    for records in dlq.values():
        for record in records:
            h = {k: v.decode() for k, v in record.headers}
            where = (
                f"kafka:{h['careledger.origin.topic']}:{h['careledger.origin.partition']}:"
                f"{h['careledger.origin.offset']}"
            )
            seen[(where, h["careledger.code"])] += 1
    want = set(expected.refused.items())
    extra, missing = set(seen) - want, want - set(seen)
    repeats = sum(n - 1 for n in seen.values())
    return [
        Check(
            "dlq_every_refused_record_with_its_reason",
            not extra and not missing,
            f"{len(want)} refused, {sum(seen.values())} letters ({repeats} repeats)"
            + _some([f"extra {k}" for k in extra] + [f"missing {k}" for k in missing]),
        )
    ]


def check_read_models(settings: Settings, expected: Expected, rebuild: object) -> list[Check]:
    """The followed read models equal a rebuild's, and their balances equal the oracle's."""
    followed = asyncio.run(dump(settings))
    balances = {row[1]: row[3] for row in followed["balances"] if row[0] == PROGRAM}
    wrong = [
        f"{p}: {balances.get(p)} != {a.balance}"
        for p, a in sorted(expected.accounts.items())
        if balances.get(p, 0) != a.balance
    ]
    started = time.perf_counter()
    assert callable(rebuild)
    rebuild()
    rebuilt = asyncio.run(dump(settings))
    differ = [name for name in followed if followed[name] != rebuilt.get(name)]
    return [
        Check("read_model_balances_exact", not wrong, f"{len(balances)} rows" + _some(wrong)),
        Check(
            "read_models_equal_a_rebuild",
            not differ,
            f"{sum(map(len, followed.values()))} rows in {len(followed)} tables and views, "
            f"rebuilt in {time.perf_counter() - started:.1f}s" + _some(differ),
        ),
    ]


def _some(items: Iterable[str], most: int = 5) -> str:
    items = list(items)
    return f"; {len(items)} wrong, e.g. {items[:most]}" if items else ""


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)
