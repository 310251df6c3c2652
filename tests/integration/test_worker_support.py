"""Shared helpers for the worker reliability tests (no tests here; the name keeps it in scope).

* :class:`PausableProxy`: a TCP forwarder to PostgreSQL that can be "taken down" (every
  connection cut, new ones refused) and brought back on the same port, so a worker loses its
  database while the shared server keeps serving everybody else.
* :class:`WorkerProcess`: ``python -m careledger.cli worker`` as a child process whose log goes
  to a file the test can read (assignments, warnings) while it runs.
* Scenario data (good interactions, every kind of poison, redeliveries), producing with the
  partition and offset of every record kept, and the "one clean pass" oracle: the same records
  through ``Ledger.apply_batch`` into a SQLite file.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from careledger.adapters.store import LedgerStore
from careledger.application.ledger import REJECTED, Batch, Inbound, Ledger
from careledger.bootstrap import build_ledger
from careledger.settings import Settings
from schemas.topics import INTERACTIONS_DLQ_TOPIC, INTERACTIONS_TOPIC
from tests.conftest import Database
from tests.events import cloudevent
from tests.kafka_support import end_offsets

PROGRAM = "clinic-default"
CLEAN_NOW = datetime(2026, 12, 1, tzinfo=UTC)

Value = bytes | None


@dataclass(frozen=True)
class Record:
    """One record as upstream publishes it: the patient key and the raw value."""

    key: str
    value: Value


@dataclass(frozen=True)
class Placed:
    """A published record and where the broker put it."""

    record: Record
    partition: int
    offset: int


# ------------------------------------------------------------------------------ scenario data
def good(patient: str, n: int) -> Record:
    """A valid interaction (visits and step readings, as in the crash test)."""
    day = 1 + (n * 7 + sum(map(ord, patient))) % 28
    month = 1 + n % 6
    if n % 3:
        body = cloudevent(
            "visit.completed",
            patient,
            f"2026-{month:02d}-{day:02d}T10:00:00Z",
            {"visit_id": f"v{n}", "visit_type": "telehealth"},
            id=f"{patient}-{n}",
        )
    else:
        body = cloudevent(
            "activity.reading",
            patient,
            f"2026-{month:02d}-{day:02d}T22:00:00Z",
            {"metric": "steps", "day": f"2026-{month:02d}-{day:02d}", "value": 4000 + 700 * n},
            id=f"{patient}-{n}",
        )
    return Record(patient, json.dumps(body).encode())


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def poison(patient: str, n: int) -> list[tuple[Record, str]]:
    """Every way a record can be refused, each with the code it must be dead-lettered with."""
    visit = cloudevent(
        "visit.completed",
        patient,
        "2026-03-01T10:00:00Z",
        {"visit_id": f"pv{n}", "visit_type": "telehealth"},
        id=f"{patient}-poison-{n}",
    )
    cases: list[tuple[Value, str]] = [
        (b"{not json", "not_json"),
        (b"\xff\xfe\xfa", "bad_encoding"),
        (b"[1, 2, 3]", "not_object"),
        (b'{"id": "a", "id": "b"}', "duplicate_key"),
        (_json({**visit, "specversion": "0.3"}), "unsupported_specversion"),
        (_json({**visit, "type": "visit.cancelled"}), "unknown_type"),
        (
            _json(
                cloudevent(
                    "review.submitted",
                    patient,
                    "2026-03-01T00:00:00Z",
                    {"rating": 9},
                    id=f"{patient}-bad-review-{n}",
                )
            ),
            "invalid_field",
        ),
        (_json({**visit, "time": "2031-01-01T00:00:00Z"}), "time_in_future"),
        (_json({**visit, "programid": "no-such-program"}), "unknown_program"),
        (
            _json(
                cloudevent(
                    "redemption.cancelled",
                    patient,
                    "2026-03-02T00:00:00Z",
                    {"redemption_id": f"never-{n}"},
                    id=f"{patient}-cancel-{n}",
                )
            ),
            "unknown_redemption",
        ),
        (b"", "not_json"),
        (None, "not_json"),  # a tombstone
        (b"x" * 70_000, "too_large"),
    ]
    return [(Record(patient, value), code) for value, code in cases]


def interactions(
    patients: Sequence[str],
    rounds: int,
    *,
    poison_every: int = 0,
    redeliver_every: int = 0,
) -> list[Record]:
    """Good interactions, round by round; optionally a poison record or a redelivery of an
    earlier good record (same key, same bytes) after every ``poison_every``/``redeliver_every``
    good ones. Deterministic, so every run publishes the same bytes."""
    out: list[Record] = []
    goods: list[Record] = []
    poisons = [case for i, p in enumerate(patients) for case, _ in poison(p, i)]
    for n in range(rounds):
        for patient in patients:
            record = good(patient, n)
            out.append(record)
            goods.append(record)
            if poison_every and len(goods) % poison_every == 0:
                out.append(poisons[(len(goods) // poison_every) % len(poisons)])
            if redeliver_every and len(goods) % redeliver_every == 0:
                out.append(goods[(len(goods) * 7919) % len(goods)])
    return out


# ------------------------------------------------------------------------------------ oracle
@dataclass(frozen=True)
class CleanPass:
    """The records applied once, in order, through the same ledger code, into SQLite."""

    ledger: Ledger
    batch: Batch

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.batch.results if r.outcome == outcome)

    def codes(self) -> list[str]:
        return [r.code or "" for r in self.batch.results if r.outcome == REJECTED]

    def refused(self, placed: Sequence[Placed]) -> set[str]:
        """Where the records this pass refused were placed (``placed`` in record order)."""
        return {
            origin(INTERACTIONS_TOPIC, placed[i])
            for i, result in enumerate(self.batch.results)
            if result.outcome == REJECTED
        }


def clean_pass(records: Iterable[Record], path: Path) -> CleanPass:
    ledger = build_ledger(Settings(database_url=f"sqlite:///{path}"))
    inputs = [Inbound(f"clean:{i}", r.value or b"", CLEAN_NOW) for i, r in enumerate(records)]
    return CleanPass(ledger, ledger.apply_batch(inputs))


def accepted_in(ledger: Ledger, patients: Iterable[str]) -> int:
    """Interactions the ledger accepted (each leaves one receipt; a duplicate leaves none)."""
    total = 0
    for patient in patients:
        account = ledger.load_account(PROGRAM, patient)
        total += len(account.receipts) if account else 0
    return total


def assert_same_balances(actual: Ledger, clean: Ledger, patients: Iterable[str]) -> None:
    for patient in patients:
        assert actual.balance(PROGRAM, patient) == clean.balance(PROGRAM, patient), patient


def ledger_at(db: Database, url: str | None = None) -> Ledger:
    return build_ledger(Settings(database_url=url or db.url, database_schema=db.schema))


def stored_positions(store: LedgerStore, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's stored position (-1 when none is stored yet)."""
    out = {}
    for p in range(partitions):
        position = store.position(f"kafka:{topic}:{p}")
        out[p] = -1 if position is None else position
    return out


