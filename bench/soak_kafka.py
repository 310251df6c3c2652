"""The soak's Kafka side: a paced publisher that keeps going through faults, and a reader of
everything a topic holds.

The publisher is upstream: it must not lose a record when the broker stalls, so a send that
fails is sent again, with every record after it in the same step (per-key order holds; a
resend of a record the broker did keep is one more duplicate, which the oracle reads from the
log like any other).

The reader stops at each partition's high watermark from Fetch responses, not ListOffsets
(Tansu answers ListOffsets with the last batch's base offset + 1).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from bench.soak_traffic import Offer

STEP = 50  # records per paced step


@dataclass
class Published:
    """How publishing went."""

    offered: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)


async def publish(
    bootstrap: str, topic: str, offers: Iterable[Offer], rate: float, out: Published
) -> None:
    """Publish ``offers`` at ``rate``/s (catching up after a stall), resending failures."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        request_timeout_ms=15_000,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        step: list[Offer] = []
        for offer in offers:
            step.append(offer)
            if len(step) == STEP:
                await _send_step(producer, topic, step, out)
                out.offered += len(step)
                step = []
                ahead = started + out.offered / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await _send_step(producer, topic, step, out)
        out.offered += len(step)
    finally:
        await producer.stop()
        out.finished.set()


async def _send_step(
    producer: AIOKafkaProducer, topic: str, step: list[Offer], out: Published
) -> None:
    pending = step
    while pending:
        sends = [
            await producer.send(topic, offer.value, key=offer.key.encode(), partition=None)
            for offer in pending
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        failed = next((i for i, r in enumerate(results) if isinstance(r, BaseException)), None)
        if failed is None:
            return
        out.failures.append(f"{type(results[failed]).__name__}: {results[failed]}"[:200])
        out.resent += len(pending) - failed
        pending = pending[failed:]
        await asyncio.sleep(0.5)


async def read_topic(
    bootstrap: str, topic: str, timeout_s: float = 120
) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """Every record of every partition of ``topic``, up to its high watermark, in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: dict[int, list[ConsumerRecord[bytes, bytes]]] = {tp.partition: [] for tp in partitions}
        async with asyncio.timeout(timeout_s):
            while not _at_end(consumer, partitions, out):
                for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                    out[tp.partition].extend(records)
        return out
    finally:
        await consumer.stop()


def _at_end(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    out: dict[int, list[ConsumerRecord[bytes, bytes]]],
) -> bool:
    for tp in partitions:
        high = consumer.highwater(tp)
        if high is None:
            return False
        done = out[tp.partition][-1].offset + 1 if out[tp.partition] else 0
        if done < high:
            return False
    return True


async def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark (records 0..n-1), from Fetch responses."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        async with asyncio.timeout(30):
            while any(consumer.highwater(tp) is None for tp in partitions):
                await consumer.getmany(timeout_ms=200)
        return {tp.partition: consumer.highwater(tp) or 0 for tp in partitions}
    finally:
        await consumer.stop()
