"""The ledger worker: Kafka in, exactly-once ledger effects out.

How it keeps "nothing lost, nothing counted twice" (ADR 0004):

* Positions live in the database. Each batch's ledger events, its dead letters and the
  position of every partition in it commit in ONE transaction. On every assignment (start and
  rebalance) each partition is sought to its stored position + 1; records at or below the
  stored position are skipped. Kafka's own committed offsets are never used.
* A batch is decided in a worker thread (the event store is synchronous, ADR 0002) while the
  event loop keeps the consumer alive. Refused records are sent to the dead-letter topic
  *before* the transaction commits, so a crash may repeat a dead letter but never lose one.
* Database or broker trouble: the same batch is retried with backoff; nothing partial is ever
  committed. Each attempt keeps only the records still ours and above the stored positions (a
  rebalance may have run during the backoff). A batch whose positions another consumer already
  committed is dropped whole and the partitions are sought again (``PositionConflict``).
* A partition whose log ends below its stored position (the topic was recreated, e.g. an
  in-memory broker restarted, or truncated) cannot be applied without positions moving back,
  which ADR 0004 forbids, and skipping up to the stored position would silently drop new
  records. Such a partition is *fenced*: paused, logged as an error and exported as a negative
  lag, until an operator resolves it and restarts the worker.
* SIGTERM/SIGINT: the in-flight batch completes (or fails whole); then the worker leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from eventsourcing.persistence import Tracking

from careledger.application.ledger import REJECTED, Batch, Inbound, Ledger, PositionConflict, Result
from consumers.metrics import WorkerMetrics
from consumers.schedule import MaintenanceSchedule
from schemas.topics import INTERACTIONS_DLQ_TOPIC, INTERACTIONS_TOPIC

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_BACKOFF_SECONDS = 30.0
RELAY_EVERY_SECONDS = 5.0
# How long a partition's high watermark may stay below its stored position before the
# partition is fenced: long enough to ride out a new leader's high watermark catching up after
# a leader change on replicated Kafka, short enough that an operator hears of it promptly.
LOG_BEHIND_GRACE_SECONDS = 10.0


def position_name(topic: str, partition: int) -> str:
    """The name a partition's position is stored under (shared by every consumer group)."""
    return f"kafka:{topic}:{partition}"


def origin_of(record: ConsumerRecord[bytes, bytes]) -> str:
    return f"kafka:{record.topic}:{record.partition}:{record.offset}"


class _SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Moves every newly assigned partition to the ledger's own position for it."""

    def __init__(self, worker: LedgerWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.worker.batch_lock:  # let an in-flight batch finish first
            for tp in revoked:
                self.worker.positions.pop(tp, None)
                self.worker._behind_since.pop(tp, None)
                self.worker.forget_partition_metrics(tp)
            # whoever gets them may write their accounts (off the loop: a relay may hold the lock)
            await asyncio.to_thread(self.worker.ledger.forget_accounts)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # aiokafka only logs a listener's exception: an unsought partition would then be
        # skipped, so keep trying until the database answers, or the worker is stopping
        # (the partitions then have no position: none of their records is applied).
        delay, stop = 0.2, self.worker.stopping
        while not stop.is_set():
            try:
                # (one read of a position may wait out the store's connect timeout)
                await _unless_stopped(self.worker.seek_to_stored(assigned), stop)
                return
            except Exception as exc:
                log.warning("cannot read stored positions (%s); retrying", type(exc).__name__)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)


