"""``careledger feed``: follows the ledger and publishes its facts to ``careledger.ledger.v1``.

The feed reads the event store's notification log from its own tracking position
(``feed:careledger.ledger.v1`` in the store's tracking table), turns a batch of account events
into messages (``producers.feed_messages``), sends them keyed by patient, waits until the
broker has acknowledged every one (``acks=all``) and only then records the batch's last
position. A crash anywhere re-sends the batch, never skips it: delivery is at least once, and
each message's id is derived from its fact, so consumers drop the repeats. The ledger stays
the only store of truth; nothing is written to the ledger but the position (no dual write).

Synchronous store calls run in a worker thread (ADR 0002). On PostgreSQL the feed wakes on
the ledger's commits (LISTEN), else it polls; while the database or the broker is away it
retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import IntegrityError, Notification, StoredEvent, Tracking
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg.sql import SQL, Identifier

from careledger.adapters.store import LedgerStore, PostgresLedgerRecorder, SQLiteLedgerRecorder
from domain.account import PatientAccount
from domain.program import Program
from producers.feed_messages import FEED_TOPICS, Holder, Outbound, messages_of
from projections.source import CommitWatch, first_set
from schemas.ledger_v1 import CauseV1
from schemas.topics import LEDGER_TOPIC

log = logging.getLogger(__name__)

FEED_POSITION: Final = f"feed:{LEDGER_TOPIC}"
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 30.0  # seconds between retries while a dependency is away
# CloudEvents Kafka binding, structured mode: the whole event is the value, JSON encoded.
_HEADERS: Final = [("content-type", b"application/cloudevents+json; charset=UTF-8")]


@dataclass
class FeedMetrics:
    """What the feed reports; labels are outbound types and error names, never patients."""

    published: Counter
    position: Gauge
    lag: Gauge
    batch_seconds: Histogram
    retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> FeedMetrics:
        return cls(
            published=Counter(
                "careledger_feed_messages",
                "ledger.v1 messages acknowledged by the broker, by type",
                ["type"],
                registry=registry,
            ),
            position=Gauge(
                "careledger_feed_position",
                "Last ledger notification id the feed has published through",
                registry=registry,
            ),
            lag=Gauge(
                "careledger_feed_lag_events",
                "Ledger events recorded after the feed's position",
                registry=registry,
            ),
            batch_seconds=Histogram(
                "careledger_feed_batch_seconds",
                "Time to read, send, get acknowledged and record one batch",
                registry=registry,
            ),
            retries=Counter(
                "careledger_feed_retries",
                "Feed batches retried after a database or broker error",
                ["error"],
                registry=registry,
            ),
        )


class Holders:
    """Account id -> (program, patient), from each account's ``Opened`` event, LRU-bounded.

    The feed sees every ``Opened`` it reads; accounts opened before its position (after a
    restart, or evicted) are loaded with one query per batch.
    """

    def __init__(self, store: LedgerStore, size: int) -> None:
        self.store, self.size = store, size
        self._known: OrderedDict[UUID, Holder] = OrderedDict()

    def get(self, account: UUID) -> Holder | None:
        holder = self._known.get(account)
        if holder is not None:
            self._known.move_to_end(account)
        return holder

    def remember(self, opened: PatientAccount.Opened) -> None:
        self._known[opened.originator_id] = Holder(opened.program_id, opened.patient_id)
        self._known.move_to_end(opened.originator_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def load(self, accounts: set[UUID]) -> None:
        """Remember the holders of ``accounts`` not known yet (one query)."""
        missing = [a for a in accounts if a not in self._known]
        for stored in _first_events(self.store, missing):
            opened = self.store.mapper.to_domain_event(stored)
            if isinstance(opened, PatientAccount.Opened):
                self.remember(opened)


def _first_events(store: LedgerStore, accounts: Sequence[UUID]) -> list[StoredEvent]:
    """The first event (the ``Opened``) of each of ``accounts``, in one query per 500."""
    if not accounts:
        return []
    recorder = store.recorder
    table = str(getattr(recorder, "events_table_name"))  # noqa: B009
    columns = "originator_id, originator_version, topic, state"
    if isinstance(recorder, PostgresLedgerRecorder):
        statement = SQL(
            f"SELECT {columns} FROM {{schema}}.{{table}} "
            "WHERE originator_id = ANY(%s) AND originator_version = 1"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(accounts)])
            rows = curs.fetchall()
        return [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
            for r in rows
        ]
    assert isinstance(recorder, SQLiteLedgerRecorder)
    found: list[StoredEvent] = []
    with recorder.datastore.transaction(commit=False) as c:
        for start in range(0, len(accounts), 500):
            chunk = [a.hex for a in accounts[start : start + 500]]
            c.execute(
                f"SELECT {columns} FROM {table} WHERE originator_version = 1 "
                f"AND originator_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.extend(
                StoredEvent(
                    recorder.convert_originator_id(r["originator_id"]),
                    r["originator_version"],
                    r["topic"],
                    r["state"],
                )
                for r in c.fetchall()
            )
    return found


@dataclass(frozen=True)
class FeedOptions:
    """How the feed paces itself (none of this changes what it publishes)."""

    batch_max: int = 1000  # most ledger events per acknowledged batch
    poll_interval: float = 0.5  # seconds between polls once caught up (SQLite, no LISTEN)
    holders: int = 100_000  # accounts whose (program, patient) is kept in memory


@dataclass(frozen=True)
class _Batch:
    messages: list[Outbound]
    upto: int  # the position to record once every message is acknowledged
    head: int


class LedgerFeed:
    """Publishes every ledger fact after its stored position, at least once, in ledger order."""

    def __init__(
        self,
        store: LedgerStore,
        programs: dict[str, Program],
        *,
        bootstrap: str,
        metrics: FeedMetrics,
        options: FeedOptions = FeedOptions(),
        topic: str = LEDGER_TOPIC,
        name: str = FEED_POSITION,
    ) -> None:
        self.store, self.programs, self.bootstrap = store, programs, bootstrap
        self.metrics, self.options, self.topic, self.name = metrics, options, topic, name
        self.holders = Holders(store, options.holders)
        self.position = 0
        self.published = 0  # messages acknowledged by this process
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> LedgerFeed:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="careledger-feed",
            enable_idempotence=False,  # the embedded broker has no InitProducerId
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        self._producer = producer
        self.position = await self._stored_position()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # ----------------------------------------------------------------- running
    async def catch_up(self) -> int:
        """Publish until the ledger's head; returns the ledger events read."""
        total = 0
        while read := await self.step():
            total += read
        return total

    async def follow(self, stop: asyncio.Event, watch: CommitWatch | None = None) -> None:
        """Keep publishing until ``stop`` is set (the batch in flight completes or is
        re-sent next time). Woken by ``watch`` (the ledger's commits) where there is one."""
        backoff = FIRST_BACKOFF
        while not stop.is_set():
            if watch is not None:
                watch.committed.clear()
            try:
                await self.catch_up()
            except Exception as exc:
                self.metrics.retries.labels(type(exc).__name__).inc()
                log.warning("feed batch failed (%s); retrying", type(exc).__name__)
                await first_set(stop, timeout=backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = FIRST_BACKOFF
            if watch is not None:
                await watch.listen()  # (again, after an outage)
                await first_set(stop, watch.committed, timeout=self.options.poll_interval)
            else:
                await first_set(stop, timeout=self.options.poll_interval)

    async def step(self) -> int:
        """Publish one batch and record its position; returns the ledger events it covered
        (0: nothing new). Raises if a send or the position's commit failed (nothing recorded:
        the batch is re-sent next time)."""
        started = time.perf_counter()
        batch = await asyncio.to_thread(self._read, self.position)
        if batch is None:
            return 0
        await self._send(batch.messages)
        try:
            await asyncio.to_thread(self.store.record, [], [Tracking(self.name, batch.upto)])
        except IntegrityError:
            # Another feed recorded this far first (it sent these messages too).
            log.warning("the feed's position moved under it; reading it again")
            self.position = await self._stored_position()
            return 1
        covered, self.position = batch.upto - self.position, batch.upto
        for message in batch.messages:
            self.metrics.published.labels(message.event_type).inc()
        self.published += len(batch.messages)
        self.metrics.position.set(self.position)
        self.metrics.lag.set(max(batch.head - self.position, 0))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return covered

    async def _stored_position(self) -> int:
        stored = await asyncio.to_thread(self.store.position, self.name)
        return stored or 0

    # ----------------------------------------------------------------- batches
    def _read(self, position: int) -> _Batch | None:
        """The messages of the events after ``position`` (at most ``batch_max`` of them)."""
        recorder: Any = self.store.recorder
        head = recorder.max_notification_id() or 0
        if head <= position:
            self.metrics.lag.set(0)
            return None
        limit = self.options.batch_max
        notifications: Sequence[Notification] = recorder.select_notifications(
            position + 1, limit, stop=head, topics=FEED_TOPICS
        )
        # A position past events the feed ignores is recorded too, so they are not read again.
        upto = notifications[-1].id if len(notifications) == limit else head
        events = [self.store.mapper.to_domain_event(n) for n in notifications]
        for event in events:
            if isinstance(event, PatientAccount.Opened):
                self.holders.remember(event)
        self.holders.load({e.originator_id for e in events})
        causes = _Causes(self.store, events)
        messages: list[Outbound] = []
        for event in events:
            holder = self.holders.get(event.originator_id)
            if holder is None:  # pragma: no cover - every account event follows its Opened
                raise LookupError("an account event without an Opened event")
            messages.extend(messages_of(event, holder, self.programs, causes.before))
        return _Batch(messages, upto, head)

    async def _send(self, messages: list[Outbound]) -> None:
        """Send every message and wait until the broker acknowledged all of them."""
        producer = self._producer
        assert producer is not None, "use the feed as an async context manager"
        if not messages:
            return
        sends = [
            await producer.send(self.topic, m.value, key=m.key, headers=_HEADERS) for m in messages
        ]
        await asyncio.gather(*sends)


class _Causes:
    """The interaction right before an event of the same account (what a tier upgrade
    follows): from the batch when it is there, else from the store."""

    def __init__(self, store: LedgerStore, events: list[Any]) -> None:
        self.store = store
        self.accepted = {
            (e.originator_id, e.originator_version): CauseV1(source=e.source, id=e.source_id)
            for e in events
            if isinstance(e, PatientAccount.Accepted)
        }

    def before(self, event: Any) -> CauseV1 | None:
        key = (event.originator_id, event.originator_version - 1)
        if key in self.accepted:
            return self.accepted[key]
        previous = self.store.recorder.select_events(event.originator_id, gt=key[1] - 1, lte=key[1])
        for stored in previous:
            earlier = self.store.mapper.to_domain_event(stored)
            if isinstance(earlier, PatientAccount.Accepted):
                return CauseV1(source=earlier.source, id=earlier.source_id)
        return None
