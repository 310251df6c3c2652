"""Publish v1 interactions to Kafka: validated first, keyed by patient, retried, pipelined.

Upstream teams use :class:`InteractionPublisher` instead of a bare Kafka producer so that an
event the ledger would dead-letter is refused at the source, where its author can fix it, and
so that every record is keyed by patient (the ledger's per-patient order depends on it).

Delivery is at least once: a send whose outcome is unknown (a timeout) is sent again, and the
ledger drops the twin by its CloudEvents (source, id). Records of one patient keep their order
unless a retry happens, in which case the retried records land after ones already delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from schemas.codes import Code
from schemas.topics import INTERACTIONS_TOPIC
from schemas.validation import InvalidInteraction, parse_interaction

__all__ = [
    "InteractionPublisher",
    "PublishError",
    "PublishFailed",
    "PublishRejected",
    "RawRecord",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

RawRecord = tuple[str | None, bytes]
"""A Kafka record as the publisher sends it: (key, value)."""

Event = Mapping[str, Any] | bytes

# CloudEvents Kafka binding, structured mode: the whole event is the value, JSON encoded.
_HEADERS: Final = [("content-type", b"application/cloudevents+json; charset=UTF-8")]
_DEFAULT_WINDOW: Final = 2000


class PublishError(Exception):
    """Root of the errors a publisher raises; catch this to handle every publishing failure."""


class PublishRejected(PublishError):
    """Raised when an event breaks the v1 contract; it was not sent, and must be fixed.

    ``code`` is one of ``schemas.codes.CODES``; ``reason`` names the field and the rule but
    never the value. ``index`` is the event's position when it came from ``publish_many``.
    """

    def __init__(self, code: Code, reason: str, *, index: int | None = None) -> None:
        where = "" if index is None else f" (event #{index})"
        super().__init__(f"event rejected{where}: {code}: {reason}")
        self.code: Code = code
        self.reason = reason
        self.index = index


class PublishFailed(PublishError):
    """Raised when the broker did not take a record: a permanent error, or retries ran out."""

    def __init__(self, reason: str, *, attempts: int) -> None:
        super().__init__(f"{reason} (after {attempts} attempt{'s' if attempts > 1 else ''})")
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transiently failed send is tried again.

    The delay doubles from ``first_delay`` up to ``max_delay``; each is jittered down by up to
    half so that many publishers recovering from one broker outage do not retry in lockstep.
    """

    attempts: int = 5
    first_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError("need attempts >= 1 and 0 <= first_delay <= max_delay")

    def delay(self, failed_attempts: int, jitter: float) -> float:
        """Seconds to wait after ``failed_attempts`` failures; ``jitter`` is in [0, 1)."""
        full = min(self.max_delay, self.first_delay * 2.0 ** (failed_attempts - 1))
        return full * (1 - jitter / 2)


class Producer(Protocol):
    """The part of ``AIOKafkaProducer`` the publisher uses (a fake can stand in for tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]: ...


def is_transient(error: BaseException) -> bool:
    """Whether trying again may help: aiokafka's retriable errors and expired sends."""
    return isinstance(error, KafkaTimeoutError) or bool(getattr(error, "retriable", False))


