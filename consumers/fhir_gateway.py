"""The FHIR gateway: ``careledger.fhir.r4`` in, v1 interactions and dead letters out.

How it keeps "nothing lost" (ADR 0012), on aiokafka like the ledger worker (ADR 0006):

* Offsets are committed by hand (auto-commit off), and only after every output of the batch
  (interactions to ``careledger.interactions.v1``, dead letters to ``careledger.fhir.r4.dlq``)
  is acknowledged by the broker with ``acks=all``. A crash before the commit re-reads the
  batch and sends it again: outputs can repeat, never go missing. Repeats are harmless: an
  interaction's CloudEvent id is derived from the resource, so the ledger drops the twin.
* A failed send retries the whole batch with backoff; nothing is committed meanwhile.
* A rebalance waits for the batch in flight (the revoke callback takes the batch lock), so
  its offsets are committed before the partitions move. A commit that fails anyway (the group
  moved on) is logged: the new owner re-reads those records, and re-sends their twins.
* SIGTERM/SIGINT: the batch in flight completes (or is left uncommitted); then it leaves.

The gateway logs counts, types and reasons only: never a resource, a reference or an id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from consumers.fhir_metrics import GatewayMetrics
from producers.fhir import r4
from producers.fhir.mapping import DeadLetter, Mapped, Outcome, Skipped, Translator
from producers.publisher import InteractionPublisher
from schemas.topics import FHIR_DLQ_TOPIC, FHIR_TOPIC, INTERACTIONS_TOPIC

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class _Done:
    """One input record and what it maps to."""

    record: Record
    outcomes: list[Outcome]


class _FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in flight, so its offsets commit before the move."""

    def __init__(self, gateway: FhirGateway) -> None:
        self.gateway = gateway

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self.gateway.batch_lock:
            pass

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class FhirGateway:
    """Consumes FHIR resources in batches and publishes what they map to (docs/fhir.md)."""

    def __init__(
        self,
        translator: Translator,
        *,
        bootstrap: str,
        group_id: str,
        metrics: GatewayMetrics,
        batch_max: int = 500,
        batch_wait_ms: int = 50,
        session_timeout_ms: int = 10_000,
        topic: str = FHIR_TOPIC,
        output_topic: str = INTERACTIONS_TOPIC,
        dlq_topic: str = FHIR_DLQ_TOPIC,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.translator = translator
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.metrics = metrics
        self.batch_max = batch_max
        self.batch_wait_ms = batch_wait_ms
        self.session_timeout_ms = session_timeout_ms
        self.topic = topic
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.batch_lock = asyncio.Lock()
        self.consumed = 0  # input records whose outputs are acknowledged (this process)
        self.published = 0  # interactions acknowledged (this process)
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._publisher: InteractionPublisher | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight then completes or stays open."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 3, 100),
            max_poll_records=self.batch_max,
        )
        dlq = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group_id}-dlq",
            enable_idempotence=False,  # the embedded broker has no InitProducerId
            acks="all",
            linger_ms=5,
        )
        publisher = InteractionPublisher(
            self.bootstrap,
            topic=self.output_topic,
            client_id=f"{self.group_id}-publisher",
            clock=self.clock,
        )
        consumer.subscribe([self.topic], listener=_FinishBatchFirst(self))
        async with publisher:
            await dlq.start()
            self._consumer, self._dlq, self._publisher = consumer, dlq, publisher
            try:
                await consumer.start()
                while not stop.is_set():
                    records = await self._fetch(stop)
                    if records:
                        await self._process_until_done(records, stop)
            finally:
                await consumer.stop()
                await dlq.stop()

    async def _fetch(self, stop: asyncio.Event) -> list[Record]:
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
        return [record for batch in fetched.values() for record in batch]

    async def _process_until_done(self, records: list[Record], stop: asyncio.Event) -> None:
        now = self.clock()
        done = await asyncio.to_thread(self._translate, records, now)
        backoff = 0.2
        while True:
            started = time.perf_counter()
            try:
                async with self.batch_lock:
                    ours = self._still_assigned(done)
                    await self._send(ours)
                    await self._commit(ours)
            except (CommitFailedError, IllegalStateError) as exc:
                # Sent and acknowledged, but the partitions moved: their new owner re-reads
                # them (twins, dropped downstream). Nothing is lost either way.
                log.warning("offsets not committed (%s); the group moved on", type(exc).__name__)
                return
            except Exception as exc:
                self.metrics.retries.labels(error=type(exc).__name__).inc()
                if stop.is_set():
                    log.warning("stopping with an uncommitted batch (%s)", type(exc).__name__)
                    return
                log.warning("batch failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self._count(ours)
            return

    def _translate(self, records: list[Record], now: datetime) -> list[_Done]:
        return [_Done(r, self.translator.translate(r.value, now)) for r in records]

    def _still_assigned(self, done: list[_Done]) -> list[_Done]:
        """Drop records of partitions revoked since the fetch: their new owner has them."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        return [d for d in done if TopicPartition(d.record.topic, d.record.partition) in assigned]

    async def _send(self, done: list[_Done]) -> None:
        """Publish every output of the batch and wait until the broker has acknowledged all."""
        assert self._publisher is not None and self._dlq is not None
        interactions = [o.value for d in done for o in d.outcomes if isinstance(o, Mapped)]
        pending = []
        for d in done:
            for outcome in d.outcomes:
                if isinstance(outcome, DeadLetter):
                    pending.append(await self._dead_letter(d.record, outcome))
        await self._publisher.publish_many(interactions)
        await asyncio.gather(*pending)

    async def _dead_letter(self, record: Record, letter: DeadLetter) -> asyncio.Future[object]:
        assert self._dlq is not None
        headers = [
            *letter.headers(),
            ("careledger.origin.topic", record.topic.encode()),
            ("careledger.origin.partition", str(record.partition).encode()),
            ("careledger.origin.offset", str(record.offset).encode()),
        ]
        future: asyncio.Future[object] = await self._dlq.send(
            self.dlq_topic, letter.value(), key=None, headers=headers
        )
        return future

    async def _commit(self, done: list[_Done]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for d in done:
            tp = TopicPartition(d.record.topic, d.record.partition)
            offsets[tp] = max(offsets.get(tp, 0), d.record.offset + 1)
        if offsets:
            await self._consumer.commit(offsets)

    def _count(self, done: list[_Done]) -> None:
        m = self.metrics
        for d in done:
            for outcome in d.outcomes:
                match outcome:
                    case Mapped(resource_type=kind, event_type=event_type):
                        m.mapped.labels(kind, event_type).inc()
                        self.published += 1
                    case Skipped(resource_type=kind, reason=reason):
                        m.skipped.labels(kind, reason).inc()
                    case DeadLetter(resource_type=kind, reason=reason):
                        m.dead_letters.labels(r4.label(kind) if kind else "none", reason).inc()
        m.messages.inc(len(done))
        self.consumed += len(done)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