class LedgerWorker:
    """Consumes the interactions topic in batches and applies them to the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        bootstrap: str,
        group_id: str,
        metrics: WorkerMetrics,
        schedule: MaintenanceSchedule | None = None,
        batch_max: int = 2000,
        batch_wait_ms: int = 50,
        session_timeout_ms: int = 10_000,
        topic: str = INTERACTIONS_TOPIC,
        dlq_topic: str = INTERACTIONS_DLQ_TOPIC,
        clock: Clock = lambda: datetime.now(UTC),
        log_behind_grace_s: float = LOG_BEHIND_GRACE_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.metrics = metrics
        self.schedule = schedule
        self.batch_max = batch_max
        self.batch_wait_ms = batch_wait_ms
        self.session_timeout_ms = session_timeout_ms
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.log_behind_grace_s = log_behind_grace_s
        self.positions: dict[TopicPartition, int] = {}
        self.fenced: dict[TopicPartition, int] = {}  # -> its (negative) lag; for this process
        self._behind_since: dict[TopicPartition, float] = {}
        self.batch_lock = asyncio.Lock()
        self.stopping = asyncio.Event()  # the ``stop`` given to :meth:`run`
        self.committed_batches = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- running
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight then completes or fails whole."""
        self._loop, self.stopping = asyncio.get_running_loop(), stop
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-worker",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 3, 100),
            max_poll_records=self.batch_max,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group_id}-dlq",
            enable_idempotence=False,  # the embedded broker has no InitProducerId
            acks="all",
            linger_ms=5,
        )
        self._consumer, self._producer = consumer, producer
        consumer.subscribe([self.topic], listener=_SeekToStoredPositions(self))
        await producer.start()
        await consumer.start()
        background = asyncio.create_task(self._background(stop))
        try:
            while not stop.is_set():
                records = await self._fetch(stop)
                if records:
                    await self._apply_until_done(records, stop)
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await consumer.stop()
            await producer.stop()

    async def _fetch(self, stop: asyncio.Event) -> list[ConsumerRecord[bytes, bytes]]:
        assert self._consumer is not None
        try:
            fetched = await self._consumer.getmany(
                timeout_ms=self.batch_wait_ms, max_records=self.batch_max
            )
        except Exception as exc:  # broker trouble: back off, the consumer reconnects
            log.warning("fetch failed (%s); retrying", type(exc).__name__)
            self.metrics.retries.labels(error=type(exc).__name__).inc()
            await _sleep_or_stop(stop, 1.0)
            return []
        self._fence_partitions_behind(fetched)
        return self._still_ours([r for batch in fetched.values() for r in batch])

    def _still_ours(
        self, records: list[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """The records on partitions we hold, above their stored positions."""
        out = []
        for r in records:
            known = self.positions.get(TopicPartition(r.topic, r.partition))
            if known is not None and r.offset > known:  # None: not (or no longer) ours
                out.append(r)
        return out

    def _fence_partitions_behind(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Fence partitions whose log no longer reaches their stored position.

        A record at or below the stored position can only come from the consumer resetting an
        out-of-range position (we never seek below it): the log was truncated or recreated.
        A high watermark at or below it means the same unless a new leader's high watermark is
        still catching up, so that must last ``log_behind_grace_s`` first. (Tansu answers a
        fetch beyond its log end with no records and its true high watermark, not an error.)
        """
        assert self._consumer is not None
        now = time.monotonic()
        assigned = self._consumer.assignment()
        for tp, known in list(self.positions.items()):
            if tp not in assigned:  # revoked while its position was read: nothing to judge
                continue
            end = self._consumer.highwater(tp)
            if any(r.offset <= known for r in fetched.get(tp, ())):
                self._fence(tp, known, end)
            elif end is not None and end <= known:
                since = self._behind_since.setdefault(tp, now)
                if now - since >= self.log_behind_grace_s:
                    self._fence(tp, known, end)
            else:
                self._behind_since.pop(tp, None)

    def _fence(self, tp: TopicPartition, known: int, end: int | None) -> None:
        assert self._consumer is not None
        self.fenced[tp] = (end if end is not None else 0) - known - 1
        self.positions.pop(tp, None)
        self._behind_since.pop(tp, None)
        self._consumer.pause(tp)
        self.metrics.lag.labels(tp.topic, str(tp.partition)).set(self.fenced[tp])
        log.error(
            "partition %d of %s ends at offset %s, below the stored position %d: the topic was "
            "recreated or truncated. Its records are NOT applied (that would move the position "
            "back or skip new records); the partition stays paused until an operator resolves "
            "it and restarts the worker (ADR 0004).",
            tp.partition,
            tp.topic,
            end,
            known,
        )

    async def _apply_until_done(
        self, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> None:
        backoff = 0.2
        while True:
            try:
                async with self.batch_lock:
                    await self._apply(records)
                return
            except PositionConflict:
                self.metrics.conflicts.inc()
                log.warning("another consumer committed these records first; seeking again")
                await self.seek_to_stored(list(self.positions))
                return
            except Exception as exc:
                self.metrics.retries.labels(error=type(exc).__name__).inc()
                if stop.is_set():
                    log.warning("stopping with an uncommitted batch (%s)", type(exc).__name__)
                    return
                log.warning("batch failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _apply(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        # A retry may come after a rebalance: drop what moved to another worker or was
        # committed meanwhile, or those records would be applied (and dead-lettered) twice.
        records = self._still_ours(records)
        if not records:
            return
        received_at = self.clock()
        inputs = [Inbound(origin_of(r), r.value or b"", received_at) for r in records]
        by_origin = {origin_of(r): r for r in records}
        last: dict[TopicPartition, int] = {}
        for r in records:
            last[TopicPartition(r.topic, r.partition)] = r.offset
        positions = [Tracking(position_name(tp.topic, tp.partition), o) for tp, o in last.items()]

        def send_dead_letters(results: list[Result]) -> None:
            refused = [(by_origin[r.origin], r) for r in results if r.outcome == REJECTED]
            if refused:
                assert self._loop is not None
                future = asyncio.run_coroutine_threadsafe(self._dead_letter(refused), self._loop)
                future.result()

        started = time.perf_counter()
        batch = await asyncio.to_thread(
            self.ledger.apply_batch, inputs, positions, send_dead_letters
        )
        committed = time.time()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(records))
        self._record(batch, records, committed)
        for tp, offset in last.items():
            if tp in self.positions:
                self.positions[tp] = offset
            self.metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(offset)
        self.committed_batches += 1

    async def _dead_letter(
        self, refused: list[tuple[ConsumerRecord[bytes, bytes], Result]]
    ) -> None:
        assert self._producer is not None
        sends = []
        for record, result in refused:
            headers = [
                *list(record.headers or ()),
                ("careledger.code", (result.code or "").encode()),
                ("careledger.reason", f"{result.code}: {result.reason}".encode()),
                ("careledger.origin.topic", record.topic.encode()),
                ("careledger.origin.partition", str(record.partition).encode()),
                ("careledger.origin.offset", str(record.offset).encode()),
            ]
            sends.append(
                await self._producer.send(
                    self.dlq_topic, record.value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*sends)

    def _record(
        self, batch: Batch, records: list[ConsumerRecord[bytes, bytes]], committed: float
    ) -> None:
        m = self.metrics
        outcomes: Counter[tuple[str, str, str]] = Counter()
        newest: datetime | None = None
        for result in batch.results:
            outcomes[(result.outcome, result.event_type or "invalid", result.code or "")] += 1
            if result.occurred_at is not None and result.outcome != REJECTED:
                newest = result.occurred_at if newest is None else max(newest, result.occurred_at)
        for labels, count in outcomes.items():
            m.messages.labels(*labels).inc(count)
        if newest is not None:  # how fresh the ledger is: the batch's newest event
            m.event_time_latency.observe(max(0.0, committed - newest.timestamp()))
        observe = m.kafka_latency.observe
        for record in records:
            observe(max(0.0, committed - record.timestamp / 1000))
        kinds: Counter[str] = Counter()
        points: Counter[str] = Counter()
        for entry in batch.entries:
            kinds[entry.kind] += 1
            points[entry.kind] += abs(entry.points)
        for kind, count in kinds.items():
            m.entries.labels(kind).inc(count)
            m.points.labels(kind).inc(points[kind])
        if self._consumer is not None:
            for tp, position in self.positions.items():
                end = self._consumer.highwater(tp)
                if end is not None:
                    m.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position - 1))

    def forget_partition_metrics(self, tp: TopicPartition) -> None:
        """Drop a revoked partition's gauges: another worker reports it now."""
        for gauge in (self.metrics.lag, self.metrics.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(tp.topic, str(tp.partition))

    # --------------------------------------------------------------- positions
    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        """Seek each partition to the ledger's stored position + 1 (the start if none)."""
        assert self._consumer is not None
        for tp in partitions:
            if tp in self.fenced:
                self._consumer.pause(tp)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(self.fenced[tp])
                log.error("partition %d of %s stays fenced (see above)", tp.partition, tp.topic)
                continue
            stored = await asyncio.to_thread(
                self.ledger.store.position, position_name(tp.topic, tp.partition)
            )
            if tp not in self._consumer.assignment():  # revoked while its position was read
                self.positions.pop(tp, None)
                continue
            self.positions[tp] = -1 if stored is None else stored
            if stored is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored + 1)
        log.info("assigned %s", sorted((tp.partition, self.positions.get(tp)) for tp in partitions))

    # -------------------------------------------------------------- background
    async def _background(self, stop: asyncio.Event) -> None:
        """The referral relay and the close-of-day maintenance, between batches.

        The relay holds the ledger's lock while it writes, so it runs every few seconds
        rather than every second: each step then carries more referrals in one transaction
        and the batch writer waits less (a referral bonus is paid seconds later, not sooner).
        """
        last_relay = -RELAY_EVERY_SECONDS
        while not stop.is_set():
            try:
                if time.monotonic() - last_relay >= RELAY_EVERY_SECONDS:
                    last_relay = time.monotonic()
                    await asyncio.to_thread(self.ledger.relay_until_idle)
                if self.schedule is not None:
                    await asyncio.to_thread(self.schedule.run_due, self.ledger, self.clock())
            except Exception as exc:
                log.warning("background step failed (%s); retrying", type(exc).__name__)
            await _sleep_or_stop(stop, 1.0)


async def _unless_stopped(step: Awaitable[None], stop: asyncio.Event) -> None:
    """Await ``step``, cancelling it if ``stop`` is set first."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT ask the worker to stop after the batch in flight."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