class InteractionPublisher:
    """One Kafka producer for the life of the ``async with`` block; reuse it for every event.

    ``clock`` is the ingest clock used to refuse events too far in the future; pass a fixed
    one in tests. ``window`` bounds how many sends are in flight before the publisher waits.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = INTERACTIONS_TOPIC,
        client_id: str = "careledger-publisher",
        retry: RetryPolicy | None = None,
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
        window: int = _DEFAULT_WINDOW,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        if not bootstrap and producer_factory is None:
            raise ValueError("bootstrap servers are required (host:port[,host:port...])")
        self._topic = topic
        self._retry = retry or RetryPolicy()
        self._window = max(1, window)
        self._clock = clock
        self._jitter = random.Random()
        self._factory = producer_factory or (
            lambda: _kafka_producer(bootstrap, client_id, linger_ms, request_timeout_ms)
        )
        self._bootstrap = bootstrap
        self._producer: Producer | None = None

    async def __aenter__(self) -> Self:
        producer = self._factory()
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishFailed(
                f"could not connect to Kafka at {self._bootstrap}: {type(exc).__name__}",
                attempts=1,
            ) from exc
        self._producer = producer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    async def publish(self, event: Event) -> None:
        """Validate one event, then send it keyed by its subject and wait until it is stored."""
        await self._deliver([self._checked(event, self._clock())])

    async def publish_many(self, events: Iterable[Event]) -> int:
        """Validate every event, then send them all pipelined; returns how many were sent.

        All or nothing at validation: if any event is invalid, PublishRejected names its index
        and none is sent. Delivery keeps the given order per patient (barring retries).
        """
        now = self._clock()
        records = []
        for index, event in enumerate(events):
            try:
                records.append(self._checked(event, now))
            except PublishRejected as exc:
                raise PublishRejected(exc.code, exc.reason, index=index) from None
        return await self._deliver(records)

    async def send_raw_unvalidated(self, key: str | None, payload: bytes) -> None:
        """Send bytes as they are, skipping the contract check, and wait until stored.

        Only for tools that must put broken input on the topic on purpose, such as the traffic
        simulator exercising the ledger's dead-letter path. Upstream systems use ``publish``.
        """
        await self._deliver([(key, payload)])

    async def send_raw_many_unvalidated(
        self, records: Iterable[RawRecord] | AsyncIterable[RawRecord]
    ) -> int:
        """Pipelined ``send_raw_unvalidated`` over a (possibly endless, async) stream."""
        return await self._deliver(records)

    def _checked(self, event: Event, now: datetime) -> RawRecord:
        if isinstance(event, bytes | bytearray):
            payload = bytes(event)
        else:
            try:
                payload = orjson.dumps(event)
            except orjson.JSONEncodeError as exc:
                reason = f"event: cannot be written as JSON ({type(exc).__name__})"
                raise PublishRejected("not_json", reason) from None
        try:
            parsed = parse_interaction(payload, now=now)
        except InvalidInteraction as exc:
            raise PublishRejected(exc.code, exc.reason) from None
        return parsed.subject, payload

    async def _deliver(self, records: Iterable[RawRecord] | AsyncIterable[RawRecord]) -> int:
        sent = 0
        batch: list[tuple[RawRecord, asyncio.Future[Any]]] = []
        async for record in _as_async(records):
            batch.append((record, await self._enqueue(record)))
            sent += 1
            if len(batch) >= self._window:
                await self._settle(batch)
                batch = []
        await self._settle(batch)
        return sent

    async def _enqueue(self, record: RawRecord) -> asyncio.Future[Any]:
        """Hand one record to the producer; a refusal becomes a failed future, retried later."""
        if self._producer is None:
            raise RuntimeError("use the publisher as `async with InteractionPublisher(...)`")
        key, payload = record
        try:
            return await self._producer.send(
                self._topic,
                payload,
                key=None if key is None else key.encode(),
                headers=_HEADERS,
            )
        except KafkaError as exc:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _settle(self, batch: list[tuple[RawRecord, asyncio.Future[Any]]]) -> None:
        """Wait for a batch of sends; re-send the failed ones together, in order, with backoff.

        Retrying a whole round at once means an outage costs one backoff sequence, not one per
        record, and the failed records keep their relative order.
        """
        attempt = 1
        while batch:
            outcomes = await asyncio.gather(*(f for _, f in batch), return_exceptions=True)
            failed = [
                (record, outcome)
                for (record, _), outcome in zip(batch, outcomes, strict=True)
                if isinstance(outcome, BaseException)
            ]
            if not failed:
                return
            error = _first_error(failed)
            if not is_transient(error):
                reason = f"Kafka refused a record: {type(error).__name__}"
                raise PublishFailed(reason, attempts=attempt) from error
            if attempt >= self._retry.attempts:
                raise PublishFailed(
                    f"{len(failed)} record(s) not delivered: {type(error).__name__}",
                    attempts=attempt,
                ) from error
            delay = self._retry.delay(attempt, self._jitter.random())
            logger.warning(
                "%d send(s) failed (%s); retry %d of %d in %.2fs",
                len(failed),
                type(error).__name__,
                attempt,
                self._retry.attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1
            batch = [(record, await self._enqueue(record)) for record, _ in failed]


def _first_error(failed: list[tuple[RawRecord, BaseException]]) -> BaseException:
    """The error that decides the round: a permanent one if any, else the first transient one.

    Errors that are not Kafka errors are bugs (ours or the caller's) and propagate as they are.
    """
    for _, error in failed:
        if not isinstance(error, KafkaError):
            raise error
    return next((e for _, e in failed if not is_transient(e)), failed[0][1])


async def _as_async(
    records: Iterable[RawRecord] | AsyncIterable[RawRecord],
) -> AsyncIterator[RawRecord]:
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


def _kafka_producer(
    bootstrap: str, client_id: str, linger_ms: int, request_timeout_ms: int
) -> Producer:
    """The one producer of a publisher: acks from all replicas, idempotence off.

    Idempotence stays off because the embedded Tansu broker does not implement InitProducerId;
    duplicates that retries can cause are absorbed by the ledger's (source, id) dedupe.
    """
    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        request_timeout_ms=request_timeout_ms,
    )
    return producer
