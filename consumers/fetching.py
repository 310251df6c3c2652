"""What the ledger worker and the FHIR gateway share around a consumer's fetch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter

Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


async def fetch_or_back_off(
    consumer: AIOKafkaConsumer,
    *,
    wait_ms: int,
    max_records: int,
    retries: Counter,
    stop: asyncio.Event,
    log: logging.Logger,
) -> Fetched | None:
    """One ``getmany``; on broker trouble ``None`` after a second's back-off (or ``stop``).

    The failure is logged and counted under its error type; the consumer reconnects by itself,
    so the caller simply fetches again.
    """
    try:
        fetched: Fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
    except Exception as exc:  # broker trouble: back off, the consumer reconnects
        log.warning("fetch failed (%s); retrying", type(exc).__name__)
        retries.labels(error=type(exc).__name__).inc()
        await sleep_or_stop(stop, 1.0)
        return None
    return fetched


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