def committed_count(store: LedgerStore, topic: str, partitions: int) -> int:
    return sum(p + 1 for p in stored_positions(store, topic, partitions).values())


def dead_letter_origins(store: LedgerStore) -> Counter[str]:
    """``careledger dead-letters`` as data: how often each origin was recorded."""
    from careledger.application.queries import dead_letters

    return Counter(row["origin"] for row in dead_letters(store, limit=10**9))


# ------------------------------------------------------------------------------------- kafka
async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    partition_of: Callable[[Record], int] | None = None,
) -> list[Placed]:
    """Publish in order with one producer; return where each record landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="careledger-tests",
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic,
                r.value,
                key=r.key.encode(),
                partition=partition_of(r) if partition_of else None,
            )
            for r in records
        ]
        metadata = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return [Placed(r, m.partition, m.offset) for r, m in zip(records, metadata, strict=True)]


def on_partition(partition: int) -> Callable[[Record], int]:
    """``partition_of`` for :func:`produce` that sends every record to one partition."""
    return lambda _: partition


async def read_topic(
    bootstrap: str, topic: str, at_least: int, *, settle_s: float = 1.0, timeout_s: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``: at least ``at_least``, plus whatever arrives in ``settle_s``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < at_least:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
            settle_until = time.monotonic() + settle_s
            while time.monotonic() < settle_until:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def dlq_origins(dead: Iterable[ConsumerRecord[bytes, bytes]]) -> Counter[str]:
    """The ledger-style origin each dead letter names, counted."""
    out: Counter[str] = Counter()
    for record in dead:
        h = headers_of(record)
        out[
            f"kafka:{h['careledger.origin.topic']}:{h['careledger.origin.partition']}:"
            f"{h['careledger.origin.offset']}"
        ] += 1
    return out


def origin(topic: str, placed: Placed) -> str:
    return f"kafka:{topic}:{placed.partition}:{placed.offset}"


# --------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(db: Database, bootstrap: str, *, batch_max: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **db.env(),
        "CARELEDGER_KAFKA_BOOTSTRAP": bootstrap,
        "CARELEDGER_METRICS_PORT": "0",
        "CARELEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "CARELEDGER_BATCH_MAX": str(batch_max),
        "CARELEDGER_BATCH_WAIT_MS": "20",
        **extra,
    }


class WorkerProcess:
    """``careledger worker`` as a child process, its log in a file the test reads."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "careledger.cli", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} log ---\n{self.log()[-chars:]}"

    def assignments(self) -> list[list[tuple[int, int]]]:
        """Every ``assigned [(partition, position), ...]`` the worker logged, in order."""
        out = []
        for line in self.log().splitlines():
            _, found, rest = line.partition(" consumers.worker assigned ")
            if found:
                out.append(ast.literal_eval(rest.strip()))
        return out

    def partitions(self) -> set[int]:
        """The partitions of the latest assignment (empty before the first)."""
        latest = self.assignments()
        return {p for p, _ in latest[-1]} if latest else set()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        """Never leave the process behind (kill it if it is still there)."""
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    diagnose: Callable[[], str] = str,
) -> None:
    """Poll ``predicate``; on time-out fail with ``what`` and whatever ``diagnose`` says."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnose()}")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text page as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ------------------------------------------------------------------------------------- proxy
class PausableProxy:
    """A TCP forwarder from ``127.0.0.1:port`` to PostgreSQL that can be taken down.

    :meth:`pause` cuts every forwarded connection; until :meth:`resume`, each new connection is
    accepted and closed at once (the client sees the server hang up, as when it is down or
    restarting) and its time is kept in :attr:`refused`, so a test can see how often a client
    retries. The shared server itself is never touched.
    """

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._upstream_url = upstream_url
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._paused = False
        self.refused: list[float] = []
        self.port = 0

    def __enter__(self) -> PausableProxy:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()

    @property
    def url(self) -> str:
        """The database URL with the proxy in place of the server."""
        parts = urlsplit(self._upstream_url)
        user = parts.username or ""
        if parts.password:
            user += f":{parts.password}"
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def pause(self) -> None:
        """Cut every open connection and refuse new ones."""
        with self._lock:
            self._paused = True
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps, which close them

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                paused = self._paused
            if paused:
                self.refused.append(time.monotonic())
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(src)
            src.close()


def wait_all_committed(
    worker: WorkerProcess,
    store: LedgerStore,
    partitions: int,
    count: int,
    what: str = "every record to be committed",
) -> None:
    """Wait until the positions stored for the interactions topic cover ``count`` records."""
    wait_for(
        lambda: committed_count(store, INTERACTIONS_TOPIC, partitions) == count,
        40,
        what,
        diagnose=worker.tail,
    )


def stop_and_collect(
    worker: WorkerProcess, bootstrap: str, dead_letters: int
) -> tuple[dict[int, int], list[ConsumerRecord[bytes, bytes]]]:
    """Stop ``worker`` cleanly; the interactions topic's end offsets and the first
    ``dead_letters`` records of the dead-letter topic."""
    assert worker.stop() == 0, worker.tail()
    ends = asyncio.run(end_offsets(bootstrap, INTERACTIONS_TOPIC))
    dead = asyncio.run(read_topic(bootstrap, INTERACTIONS_DLQ_TOPIC, dead_letters))
    return ends, dead


def assert_as_one_clean_pass(
    ledger: Ledger,
    clean: CleanPass,
    patients: Iterable[str],
    partitions: int,
    ends: dict[int, int],
    refused: Iterable[str],
    dead: Iterable[ConsumerRecord[bytes, bytes]],
) -> None:
    """Positions end at the topic's ends (nothing skipped, nothing beyond); balances and
    accepted counts equal one clean pass; each refused record is one dead letter in the
    ledger and in the DLQ (where a retried batch may repeat one: at least once)."""
    patients, refused = list(patients), set(refused)
    positions = stored_positions(ledger.store, INTERACTIONS_TOPIC, partitions)
    assert positions == {p: end - 1 for p, end in ends.items()}
    assert_same_balances(ledger, clean.ledger, patients)
    assert accepted_in(ledger, patients) == clean.count("accepted")
    assert dead_letter_origins(ledger.store) == dict.fromkeys(refused, 1)
    assert set(dlq_origins(dead)) == refused
